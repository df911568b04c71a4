"""`dsm tokens list | create | revoke ID | role ID ROLE`: manage the API's bearer tokens.

`create` issues a token without pairing, for scripts and CI: the token goes to stdout alone (so
`TOKEN=$(dsm tokens create ...)` works) and is never shown again; only its hash is stored.

Works while the server runs (the token file is SQLite in WAL mode, and the server reads a
token's row on every request), so a revocation or role change applies to the next request.
`list` also shows each assistant token's use of its caps over the last minute, from the counts
the server keeps on disk (services/assistant_usage.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from shared_schema.auth import TokenInfo
from shared_schema.common import Role

from .paths import data_dir
from .services import assistant_usage
from .services.assistant_caps import WINDOW_SECONDS
from .services.errors import ServiceError
from .services.tokens import DB_FILENAME, TokenStore, console_safe
from .storage.sqlite import StorageFileError

ROLES_HELP = (
    "viewer: read only. assistant: read, and propose jobs (dry runs) that a person must start; "
    "for `dsm mcp` (docs/assistants.md). editor: read and write entries. admin: also delete "
    "data stores and manage tokens."
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `tokens` command to the top-level `dsm` parser."""
    parser = subparsers.add_parser(
        "tokens",
        help="list, revoke or change the role of paired plugin tokens",
        description="Manage the tokens issued when a Studio plugin pairs with this server. "
        "Changes apply immediately, also while the server is running.",
    )
    actions = parser.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    actions.add_parser("list", help="list tokens", description="List all tokens.")
    create = actions.add_parser(
        "create",
        help="create a token for a script or CI (printed once)",
        description="Create a bearer token without pairing, for scripts, CI and AI assistants. "
        f"It is printed once on stdout; store it in your secret store. {ROLES_HELP}",
    )
    create.add_argument("--role", required=True, choices=[r.value for r in Role], metavar="ROLE")
    create.add_argument(
        "--label", required=True, help="who or what uses it, e.g. 'nightly backup' (1-100 chars)"
    )
    revoke = actions.add_parser(
        "revoke",
        help="revoke a token (its plugin must pair again)",
        description="Revoke a token; the plugin using it is refused from its next request.",
    )
    revoke.add_argument("token_id", metavar="ID", help="the token's id (see `dsm tokens list`)")
    role = actions.add_parser(
        "role",
        help="change a token's role",
        description=ROLES_HELP,
    )
    role.add_argument("token_id", metavar="ID", help="the token's id (see `dsm tokens list`)")
    role.add_argument("role", choices=[r.value for r in Role], metavar="ROLE")


def run(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Execute a parsed `dsm tokens ...` command; returns the process exit code."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    if args.tokens_command == "create":
        return _create(args, out, err)
    path = data_dir() / DB_FILENAME
    if not path.exists():
        if args.tokens_command == "list":
            print(f"No tokens yet ({path} does not exist). Pair the plugin first.", file=out)
            return 0
        print(f"error: no tokens yet ({path} does not exist)", file=err)
        return 1
    try:
        store = TokenStore(path)
    except StorageFileError as exc:
        print(f"error: cannot open the token file: {exc}", file=err)
        return 1
    try:
        if args.tokens_command == "list":
            print(_table(store.list_tokens(), _assistant_usage()), file=out)
            return 0
        if args.tokens_command == "revoke":
            info = store.revoke(args.token_id)
            print(f"Revoked token {info.token_id} ({console_safe(info.name)}).", file=out)
            return 0
        if args.tokens_command == "role":
            info = store.set_role(args.token_id, Role(args.role))
            print(
                f"Token {info.token_id} ({console_safe(info.name)}) now has the "
                f"{info.role.value} role.",
                file=out,
            )
            return 0
    except ServiceError as exc:
        print(f"error: {exc.message}", file=err)
        return 1
    finally:
        store.close()
    print(f"error: unknown tokens action {args.tokens_command!r}", file=err)
    return 2


MAX_LABEL_CHARS = 100


def _create(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    label = args.label.strip()
    if not label or len(label) > MAX_LABEL_CHARS or not label.isprintable():
        print(
            f"error: the label must be 1-{MAX_LABEL_CHARS} printable characters, "
            f"got {console_safe(args.label)!r}",
            file=err,
        )
        return 2
    try:
        store = TokenStore.open(data_dir())
    except StorageFileError as exc:
        print(f"error: cannot open the token file: {exc}", file=err)
        return 1
    try:
        token, info = store.issue(label, Role(args.role))
    finally:
        store.close()
    print(token, file=out)
    print(
        f"Created token {info.token_id} ({console_safe(info.name)}, {info.role.value}). It is "
        "shown only now: store it in your secret store. Send it as "
        "`Authorization: Bearer <token>`; `dsm tokens revoke "
        f"{info.token_id}` withdraws it.",
        file=err,
    )
    return 0


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class AssistantUsage:
    """What the server recorded of the assistant tokens' last minute, and its caps."""

    counts: dict[str, tuple[int, int]]  # token id -> (API requests, Open Cloud requests)
    caps: assistant_usage.CapsInForce | None


def _assistant_usage() -> AssistantUsage | None:
    """None when no server has counted an assistant's request yet (no usage file)."""
    path = data_dir() / assistant_usage.DB_FILENAME
    if not path.exists():
        return None
    log = assistant_usage.UsageLog(path)
    try:
        return AssistantUsage(log.counts(time.time() - WINDOW_SECONDS), log.caps())
    finally:
        log.close()


def _used(count: int, cap: int | None) -> str:
    return str(count) if cap is None else f"{count}/{cap}"


def _last_minute(info: TokenInfo, usage: AssistantUsage | None) -> str:
    """An assistant token's requests in the last minute against its caps; "-" for people."""
    if info.role is not Role.ASSISTANT:
        return "-"
    requests, calls = (usage.counts.get(info.token_id, (0, 0))) if usage else (0, 0)
    caps = usage.caps if usage else None
    return (
        f"{_used(requests, caps.requests_per_minute if caps else None)} API, "
        f"{_used(calls, caps.opencloud_per_minute if caps else None)} Open Cloud"
    )


def _caps_line(usage: AssistantUsage | None) -> str:
    caps = usage.caps if usage else None
    if caps is None:
        return "Assistant caps: not known yet (no server has started with this data directory)."
    proposals = "may propose jobs" if caps.proposals_allowed else "may not propose jobs"
    return (
        f"Assistant caps (as the server last started): {caps.requests_per_minute} API requests "
        f"and {caps.opencloud_per_minute} Open Cloud requests per token over a sliding minute; "
        f"assistants {proposals}."
    )


def _table(tokens: Sequence[TokenInfo], usage: AssistantUsage | None = None) -> str:
    if not tokens:
        return "No tokens yet. Pair the plugin with this server to create one."
    assistants = any(t.role is Role.ASSISTANT for t in tokens)
    head = ("ID", "NAME", "ROLE", "STATUS", "CREATED (UTC)", "LAST USED (UTC)")
    rows = [(*head, "LAST MINUTE") if assistants else head]
    for t in tokens:
        rows.append(
            (
                t.token_id,
                console_safe(t.name),
                t.role.value,
                "revoked" if t.revoked else "active",
                _when(t.created_at),
                _when(t.last_used_at),
                *((_last_minute(t, usage),) if assistants else ()),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    return table + "\n" + _caps_line(usage) if assistants else table
