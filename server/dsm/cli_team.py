"""`dsm team ...` and `dsm audit verify`: team sync from the command line.

Team sync runs inside `dsm serve` (it holds the Open Cloud keys and the sync loops), so these
commands ask the running server over its loopback API. They need a token: `--token` or
`$DSM_TOKEN`, or else they make a short-lived admin token in the server's token file (as
`dsm tokens create` would; whoever can run this can do that anyway) and revoke it when done.
Actions taken this way are recorded in the audit log as an unknown Studio user with that token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from shared_schema.common import Role

from .cli_server import add_server_option
from .paths import data_dir
from .services.tokens import TokenStore

CLI_TOKEN_LABEL = "dsm team (command line, revoked after use)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    team = subparsers.add_parser(
        "team",
        help="team sync across machines: enable, invite, join, status",
        description="Teammates' servers meet in the universe's own Open Cloud (memory store "
        "and data stores). These commands talk to the running `dsm serve`. See docs/team.md.",
    )
    actions = team.add_subparsers(dest="team_command", required=True, metavar="ACTION")
    enable = actions.add_parser("enable", help="opt a universe in to team sync")
    _common(enable, universe_required=True)
    enable.add_argument("--max-rpm", type=int, help="memory-store requests a minute (default 60)")
    enable.add_argument("--max-bytes", type=int, help="bytes kept in the memory store (4096)")
    disable = actions.add_parser("disable", help="stop team sync for a universe on this server")
    _common(disable, universe_required=True)
    status = actions.add_parser("status", help="team sync state, caps and who is present")
    _common(status, universe_required=False)
    invite = actions.add_parser(
        "invite", help="make a single-use, expiring invite code (team admins)"
    )
    _common(invite, universe_required=False)
    invite.add_argument("--role", default="editor", choices=[r.value for r in Role])
    invite.add_argument("--expires-hours", type=float, default=24.0, help="default 24")
    join = actions.add_parser("join", help="join a team with an invite code")
    _common(join, universe_required=False)
    join.add_argument("code", help="the code `dsm team invite` printed")
    join.add_argument("--name", help="how the team lists this server (default: your Studio user)")

    audit = subparsers.add_parser(
        "audit",
        help="the team's shared audit log",
        description="Check the hash-chained audit log in the universe's data store.",
    )
    audit_actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_actions.add_parser(
        "verify",
        help="read the whole chain and check every link and the newest head this server saw",
    )
    _common(verify, universe_required=True)


def _common(parser: argparse.ArgumentParser, *, universe_required: bool) -> None:
    parser.add_argument("--universe", type=int, required=universe_required)
    add_server_option(parser)
    parser.add_argument("--data-dir", type=Path, help="its data directory (for a CLI token)")
    parser.add_argument(
        "--token", help="a bearer token (default: $DSM_TOKEN, or a short-lived one)"
    )


class CliError(Exception):
    pass


def run(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    out = sys.stdout if stdout is None else stdout
    try:
        with _token(args) as token:
            return asyncio.run(_run(args, token, out))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _token(args: argparse.Namespace) -> Iterator[str]:
    given = args.token or os.environ.get("DSM_TOKEN")
    if given:
        yield given
        return
    store = TokenStore.open(args.data_dir or data_dir())
    try:
        token, info = store.issue(CLI_TOKEN_LABEL, Role.ADMIN)
        try:
            yield token
        finally:
            store.revoke(info.token_id)
    finally:
        store.close()


async def _run(args: argparse.Namespace, token: str, out: TextIO) -> int:
    api = _Api(args.server.rstrip("/"), token)
    async with aiohttp.ClientSession() as api.http:
        command = args.command if args.command == "audit" else args.team_command
        if command == "audit":
            report = await api.call("POST", f"/team/{args.universe}/audit/verify")
            print(_verify_text(report), file=out)
            return 0 if report["ok"] else 1
        if command == "enable":
            body = {
                k: v
                for k, v in (
                    ("max_requests_per_minute", args.max_rpm),
                    ("max_bytes", args.max_bytes),
                )
                if v is not None
            }
            print(
                _status_text(await api.call("POST", f"/team/{args.universe}/enable", body)),
                file=out,
            )
            return 0
        if command == "disable":
            print(_status_text(await api.call("POST", f"/team/{args.universe}/disable")), file=out)
            return 0
        if command == "status":
            if args.universe is not None:
                print(_status_text(await api.call("GET", f"/team/{args.universe}")), file=out)
                return 0
            overview = await api.call("GET", "/team")
            if not overview["spaces"]:
                print(
                    "Team sync is off for every universe. `dsm team enable --universe U`.", file=out
                )
            for space in overview["spaces"]:
                print(_status_text(space), file=out)
            return 0
        if command == "invite":
            universe = args.universe or await _only_universe(api)
            body = {"role": args.role, "expires_in_seconds": int(args.expires_hours * 3600)}
            invite = await api.call("POST", f"/team/{universe}/invites", body)
            print(invite["code"], file=out)
            print(
                f"Single use, as {invite['role']}, until {invite['expires_at']}. On the "
                "teammate's machine (with their own API key for the universe): "
                f"dsm team join {invite['code']}",
                file=sys.stderr,
            )
            return 0
        if command == "join":
            body = {"code": args.code} | ({"name": args.name} if args.name else {})
            print(_status_text(await api.call("POST", "/team/join", body)), file=out)
            return 0
    raise CliError(f"unknown command {command}")


async def _only_universe(api: _Api) -> int:
    overview = await api.call("GET", "/team")
    on = [s["universe_id"] for s in overview["spaces"] if s["state"] != "OFF"]
    if len(on) != 1:
        raise CliError(f"say which universe with --universe (team sync is on for {len(on)}).")
    universe: int = on[0]
    return universe


class _Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self.http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with self.http.request(
                method,
                f"{self.base}/api/v1{path}",
                headers=headers,
                json=body if body is not None else ({} if method == "POST" else None),
            ) as resp:
                text = await resp.text()
        except aiohttp.ClientError as exc:
            raise CliError(
                f"dsm serve is not answering at {self.base} ({exc}); team sync runs inside it: "
                "start it first, or pass --server."
            ) from None
        data = json.loads(text) if text else {}
        if resp.status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise CliError(error.get("message") or f"HTTP {resp.status}")
        return data


def _status_text(status: dict[str, Any]) -> str:
    lines = [f"Universe {status['universe_id']}: team sync {status['state']}"]
    if status.get("reason"):
        lines.append(f"  {status['reason']}")
    if status.get("role"):
        lines.append(f"  this server: {status['server_id']}, team role {status['role']}")
    caps = status.get("caps")
    if caps:
        lines.append(
            f"  memory store: {caps['requests_last_minute']}/{caps['max_requests_per_minute']} "
            f"requests in the last minute, {caps['bytes_stored']}/{caps['max_bytes']} bytes "
            f"stored; TTLs presence {caps['presence_ttl_seconds']:g} s, locks "
            f"{caps['lock_ttl_seconds']:g} s, changes {caps['change_ttl_seconds']:g} s"
        )
    names = status["names"]
    lines.append(
        f"  names: sorted map {names['sorted_map']}, data stores {names['audit_store']} and "
        f"{names['workspace_store']}"
    )
    for mate in status.get("teammates", []):
        where = " (this server)" if mate["this_server"] else f" on {mate['server_id']}"
        viewing = mate.get("viewing")
        shown = (
            f", viewing {viewing['datastore']}/{viewing['scope']}/{viewing.get('key') or ''}"
            if viewing
            else ""
        )
        lines.append(f"  present: {mate['person']['label']}{where}{shown}")
    for lock in status.get("locks", []):
        lines.append(
            f"  editing: {lock['holder']['label']} has {lock['datastore']}/{lock['scope']}/"
            f"{lock['key']}"
        )
    head = status.get("audit_head")
    if head:
        lines.append(f"  audit log: newest record seen #{head['seq']} {head['hash'][:12]}…")
    return "\n".join(lines)


def _verify_text(report: dict[str, Any]) -> str:
    head = report.get("head")
    known = report.get("known_head")
    lines = [
        f"Universe {report['universe_id']}: {report['records']} audit record(s) read"
        + (f", chain head #{head['seq']} {head['hash'][:12]}…" if head else "")
        + (f"; newest head this server had seen: #{known['seq']}" if known else "")
    ]
    if report["redacted_events"]:
        lines.append(
            f"  {report['redacted_events']} event(s) redacted (erased keys); still chained."
        )
    if report["ok"]:
        lines.append(
            "  OK: every record is intact, in order, and the chain reaches the newest head seen."
        )
    for problem in report["problems"]:
        where = f"#{problem['seq']}" if problem.get("seq") is not None else "-"
        lines.append(f"  PROBLEM {where}: {problem['problem']}")
    return "\n".join(lines)
