"""`dsm backup create | restore | schedule`, `dsm restore` and `dsm erase-user`: backups,
restores and erasures as jobs of the running `dsm serve`, like the plugin's Backups view.

Each command shows the plan (a dry run) first; `--run` starts the job and follows it. They use
the jobs CLI's client, plan and progress display (`cli_jobs`), with --server/--token or
$DSM_SERVER/$DSM_TOKEN.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from . import cli_jobs
from .cli_jobs import ApiError, Client
from .cli_server import add_server_option
from .services.backups.keyslots import PASSPHRASE_ENV

_DURATION = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400}


def server_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_option(parser)
    parser.add_argument(
        "--token", default=os.environ.get("DSM_TOKEN"), help="a bearer token (default $DSM_TOKEN)"
    )


def _part_arguments(parser: argparse.ArgumentParser, *, keys: bool) -> None:
    group = parser.add_argument_group("what")
    group.add_argument("--universe", type=int, required=True, help="the universe's id")
    group.add_argument("--datastore", action="append", metavar="NAME",
                       help="a data store (repeatable; default: every one)")  # fmt: skip
    group.add_argument("--ordered-datastore", action="append", metavar="NAME",
                       help="an ordered data store (repeatable)")  # fmt: skip
    group.add_argument("--scope", action="append", metavar="SCOPE",
                       help="a scope (repeatable; default: every scope)")  # fmt: skip
    group.add_argument("--prefix", help="only keys starting with this")
    if keys:
        group.add_argument("--key", action="append", metavar="STORE/SCOPE/KEY",
                           help="an explicit key (repeatable)")  # fmt: skip


def _run_arguments(parser: argparse.ArgumentParser, *, writes: bool) -> None:
    parser.add_argument("--run", action="store_true", help="start it after showing the plan")
    parser.add_argument("--no-watch", action="store_true", help="with --run: do not follow it")
    if writes:
        parser.add_argument("--confirm", help="the confirmation the plan asks for")
        parser.add_argument(
            "--skip-backup",
            action="store_true",
            help="production universes: no backup of the entries before writing",
        )


def register_backup_actions(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """`create`, `restore` and `schedule` under `dsm backup`."""
    create = actions.add_parser(
        "create", help="back up a universe (or stores, scopes, a prefix) through the server"
    )
    _part_arguments(create, keys=False)
    create.add_argument("--note", help="kept in the manifest, e.g. pre-v42")
    create.add_argument(
        "--passphrase",
        action="store_true",
        help=f"also protect it with a passphrase, for another machine (prompt or ${PASSPHRASE_ENV})",
    )
    _run_arguments(create, writes=False)
    server_arguments(create)
    restore_arguments(actions.add_parser("restore", help="restore an archive or a moment"))
    schedule = actions.add_parser(
        "schedule", help="list, set, run or delete scheduled backups (while `dsm serve` runs)"
    )
    schedule.add_argument("name", nargs="?", metavar="NAME", help="the schedule's name")
    schedule.add_argument("--every", help="how often: 30m, 6h, 1d ... (at least 15m)")
    schedule.add_argument("--keep", type=int, help="archives of it to keep (older ones go)")
    schedule.add_argument("--universe", type=int)
    schedule.add_argument("--datastore", action="append", metavar="NAME")
    schedule.add_argument("--ordered-datastore", action="append", metavar="NAME")
    schedule.add_argument("--scope", action="append", metavar="SCOPE")
    schedule.add_argument("--prefix")
    schedule.add_argument("--disable", action="store_true", help="keep it but do not run it")
    schedule.add_argument("--delete", action="store_true", help="remove the schedule")
    schedule.add_argument("--run-now", action="store_true", help="run it now")
    server_arguments(schedule)


def restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Restore an archive (ARCHIVE: an id from `dsm backup list`), or each key as it was at "
        "a moment (--at 2026-12-01T14:00Z, from the journal, the archives and Roblox's "
        "history), to the same place or elsewhere. The plan comes first."
    )
    parser.add_argument("archive", nargs="?", metavar="ARCHIVE")
    parser.add_argument("--at", help="a moment (UTC, ISO 8601), instead of an archive")
    _part_arguments(parser, keys=True)
    target = parser.add_argument_group("where to")
    target.add_argument("--to-universe", type=int, help="another universe (e.g. staging)")
    target.add_argument("--to-datastore", help="one data store for every entry")
    target.add_argument("--to-scope", help="one scope for every entry")
    parser.add_argument(
        "--delete-absent", action="store_true", help="--at: delete keys that did not exist then"
    )
    parser.add_argument("--held-sessions", choices=("skip", "retry", "force"), default="skip")
    parser.add_argument(
        "--passphrase", action="store_true", help="for an archive from another machine"
    )
    _run_arguments(parser, writes=True)
    server_arguments(parser)


def register_erase_user(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "erase-user",
        help="find and erase a player's data (right to be forgotten), with a report",
        description="Find every entry of a player in a universe (key patterns from "
        "`erasure-patterns.json`, ordered ids, user ids), show it, and with --run erase it "
        "through the server, scrub its cache, journal, backups and index, and print the report.",
    )
    parser.add_argument("user_id", type=int, metavar="USERID")
    parser.add_argument("--universe", type=int, required=True)
    parser.add_argument("--held-sessions", choices=("skip", "retry", "force"), default="skip")
    parser.add_argument("--report", type=Path, help="also write the report (JSON) to this file")
    parser.add_argument(
        "--forget-report",
        action="store_true",
        help="after printing (and saving) it, make the server forget the report",
    )
    _run_arguments(parser, writes=True)
    server_arguments(parser)


# ------------------------------------------------------------------------------- requests


def _idem() -> str:
    return "cli-" + uuid.uuid4().hex


def _seconds(text: str) -> int:
    found = _DURATION.match(text.strip())
    if found is None:
        raise ValueError(f"--every {text!r}: give a number and m, h or d (30m, 6h, 1d)")
    return int(found.group(1)) * _UNITS[found.group(2)]


def _what(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"universe_id": args.universe}
    if args.datastore:
        body["datastores"] = args.datastore
    if args.ordered_datastore:
        body["ordered_datastores"] = args.ordered_datastore
    if args.scope:
        body["scopes"] = args.scope
    if args.prefix:
        body["prefix"] = args.prefix
    return body


def backup_body(args: argparse.Namespace, passphrase: str | None) -> dict[str, Any]:
    body = {**_what(args), "dry_run": True, "idempotency_key": _idem()}
    if args.note:
        body["note"] = args.note
    if passphrase is not None:
        body["passphrase"] = passphrase
    return body


def restore_body(args: argparse.Namespace, passphrase: str | None) -> dict[str, Any]:
    if (args.archive is None) == (args.at is None):
        raise ValueError("give an ARCHIVE or --at (one of them)")
    part = _what(args)
    part.pop("universe_id")
    if args.key:
        part["keys"] = [_key(k) for k in args.key]
    body: dict[str, Any] = {
        "universe_id": args.universe,
        "part": part,
        "delete_absent": args.delete_absent,
        "held_sessions": args.held_sessions,
        "dry_run": True,
        "idempotency_key": _idem(),
        "skip_backup": args.skip_backup,
    }
    if args.archive is not None:
        body["archive_id"] = args.archive
    else:
        body["at"] = args.at
    target = {
        name: value
        for name, value in (
            ("universe_id", args.to_universe),
            ("datastore", args.to_datastore),
            ("scope", args.to_scope),
        )
        if value is not None
    }
    if target:
        body["target"] = target
    if passphrase is not None:
        body["passphrase"] = passphrase
    return body


def _key(text: str) -> dict[str, str]:
    parts = text.split("/", 2)
    if len(parts) != 3:
        raise ValueError(f"--key {text!r}: give STORE/SCOPE/KEY, e.g. Players/global/Player_1")
    return {"datastore": parts[0], "scope": parts[1], "key": parts[2]}


def schedule_body(args: argparse.Namespace) -> dict[str, Any]:
    if args.universe is None or args.every is None or args.keep is None:
        raise ValueError("setting a schedule needs --universe, --every and --keep")
    return {
        **_what(args),
        "every_seconds": _seconds(args.every),
        "keep": args.keep,
        "enabled": not args.disable,
    }


# ------------------------------------------------------------------------------------ run


def run(
    args: argparse.Namespace,
    passphrase: str | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    out = Console(file=stdout or sys.stdout, highlight=False, soft_wrap=True)
    err = Console(file=stderr or sys.stderr, highlight=False, soft_wrap=True)
    if not args.token:
        err.print("error: a token is needed: pass --token or set DSM_TOKEN.")
        return 2
    client = Client(args.server, args.token)
    try:
        return _dispatch(client, args, passphrase, out)
    except ValueError as exc:
        err.print(f"error: {exc}")
        return 2
    except ApiError as exc:
        err.print(f"error: {cli_jobs._safe(exc.message)}")
        return 1
    except KeyboardInterrupt:
        err.print("Stopped watching; the job goes on (`dsm jobs pause ID` pauses it).")
        return 130


def _dispatch(
    client: Client, args: argparse.Namespace, passphrase: str | None, out: Console
) -> int:
    command = "erase-user" if args.command == "erase-user" else "restore"
    if args.command == "backup":
        command = args.backup_command
    if command == "schedule":
        return _schedule(client, args, out)
    if command == "create":
        job = client.call("POST", "/backups", backup_body(args, passphrase))
    elif command == "restore":
        job = client.call("POST", "/restores", restore_body(args, passphrase))
    else:
        body = {
            "universe_id": args.universe,
            "user_id": args.user_id,
            "held_sessions": args.held_sessions,
            "skip_backup": args.skip_backup,
            "dry_run": True,
            "idempotency_key": _idem(),
        }
        job = client.call("POST", "/erasures", body)
    job = cli_jobs.watch(client, job["id"], out) if not job["plan"]["complete"] else job
    cli_jobs.show_plan(job, out)
    if command == "restore":
        _restore_keys(client, job["id"], out)
    if command == "erase-user":
        _found(client, job["id"], out)
    if not args.run:
        out.print(f"Nothing was written. Start it with `dsm jobs start {job['id']}`.")
        return 0
    confirm = getattr(args, "confirm", None)
    job = client.call("POST", f"/jobs/{job['id']}/start", {"confirm": confirm})
    if args.no_watch:
        out.print(f"Started {job['id']}; follow it with `dsm jobs watch {job['id']}`.")
        return 0
    job = cli_jobs.watch(client, job["id"], out)
    cli_jobs.show_job(job, out)
    if command == "create" and job.get("output_path"):
        out.print(f"Archive: {job['output_path']}")
    if command == "erase-user" and job["state"] == "succeeded":
        _report(client, job["id"], args, out)
    return 0 if job["state"] == "succeeded" else 1


def _restore_keys(client: Client, job_id: str, out: Console) -> None:
    page = client.call("GET", f"/restores/{job_id}/plan", query={"limit": "20"})
    counts = page["summary"]["counts"]
    out.print("Plan: " + ", ".join(f"{n:,} {action.replace('_', ' ')}"
                                   for action, n in counts.items() if n))  # fmt: skip
    table = Table("ACTION", "KEY", "TO", "SOURCE", "PRECISION", "WHY")
    for key in page["keys"]:
        table.add_row(
            key["action"],
            cli_jobs._safe(f"{key['datastore']}/{key['scope']}/{key['key']}"),
            cli_jobs._safe(f"{key['target_universe_id']}:{key['target_datastore']}/"
                           f"{key['target_scope']}"),
            key.get("source") or "-",
            key["precision"],
            cli_jobs._safe(key["reason"]),
        )  # fmt: skip
    out.print(table)


def _found(client: Client, job_id: str, out: Console) -> None:
    view = client.call("GET", f"/erasures/{job_id}")
    table = Table("ACTION", "KEY", "WHY")
    for found in view["found"]:
        where = f"{found['datastore']}/{found['scope']}/{found['key']}"
        if found["store_kind"] == "ordered":
            where = "ordered " + where
        table.add_row(found["action"], cli_jobs._safe(where), cli_jobs._safe(found["detail"]))
    out.print(f"Found {view['found_total']:,} entries of player {view.get('user_id')}:")
    out.print(table)


def _report(client: Client, job_id: str, args: argparse.Namespace, out: Console) -> None:
    report = client.call("GET", f"/erasures/{job_id}/report")
    out.print(cli_jobs._safe(report["text"]))
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        out.print(f"Report written to {args.report}.")
    if args.forget_report:
        client.call("DELETE", f"/erasures/{job_id}/report")
        out.print("The server forgot the report.")


def _schedule(client: Client, args: argparse.Namespace, out: Console) -> int:
    name = args.name
    if name is None:
        listing = client.call("GET", "/backup-schedules")
        table = Table("NAME", "UNIVERSE", "EVERY", "KEEP", "NEXT", "LAST", "ARCHIVES")
        for s in listing["schedules"]:
            table.add_row(
                s["name"], str(s["universe_id"]), f"{s['every_seconds'] // 60}m", str(s["keep"]),
                s.get("next_run_at") or "disabled", s.get("last_state") or "-", str(s["archives"]),
            )  # fmt: skip
        out.print(table)
        return 0
    if args.delete:
        client.call("DELETE", f"/backup-schedules/{name}")
        out.print(f"Schedule {name} removed (its archives stay).")
        return 0
    if args.run_now:
        job = client.call("POST", f"/backup-schedules/{name}/run")
        job = cli_jobs.watch(client, job["id"], out)
        cli_jobs.show_job(job, out)
        return 0 if job["state"] == "succeeded" else 1
    view = client.call("PUT", f"/backup-schedules/{name}", schedule_body(args))
    out.print(
        f"Schedule {view['name']}: universe {view['universe_id']} every "
        f"{view['every_seconds'] // 60} minutes, keeping {view['keep']}; next run "
        f"{view.get('next_run_at') or '(disabled)'}. It runs while `dsm serve` runs."
    )
    return 0
