"""The MCP server's tools, resources and prompts, each one call (or a few) to the companion
server's API. Read tools return labelled answers; write tools only create planned jobs (dry
runs) that a person starts in the plugin's Jobs view or with `dsm jobs start ID`."""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import quote

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

from .api import ApiError, CompanionApi
from .results import DEFAULT_MAX_VALUE_CHARS, label_of, scrub, summarise, unavailable

APPROVAL = (
    "Nothing has been written. This is a proposal (a planned job, dry run only): a person "
    "reviews its plan and sample diffs and starts it in the plugin's Jobs view or with "
    "`dsm jobs start {id}`, or cancels it."
)
INSTRUCTIONS = """\
You are connected to DataStore Manager Pro, which manages a Roblox game's data stores.
Every answer has a `label`: its `source` is LIVE (read from Roblox just now), EMULATOR (the
local emulator, never a real game's data), CACHED (with its age or as_of: say so when you
use it) or UNAVAILABLE (with the reason). Search and analytics answers come from the search
index and carry its coverage: tell the user when coverage is partial.
You cannot change data. propose_* tools create a planned job (a dry run with sample diffs);
a person approves it in Studio. Say so, and give the job id."""

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
PROPOSE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False)


def _path(*parts: str | int) -> str:
    """An API path from names an assistant chose: each part one segment, whatever it holds
    (a key may be `..`, which a URL would otherwise resolve to its parent)."""
    return "".join("/" + _segment(str(part)) for part in parts)


def _segment(part: str) -> str:
    return "%2E" * len(part) if part.strip(".") == "" else quote(part, safe="")


class Assistant:
    """Turns tool calls into API calls and API answers into what an assistant may see."""

    def __init__(self, api: CompanionApi, max_value_chars: int) -> None:
        self.api = api
        self.max_value_chars = max_value_chars
        self.backend = "UNAVAILABLE"

    async def read(
        self, method: str, path: str, *, query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        answer = await self._call(method, path, query=query, body=body)
        return self.finish({"label": label_of(answer, self.backend), "result": answer})

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.api.caps is not None:
            result = {**result, "caps": self.api.caps}
        shown: dict[str, Any] = scrub(summarise(result, self.max_value_chars), (self.api.token,))
        return shown

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return await self.api.call(method, path, **kwargs)
        except ApiError as exc:
            failure = scrub(unavailable(exc.code, exc.message), (self.api.token,))
            raise ToolError(json.dumps({"label": failure})) from None

    async def propose(self, body: dict[str, Any]) -> dict[str, Any]:
        job = await self._call(
            "POST", "/jobs", body={**body, "dry_run": True, "idempotency_key": _idem()}
        )
        return self.finish(
            {
                "label": label_of(job, self.backend),
                "job_id": job["id"],
                "state": job["state"],
                "description": job.get("description"),
                "plan": job.get("plan"),
                "approval": APPROVAL.format(id=job["id"]),
            }
        )


def _idem() -> str:
    return "mcp-" + secrets.token_hex(12)


def build_server(api: CompanionApi, *, max_value_chars: int = DEFAULT_MAX_VALUE_CHARS) -> MCPServer:
    """The MCP server for one companion server and token."""
    helper = Assistant(api, max_value_chars)
    server = MCPServer("DataStore Manager Pro", instructions=INSTRUCTIONS)
    _read_tools(server, helper)
    _proposal_tools(server, helper)
    _resources_and_prompts(server, helper)
    return server


def _read_tools(server: MCPServer, h: Assistant) -> None:
    async def backend() -> None:
        if h.backend == "UNAVAILABLE":
            hello = await h._call("GET", "/hello")
            h.backend = str(hello.get("backend", "UNAVAILABLE"))

    @server.tool(annotations=READ)
    async def list_universes() -> dict[str, Any]:
        """The Roblox universes (experiences) this server manages, with their labels."""
        await backend()
        return await h.read("GET", "/universes")

    @server.tool(annotations=READ)
    async def list_datastores(
        universe_id: int, prefix: str | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """A universe's standard data stores, 50 a page (pass next_cursor for more)."""
        await backend()
        return await h.read(
            "GET", _path("universes", universe_id, "datastores"),
            query={"prefix": prefix, "cursor": cursor},
        )  # fmt: skip

    @server.tool(annotations=READ)
    async def list_scopes(universe_id: int, datastore: str) -> dict[str, Any]:
        """The scopes of one data store."""
        await backend()
        return await h.read(
            "GET", _path("universes", universe_id, "datastores", datastore, "scopes")
        )

    @server.tool(annotations=READ)
    async def list_keys(
        universe_id: int, datastore: str, scope: str = "global", prefix: str | None = None,
        cursor: str | None = None, limit: int = 100,
    ) -> dict[str, Any]:  # fmt: skip
        """Keys of a data store scope, optionally by prefix (pass next_cursor for more)."""
        await backend()
        return await h.read(
            "GET", _path("universes", universe_id, "datastores", datastore, "keys"),
            query={"scope": scope, "prefix": prefix, "cursor": cursor, "limit": limit},
        )  # fmt: skip

    @server.tool(annotations=READ)
    async def read_entry(
        universe_id: int, datastore: str, key: str, scope: str = "global"
    ) -> dict[str, Any]:
        """One entry: value (summarised when large), attributes, user ids, revision, source."""
        await backend()
        return await h.read(
            "GET", _path("universes", universe_id, "datastores", datastore, "entries", key),
            query={"scope": scope},
        )  # fmt: skip

    @server.tool(annotations=READ)
    async def list_revisions(
        universe_id: int, datastore: str, key: str, scope: str = "global",
        cursor: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """An entry's revisions, newest first."""
        await backend()
        return await h.read(
            "GET",
            _path("universes", universe_id, "datastores", datastore, "entries", key, "revisions"),
            query={"scope": scope, "cursor": cursor},
        )

    @server.tool(annotations=READ)
    async def diff_entry(
        universe_id: int, datastore: str, key: str, from_revision: str, to_revision: str,
        scope: str = "global",
    ) -> dict[str, Any]:  # fmt: skip
        """What changed in an entry between two revisions (a JSON Patch and a summary)."""
        await backend()
        return await h.read(
            "GET",
            _path("universes", universe_id, "datastores", datastore, "entries", key, "diff"),
            query={"scope": scope, "from_revision": from_revision, "to_revision": to_revision},
        )

    @server.tool(annotations=READ)
    async def search(
        universe_id: int, query: str | None = None, datastores: list[str] | None = None,
        key_pattern: str | None = None, sort: str | None = None, limit: int = 25,
        cursor: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Search indexed entries with the query language (docs/search.md), e.g.
        `coins > 1000 and not has(inventory)`. Answers come from the index: see coverage."""
        await backend()
        body: dict[str, Any] = {"universe_id": universe_id, "datastores": datastores or [],
                                "limit": limit}  # fmt: skip
        for name, value in (("query", query), ("key_pattern", key_pattern), ("sort", sort),
                            ("cursor", cursor)):  # fmt: skip
            if value is not None:
                body[name] = value
        return await h.read("POST", "/search", body=body)

    @server.tool(annotations=READ)
    async def analyse_schema(
        universe_id: int, datastore: str | None = None, scope: str | None = None
    ) -> dict[str, Any]:
        """The fields the indexed entries have: types, how often each appears, examples."""
        await backend()
        return await h.read("POST", "/analytics/schema", body=_scope(universe_id, datastore, scope))

    @server.tool(annotations=READ)
    async def analyse_economy(
        universe_id: int, currencies: list[str], datastore: str | None = None,
        scope: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Totals, spread and top holders of currency fields (e.g. `coins`)."""
        await backend()
        body = {**_scope(universe_id, datastore, scope), "currencies": currencies}
        return await h.read("POST", "/analytics/economy", body=body)

    @server.tool(annotations=READ)
    async def find_anomalies(
        universe_id: int, kinds: list[str] | None = None, datastore: str | None = None,
        scope: str | None = None, limit: int = 50,
    ) -> dict[str, Any]:  # fmt: skip
        """Entries that look wrong: outliers, sudden jumps, type drift, near the size limit,
        user id mismatches (kinds; empty: all)."""
        await backend()
        body = {**_scope(universe_id, datastore, scope), "kinds": kinds or [], "limit": limit}
        return await h.read("POST", "/analytics/anomalies", body=body)

    @server.tool(annotations=READ)
    async def index_status(universe_id: int | None = None) -> dict[str, Any]:
        """How much of each universe the search index covers, and how fresh it is."""
        await backend()
        return await h.read("GET", "/index", query={"universe_id": universe_id})

    @server.tool(annotations=READ)
    async def list_jobs(state: str | None = None, limit: int = 20) -> dict[str, Any]:
        """Bulk jobs (including proposals and exports), newest first."""
        await backend()
        return await h.read("GET", "/jobs", query={"state": state, "limit": limit})

    @server.tool(annotations=READ)
    async def get_job(job_id: str) -> dict[str, Any]:
        """One job: its plan (sample diffs, request estimate), progress and outcome."""
        await backend()
        return await h.read("GET", _path("jobs", job_id))

    @server.tool(annotations=READ)
    async def get_budget(universe_id: int) -> dict[str, Any]:
        """The Open Cloud request budget the game shares, and how much is in use."""
        await backend()
        return await h.read("GET", _path("universes", universe_id, "budget"))


def _scope(universe_id: int, datastore: str | None, scope: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"universe_id": universe_id}
    if datastore is not None:
        body["datastore"] = datastore
    if scope is not None:
        body["scope"] = scope
    return body


def _proposal_tools(server: MCPServer, h: Assistant) -> None:
    @server.tool(annotations=PROPOSE)
    async def propose_update_entry(
        universe_id: int, datastore: str, key: str, new_value: Any, scope: str = "global"
    ) -> dict[str, Any]:
        """Propose replacing one entry's value (a session-locked save: its data part).
        Attributes and user ids are kept. Writes nothing until a person starts the job."""
        program = json.dumps(new_value, separators=(",", ":"))
        return await h.propose(_transform(universe_id, [datastore], program,
                                          keys=[{"key": key, "scope": scope}]))  # fmt: skip

    @server.tool(annotations=PROPOSE)
    async def propose_transform(
        universe_id: int, datastores: list[str], program: str, query: str | None = None,
        key_prefix: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Propose running a jq program (e.g. `.coins *= 2 | del(.legacy)`) on every entry a
        search query matches in any scope (and key prefix, if given), or on every key with the
        prefix (or all keys) of the stores' global scope. A query is answered by the search
        index, and each entry is re-read live before the job writes it: one that no longer
        matches is skipped. Writes nothing until a person starts the job."""
        search = None
        if query is not None:
            search = {"query": query}
            if key_prefix is not None:
                search["key_pattern"] = key_prefix
        body = _transform(
            universe_id, datastores, program, prefix=None if search else key_prefix, search=search
        )
        return await h.propose(body)

    @server.tool(annotations=PROPOSE)
    async def propose_delete_keys(
        universe_id: int, datastore: str, keys: list[str], scope: str = "global"
    ) -> dict[str, Any]:
        """Propose deleting keys (each can be restored from its revisions or by rolling the
        job back). Writes nothing until a person starts the job."""
        selection = {"universe_id": universe_id, "datastores": [datastore],
                     "keys": [{"key": k, "scope": scope} for k in keys]}  # fmt: skip
        return await h.propose({"kind": "delete", "selection": selection})

    @server.tool(annotations=PROPOSE)
    async def propose_restore_revision(
        universe_id: int, datastore: str, key: str, revision: str, scope: str = "global"
    ) -> dict[str, Any]:
        """Propose putting an entry's value back to an earlier revision's (attributes and
        user ids stay as they are now). Writes nothing until a person starts the job."""
        old = await h._call(
            "GET",
            _path("universes", universe_id, "datastores", datastore, "entries", key,
                  "revisions", revision),
            query={"scope": scope},
        )  # fmt: skip
        if old.get("value_json") is None:
            raise ToolError(f"Revision {revision} of {key} holds no value (it was a deletion).")
        body = _transform(universe_id, [datastore], old["value_json"],
                          keys=[{"key": key, "scope": scope}], wrapped="whole")  # fmt: skip
        return await h.propose(body)


def _transform(
    universe_id: int, datastores: list[str], program: str, *,
    keys: list[dict[str, str]] | None = None, prefix: str | None = None,
    search: dict[str, str] | None = None, wrapped: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    selection: dict[str, Any] = {"universe_id": universe_id, "datastores": datastores}
    if keys is not None:
        selection["keys"] = keys
    elif search is not None:
        selection.update(search=search, all_scopes=True)
    elif prefix is not None:
        selection["prefix"] = prefix
    params: dict[str, Any] = {"program": program}
    if wrapped is not None:
        params["wrapped"] = wrapped
    return {"kind": "transform", "selection": selection, "params": params}


def _resources_and_prompts(server: MCPServer, h: Assistant) -> None:
    @server.resource(
        "dsm://universes/{universe_id}/datastores/{datastore}/schema",
        name="datastore_schema",
        description="The fields a data store's indexed entries have (from the search index).",
        mime_type="application/json",
    )
    async def datastore_schema(universe_id: int, datastore: str) -> str:
        answer = await h.read(
            "POST", "/analytics/schema", body={"universe_id": universe_id, "datastore": datastore}
        )
        return json.dumps(answer)

    @server.prompt()
    def find_broken_saves(universe_id: int, datastore: str) -> str:
        """Look for player saves that look broken and propose a fix."""
        return (
            f"Find broken saves in data store {datastore!r} of universe {universe_id}. Check "
            "index_status first and say how much is covered. Use analyse_schema to learn the "
            "usual shape, find_anomalies for type drift, outliers and near-size-limit entries, "
            "and search to count entries missing required fields. Read a few with read_entry "
            "and quote their source labels. If a fix is clear, end with propose_transform "
            "(a jq program on a search query) and tell me the job id to review in the Jobs view."
        )

    @server.prompt()
    def draft_migration(universe_id: int, datastore: str, field: str) -> str:
        """Draft a migration of one field, ending in a proposal a person approves."""
        return (
            f"Draft a migration for the field {field!r} in data store {datastore!r} of "
            f"universe {universe_id}. Use analyse_schema to see the field's types and how often "
            "it appears, search for the entries that need the change, and read two or three "
            "with read_entry. Write a jq program that changes only what must change and keeps "
            "everything else; then call propose_transform with the search query. Show me the "
            "plan's sample diffs and the job id: I start it in the plugin's Jobs view."
        )


__all__ = ["Assistant", "build_server"]
