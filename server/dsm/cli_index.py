"""`dsm search`, `dsm index crawl|history|status|drop`, `dsm analytics ...`, `dsm report --html`.

These talk to the running `dsm serve` over its API (it owns the index, the Open Cloud budget
and the crawl jobs). The token comes from `--token` or `$DSM_TOKEN`; without one, the command
issues itself a token in this data directory's token store for the length of the command and
revokes it afterwards (whoever can read the data directory can already do that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from shared_schema.analytics import AnomalyReport, Distribution, EconomyReport, SchemaReport
from shared_schema.common import Role
from shared_schema.index import IndexBasis

from .cli_server import add_server_option
from .paths import data_dir
from .services.index.report import render
from .services.tokens import TokenStore

TOKEN_ENV = "DSM_TOKEN"


class CliError(Exception):
    pass


def _common(p: argparse.ArgumentParser) -> None:
    add_server_option(p)
    p.add_argument("--token", help=f"bearer token (default ${TOKEN_ENV}, else a temporary one)")
    p.add_argument(
        "--data-dir", type=Path, help="the server's data directory (for a temporary token)"
    )
    p.add_argument("--universe", type=int, default=1, help="universe id (default 1)")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "search",
        help="search the local index by value or key",
        description="Value "
        "search with the query language of docs/search.md, or key search with --key.",
    )
    s.add_argument("query", nargs="?", help='e.g. coins > 1e9 and inventory has "sword"')
    s.add_argument("--key", help="key pattern; --match says how it matches")
    s.add_argument("--match", choices=["prefix", "substring", "glob", "regex"], default="prefix")
    s.add_argument("--datastore", action="append", default=[], help="only this store (repeatable)")
    s.add_argument("--sort", help="field path to order by")
    s.add_argument("--desc", action="store_true", help="largest first")
    s.add_argument("--limit", type=int, default=50)
    s.add_argument("--verify-live", action="store_true", help="re-read hits; mark changed ones")
    _common(s)

    i = sub.add_parser("index", help="crawl, inspect or drop the local search index")
    actions = i.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    crawl = actions.add_parser(
        "crawl", help="start a crawl job (a refresh: the same again) and follow it to its end"
    )
    crawl.add_argument(
        "--datastore", action="append", default=[], help="only this store (repeatable)"
    )
    crawl.add_argument("--scope", help="only this scope")
    crawl.add_argument("--prefix", help="only keys with this prefix")
    crawl.add_argument("--no-wait", action="store_true", help="start it and return")
    _common(crawl)
    history = actions.add_parser(
        "history", help="a job reading the revision history of sampled keys (progression)"
    )
    history.add_argument("--datastore", required=True, help="the data store to sample")
    history.add_argument("--sample", type=int, default=50, help="keys to sample")
    history.add_argument("--revisions", type=int, default=30, help="newest revisions per key")
    history.add_argument("--plan", action="store_true", help="only show what it would cost")
    history.add_argument("--no-wait", action="store_true", help="start it and return")
    _common(history)
    status = actions.add_parser("status", help="coverage per store and the recent crawl jobs")
    _common(status)
    drop = actions.add_parser("drop", help="delete the index file (needs an admin token)")
    _common(drop)

    a = sub.add_parser(
        "analytics", help="schema, economy, progression and anomalies from the index"
    )
    kinds = a.add_subparsers(dest="analytics_command", required=True, metavar="ANALYSIS")
    for name, text in (
        ("schema", "field paths, types, presence, drift"),
        ("economy", "currency supply, Gini, top holders"),
        ("progression", "a field against time since creation"),
        ("anomalies", "outliers, jumps, type drift, near-limit sizes, user id mismatches"),
    ):
        k = kinds.add_parser(name, help=text)
        k.add_argument("--datastore", help="only this store")
        if name == "economy":
            k.add_argument(
                "--currency", action="append", default=[], help="field path (repeatable)"
            )
        if name == "progression":
            k.add_argument("--field", required=True, help="e.g. level")
        _common(k)

    r = sub.add_parser("report", help="write a self-contained HTML report of the index")
    r.add_argument("--html", required=True, type=Path, metavar="OUT.html")
    r.add_argument("--datastore", help="only this store")
    r.add_argument("--field", action="append", default=[], help="extra distribution (repeatable)")
    _common(r)


# -- talking to the server ----------------------------------------------------------------------


@contextlib.contextmanager
def _token(args: argparse.Namespace, role: Role) -> Iterator[str]:
    given = args.token or os.environ.get(TOKEN_ENV)
    if given:
        yield given
        return
    directory = args.data_dir or data_dir()
    store = TokenStore.open(directory)
    try:
        secret, info = store.issue("dsm cli (temporary)", role)
        try:
            yield secret
        finally:
            store.revoke(info.token_id)
    finally:
        store.close()


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base.rstrip("/") + "/api/v1"
        self.token = token

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with self.http.request(
                method,
                self.base + path,
                json=body if method != "GET" else None,
                params=params,
                headers=headers,
            ) as resp:
                data = await resp.json(content_type=None)
        except aiohttp.ClientConnectionError:
            raise CliError(
                f"No server answers at {self.base}: start it with `dsm serve`."
            ) from None
        if resp.status >= 400:
            error = (data or {}).get("error", {})
            where = error.get("details", {}).get("query_error") if error.get("details") else None
            message = error.get("message", f"HTTP {resp.status}")
            if where:
                raise CliError(
                    f"{message}\n  {body.get('query') if body else ''}\n  {' ' * (where['column'] - 1)}^"
                )
            raise CliError(message)
        return data


def _basis(console: Console, basis: dict[str, Any]) -> None:
    b = IndexBasis.model_validate(basis, strict=False)
    c = b.coverage
    label = "EMULATOR sample game (not real players)" if b.sample_data else b.backend.value
    as_of = b.as_of.strftime("%Y-%m-%d %H:%M UTC") if b.as_of else "never crawled"
    console.print(
        f"[dim]Source {label} · coverage {c.entries_indexed:,}/{c.entries_listed:,} "
        f"({c.share:.0%}{'' if c.complete else ', incomplete'}) · as of {as_of}"
        f"{' · ' + b.note if b.note else ''}[/dim]"
    )


async def _run(args: argparse.Namespace, console: Console) -> int:
    role = Role.ADMIN if getattr(args, "index_command", "") == "drop" else Role.EDITOR
    with _token(args, role) as token:
        async with aiohttp.ClientSession() as http:
            api = Api(http, args.server, token)
            if args.command == "search":
                return await _search(api, args, console)
            if args.command == "index":
                return await _index(api, args, console)
            if args.command == "analytics":
                return await _analytics(api, args, console)
            return await _report(api, args, console)


async def _search(api: Api, args: argparse.Namespace, console: Console) -> int:
    if not args.query and not args.key:
        raise CliError("Give a query, --key PATTERN, or both.")
    body: dict[str, Any] = {
        "universe_id": args.universe,
        "limit": args.limit,
        "descending": args.desc,
        "datastores": args.datastore,
        "verify_live": args.verify_live,
    }
    if args.query:
        body["query"] = args.query
    if args.key:
        body |= {"key_pattern": args.key, "key_match": args.match}
    if args.sort:
        body["sort"] = args.sort
    page = await api.call("POST", "/search", body)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    names = sorted({n for hit in page["hits"] for n in hit.get("fields", {})})
    table = Table(title=f"{page['total']:,} match(es)")
    for column in ["store", "scope", "key", *names, "revision"] + (
        ["live"] if args.verify_live else []
    ):
        table.add_column(column)
    for hit in page["hits"]:
        e = hit["entry"]
        live = [hit["live"]["state"]] if args.verify_live and hit.get("live") else []
        table.add_row(
            e["datastore"],
            e["scope"],
            e["key"],
            *[hit["fields"].get(n, "") for n in names],
            hit["revision"][:18],
            *live,
        )
    console.print(table)
    _basis(console, page["basis"])
    return 0


async def _index(api: Api, args: argparse.Namespace, console: Console) -> int:
    if args.index_command == "drop":
        result = await api.call("DELETE", "/index")
        console.print(result["message"])
        return 0
    if args.index_command == "status":
        status = await api.call("GET", "/index", params={"universe_id": str(args.universe)})
        if args.json:
            print(json.dumps(status, indent=2))
            return 0
        console.print(f"Index: {status['protection_note']} Size {status['size_bytes']:,} bytes.")
        table = Table(title="Coverage per data store")
        for column in ("universe", "store", "indexed", "listed", "complete", "revisions", "as of"):
            table.add_column(column)
        for s in status["stores"]:
            table.add_row(
                str(s["universe_id"]),
                s["datastore"],
                f"{s['entries_indexed']:,}",
                f"{s['entries_listed']:,}",
                "yes" if s["complete"] else "no",
                f"{s['revisions_indexed']:,}",
                s.get("as_of") or "",
            )
        console.print(table)
        recent = await api.call(
            "GET", "/jobs", params={"kind": "crawl", "universe": str(args.universe), "limit": "5"}
        )
        for job in recent["jobs"]:
            console.print(f"crawl job {job['id']}: {job['state']} {job['description']}")
        _basis(console, status["basis"])
        return 0
    if args.index_command == "history":
        selection: dict[str, Any] = {"universe_id": args.universe, "datastores": [args.datastore]}
        params = {"sample_size": args.sample, "max_revisions_per_key": args.revisions}
        return await _crawl_job(api, args, console, "crawl_history", selection, params)
    selection = {"universe_id": args.universe}
    if args.datastore:
        selection["datastores"] = args.datastore
    else:
        selection["all_datastores"] = True
    if args.scope:
        selection["scopes"] = [args.scope]
    else:
        selection["all_scopes"] = True
    if args.prefix:
        selection["prefix"] = args.prefix
    return await _crawl_job(api, args, console, "crawl", selection, {})


async def _crawl_job(
    api: Api,
    args: argparse.Namespace,
    console: Console,
    kind: str,
    selection: dict[str, Any],
    params: dict[str, Any],
) -> int:
    """Create a crawl job (planned only with --plan), then follow it unless --no-wait."""
    plan_only = getattr(args, "plan", False)
    job = await api.call(
        "POST",
        "/jobs",
        {
            "kind": kind,
            "selection": selection,
            "params": params,
            "dry_run": plan_only,
            "idempotency_key": str(uuid.uuid4()),
        },
    )
    console.print(f"Job {job['id']}: {job['description']} (paced to the background budget).")
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        if plan_only and (job.get("plan") or {}).get("complete"):
            _plan_summary(console, job["plan"])
            return 0
        if args.no_wait and not plan_only:
            console.print(f"Follow it with `dsm jobs watch {job['id']}`.")
            return 0
        await asyncio.sleep(1.0)
        job = await api.call("GET", f"/jobs/{job['id']}")
        progress = job["progress"]
        total = progress.get("total")
        console.print(
            f"  {job['state']}: {progress['done']:,} of {total if total is not None else '?'} "
            f"keys ({progress['failed']:,} failed)"
        )
    if job.get("failure"):
        console.print(f"[red]{job['failure']['message']}[/red]")
    return 0 if job["state"] == "succeeded" else 1


def _plan_summary(console: Console, plan: dict[str, Any]) -> None:
    estimate = plan.get("estimate") or {}
    requests = ", ".join(f"{n:,} {name}" for name, n in (estimate.get("requests") or {}).items())
    console.print(
        f"{plan['items']:,} keys; at most {requests or 'no'} requests "
        f"(~{estimate.get('seconds', 0) / 60:.1f} min at today's budget)."
    )
    for line in plan.get("warnings", []) + plan.get("notes", []):
        console.print(f"  {line}")


async def _analytics(api: Api, args: argparse.Namespace, console: Console) -> int:
    scope: dict[str, Any] = {"universe_id": args.universe}
    if args.datastore:
        scope["datastore"] = args.datastore
    kind = args.analytics_command
    if kind == "schema":
        answer = await api.call("POST", "/analytics/schema", scope)
        if not args.json:
            for store in SchemaReport.model_validate(answer, strict=False).stores:
                table = Table(title=f"{store.datastore}: {store.entries:,} entries")
                for column in ("field", "types", "present", "examples"):
                    table.add_column(column)
                for f in store.fields:
                    table.add_row(
                        f.path,
                        ", ".join(f"{t.type.value} {t.share:.0%}" for t in f.types),
                        f"{f.presence:.1%}",
                        " ".join(f.examples)[:60],
                    )
                console.print(table)
                for d in store.drift:
                    console.print(f"  drift: {d.path} {d.kind.value}")
    elif kind == "economy":
        answer = await api.call("POST", "/analytics/economy", scope | {"currencies": args.currency})
        if not args.json:
            report = EconomyReport.model_validate(answer, strict=False)
            table = Table(title="Economy")
            for column in ("currency", "holders", "total supply", "median", "Gini", "top 1% share"):
                table.add_column(column)
            for c in report.currencies:
                table.add_row(
                    c.field,
                    f"{c.holders:,}",
                    f"{c.total_supply:,.0f}",
                    f"{c.percentiles.p50:,.0f}" if c.percentiles else "",
                    f"{c.gini:.3f}" if c.gini is not None else "n/a",
                    f"{c.top_1_percent_share:.1%}" if c.top_1_percent_share is not None else "n/a",
                )
            console.print(table)
    elif kind == "progression":
        if not args.datastore:
            raise CliError("progression needs --datastore")
        answer = await api.call("POST", "/analytics/progression", scope | {"field": args.field})
        if not args.json:
            table = Table(title=f"{args.field} by days since creation ({answer['keys']} keys)")
            for column in ("days", "keys", "p25", "median", "p75"):
                table.add_column(column)
            for p in answer["points"]:
                table.add_row(
                    f"{p['days']:g}",
                    str(p["keys"]),
                    f"{p['p25']:g}",
                    f"{p['median']:g}",
                    f"{p['p75']:g}",
                )
            console.print(table)
            if answer.get("note"):
                console.print(answer["note"])
    else:
        answer = await api.call("POST", "/analytics/anomalies", scope)
        if not args.json:
            anomalies = AnomalyReport.model_validate(answer, strict=False)
            table = Table(title=f"Anomalies in {anomalies.entries_checked:,} entries")
            for column in ("kind", "entry", "why"):
                table.add_column(column)
            for item in anomalies.anomalies:
                table.add_row(
                    item.kind.value, f"{item.entry.datastore}/{item.entry.key}", item.reason
                )
            console.print(table)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        _basis(console, answer["basis"])
    return 0


async def _report(api: Api, args: argparse.Namespace, console: Console) -> int:
    scope: dict[str, Any] = {"universe_id": args.universe}
    if args.datastore:
        scope["datastore"] = args.datastore
    schema = SchemaReport.model_validate(
        await api.call("POST", "/analytics/schema", scope), strict=False
    )
    economy = EconomyReport.model_validate(
        await api.call("POST", "/analytics/economy", scope), strict=False
    )
    fields = (
        args.field
        or [
            f.path
            for s in schema.stores
            for f in s.fields
            if f.depth == 1 and f.typed_column and f.path not in economy.suggested
        ][:4]
    )
    distributions = [
        Distribution.model_validate(
            await api.call("POST", "/analytics/distribution", scope | {"field": name}),
            strict=False,
        )
        for name in fields
    ]
    anomalies = AnomalyReport.model_validate(
        await api.call("POST", "/analytics/anomalies", scope), strict=False
    )
    html = render(
        title=f"Universe {args.universe} data report",
        schema=schema,
        economy=economy,
        distributions=distributions,
        anomalies=anomalies,
    )
    args.html.write_text(html, encoding="utf-8")
    console.print(f"Wrote {args.html} ({len(html):,} bytes, self-contained).")
    return 0


def run(args: argparse.Namespace) -> int:
    console = Console()
    started = time.monotonic()
    try:
        code = asyncio.run(_run(args, console))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if os.environ.get("DSM_CLI_TIMING"):
        print(f"{time.monotonic() - started:.2f}s", file=sys.stderr)
    return code
