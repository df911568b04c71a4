"""`dsm jobs list | show | create | start | pause | resume | cancel | rollback | watch | prune`.

Talks to the running `dsm serve` over its HTTP API, like the plugin, with a bearer token
(`dsm tokens create --role admin --label "my laptop"`, passed with --token or $DSM_TOKEN).
`create` and `rollback` always show the plan (the dry run) first; `--run` then starts the job
and follows it with a progress bar. Exit code 0 when the job (or command) succeeded.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from shared_schema.jobs import parse_age

from .cli_server import add_server_option
from .services.tokens import console_safe

TERMINAL = ("succeeded", "failed", "cancelled", "rolled_back")
CHUNK_BYTES = 1024 * 1024
POLL_SECONDS = 0.5
KINDS = ("delete", "copy", "move", "export", "import", "transform", "set-metadata")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


class Client:
    """The companion server's API at `base_url` (loopback), with a bearer token."""

    def __init__(self, base_url: str, token: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str | None] | None = None
    ) -> Any:
        url = f"{self.base_url}/api/v1{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if method == "GET" else json.dumps(body or {}).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except urllib.error.URLError as exc:
            raise ApiError(
                0,
                "UNREACHABLE",
                f"No server answers at {self.base_url} ({exc.reason}); start it with `dsm "
                "serve`, or pass --server URL.",
            ) from None
        return json.loads(text) if text else None


def _api_error(exc: urllib.error.HTTPError) -> ApiError:
    try:
        error = json.loads(exc.read().decode())["error"]
        return ApiError(exc.code, error["code"], error["message"], error.get("details"))
    except (ValueError, KeyError, TypeError):
        return ApiError(exc.code, "HTTP", f"The server answered HTTP {exc.code}.")


# ----------------------------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "jobs",
        help="bulk jobs: plan, run, watch, pause, cancel and roll back",
        description="Bulk operations through the running server: every job is planned first "
        "(a dry run with counts, an estimate and sample diffs), paced to the Open Cloud budget, "
        "survives restarts, and can be rolled back.",
    )
    add_server_option(parser)
    parser.add_argument(
        "--token",
        default=os.environ.get("DSM_TOKEN"),
        help="a bearer token (default $DSM_TOKEN; make one with `dsm tokens create`)",
    )
    actions = parser.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    list_ = actions.add_parser("list", help="list jobs, newest first")
    list_.add_argument("--state", help="only jobs in this state (running, failed, ...)")
    list_.add_argument("--kind", help="only jobs of this kind")
    list_.add_argument("--limit", type=int, default=20)
    show = actions.add_parser("show", help="a job's plan, progress and outcomes")
    show.add_argument("job_id", metavar="ID")
    show.add_argument("--items", action="store_true", help="list its items and their outcomes")
    show.add_argument("--state", help="with --items: only items in this state (failed, ...)")
    create = actions.add_parser(
        "create",
        help="plan a job (a dry run); --run starts it",
        description="Plan a job and show the plan. Nothing is written unless --run is given.",
    )
    create.add_argument("kind", choices=KINDS)
    _selection_arguments(create)
    _params_arguments(create)
    _run_arguments(create)
    start = actions.add_parser("start", help="start a planned job")
    start.add_argument("job_id", metavar="ID")
    start.add_argument("--confirm", help="a production universe's label, as configured")
    start.add_argument("--no-watch", action="store_true", help="do not follow its progress")
    for name, text in (
        ("pause", "pause a job (it stays paused across restarts)"),
        ("resume", "resume a paused job"),
        ("cancel", "cancel a job (what it wrote stays; roll it back to undo)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id", metavar="ID")
    rollback = actions.add_parser(
        "rollback",
        help="plan (and with --run start) a rollback of a job",
        description="Put back every entry the job wrote, conditionally: entries changed since "
        "by anyone are skipped and listed, never overwritten.",
    )
    rollback.add_argument("job_id", metavar="ID")
    _run_arguments(rollback)
    watch = actions.add_parser("watch", help="follow a job's progress until it ends")
    watch.add_argument("job_id", metavar="ID")
    prune = actions.add_parser(
        "prune",
        help="remove finished jobs older than an age, with their items",
        description="Remove succeeded, failed, cancelled and rolled-back jobs that finished "
        "longer ago than --older-than, with their items, and give the space back. Jobs still "
        "needed stay (see docs/jobs.md). --dry-run only lists what would go.",
    )
    prune.add_argument(
        "--older-than", required=True, type=_age, metavar="AGE",
        help="e.g. 30d: a whole number and h (hours), d (days) or w (weeks); 1h to 3650d",
    )  # fmt: skip
    prune.add_argument("--dry-run", action="store_true", help="list what would go; change nothing")
    prune.add_argument(
        "--include-rollbackable",
        action="store_true",
        help="also remove jobs that could still be rolled back (their one-step rollback goes; "
        "each write stays undoable one entry at a time from the journal)",
    )


def _age(text: str) -> str:
    try:
        parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _selection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("selection")
    group.add_argument("--universe", type=int, required=True)
    group.add_argument(
        "--datastore",
        action="append",
        metavar="NAME",
        help="a data store (repeatable); left out: every data store of the universe",
    )
    group.add_argument("--ordered", action="store_true", help="ordered data stores")
    group.add_argument("--key", action="append", metavar="KEY", help="an explicit key (repeatable)")
    group.add_argument("--keys-file", type=Path, help="a file with one key per line")
    group.add_argument("--prefix", help="only keys starting with this")
    group.add_argument(
        "--scope", action="append", metavar="SCOPE", help="a scope (repeatable; default global)"
    )
    group.add_argument("--all-scopes", action="store_true")
    group.add_argument("--min-value", type=int, help="ordered: only values >= this")
    group.add_argument("--max-value", type=int, help="ordered: only values <= this")
    group.add_argument(
        "--query",
        help="only the entries a search of the local index matches, e.g. 'coins > 1e9' "
        "(docs/search.md); each is re-read live before it is touched",
    )
    group.add_argument("--key-pattern", help="with the index: keys matching this pattern")
    group.add_argument(
        "--match",
        choices=["prefix", "substring", "glob", "regex"],
        help="how --key-pattern matches",
    )


def _params_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("parameters")
    group.add_argument(
        "--held-sessions",
        choices=["skip", "retry"],
        help="entries a game server holds the session of (default skip)",
    )
    group.add_argument("--to-universe", type=int, help="copy/move: target universe")
    group.add_argument("--to-datastore", help="copy/move: target data store")
    group.add_argument("--to-scope", help="copy/move: target scope")
    group.add_argument("--on-exists", choices=["skip", "overwrite", "fail"])
    group.add_argument("--format", help="export: jsonl, csv or sqlite; import: jsonl or csv")
    group.add_argument("--file-name", help="export: the file name in the server's exports folder")
    group.add_argument("--file", type=Path, help="import: the JSON Lines or CSV file to upload")
    group.add_argument("--mode", choices=["create_only", "overwrite", "merge"], help="import")
    group.add_argument("--skip-bad-lines", action="store_true", help="import: only valid lines")
    group.add_argument("--program", help="transform: a jq program, e.g. '.coins *= 2'")
    group.add_argument("--program-file", type=Path, help="transform: a file with the program")
    group.add_argument(
        "--whole-value",
        action="store_true",
        help="transform: run on whole session-locked saves, not their data",
    )
    group.add_argument(
        "--set-attribute",
        action="append",
        metavar="NAME=JSON",
        help="set-metadata: set an attribute (repeatable)",
    )
    group.add_argument("--remove-attribute", action="append", metavar="NAME")
    group.add_argument("--clear-attributes", action="store_true")
    group.add_argument("--user-ids", help="set-metadata: replace user ids, e.g. 1,2 ('' clears)")
    group.add_argument("--add-user-id", type=int, action="append", metavar="ID")
    group.add_argument("--remove-user-id", type=int, action="append", metavar="ID")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", action="store_true", help="start it after showing the plan")
    parser.add_argument("--confirm", help="a production universe's label, as configured")
    parser.add_argument("--no-watch", action="store_true", help="with --run: do not follow it")


# ------------------------------------------------------------------------------- requests


def selection_of(args: argparse.Namespace) -> dict[str, Any]:
    selection: dict[str, Any] = {"universe_id": args.universe}
    if args.datastore:
        selection["datastores"] = args.datastore
    else:
        selection["all_datastores"] = True
    if args.query or args.key_pattern:
        search: dict[str, Any] = {"query": args.query, "key_pattern": args.key_pattern}
        if args.match:
            search["key_match"] = args.match
        selection["search"] = {k: v for k, v in search.items() if v is not None}
        if args.scope:
            selection["scopes"] = args.scope
        else:
            selection["all_scopes"] = True  # the index knows each entry's scope
        return selection
    if args.ordered:
        selection["store_kind"] = "ordered"
    keys = list(args.key or [])
    if args.keys_file is not None:
        keys += [k for k in args.keys_file.read_text(encoding="utf-8").splitlines() if k]
    scopes = args.scope or ["global"]
    if keys:
        selection["keys"] = [{"key": k, "scope": s} for k in keys for s in scopes]
        return selection
    if args.prefix:
        selection["prefix"] = args.prefix
    if args.all_scopes:
        selection["all_scopes"] = True
    elif args.scope:
        selection["scopes"] = args.scope
    for name in ("min_value", "max_value"):
        if getattr(args, name) is not None:
            selection[name] = getattr(args, name)
    return selection


def params_of(args: argparse.Namespace, client: Client, out: Console) -> dict[str, Any]:
    kind = args.kind
    params: dict[str, Any] = {}
    if args.held_sessions and kind != "export":
        params["held_sessions"] = args.held_sessions
    if kind in ("copy", "move"):
        target = {
            "universe_id": args.to_universe,
            "datastore": args.to_datastore,
            "scope": args.to_scope,
        }
        params["target"] = {k: v for k, v in target.items() if v is not None}
        if args.on_exists:
            params["on_exists"] = args.on_exists
    elif kind == "export":
        if args.format:
            params["format"] = args.format
        if args.file_name:
            params["file_name"] = args.file_name
    elif kind == "import":
        if args.file is None:
            raise SystemExit("error: an import needs --file PATH")
        params["upload_id"] = upload(client, args.file, out)
        if args.format:
            params["format"] = args.format
        if args.mode:
            params["mode"] = args.mode
        if args.skip_bad_lines:
            params["skip_bad_lines"] = True
    elif kind == "transform":
        program = args.program
        if args.program_file is not None:
            program = args.program_file.read_text(encoding="utf-8")
        if not program:
            raise SystemExit("error: a transform needs --program or --program-file")
        params["program"] = program
        if args.whole_value:
            params["wrapped"] = "whole"
    elif kind == "set-metadata":
        attributes = {}
        for item in args.set_attribute or []:
            name, _, text = item.partition("=")
            try:
                attributes[name] = json.loads(text)
            except ValueError:
                attributes[name] = text  # a bare word is a string
        if attributes:
            params["set_attributes"] = attributes
        if args.remove_attribute:
            params["remove_attributes"] = args.remove_attribute
        if args.clear_attributes:
            params["clear_attributes"] = True
        if args.user_ids is not None:
            params["user_ids"] = [int(u) for u in args.user_ids.split(",") if u.strip()]
        if args.add_user_id:
            params["add_user_ids"] = args.add_user_id
        if args.remove_user_id:
            params["remove_user_ids"] = args.remove_user_id
    return params


def upload(client: Client, path: Path, out: Console) -> str:
    """Send a local file in chunks, as the plugin does; returns the completed upload's id."""
    data = path.read_bytes()
    info = client.call(
        "POST",
        "/uploads",
        {
            "file_name": path.name,
            "size_bytes": len(data),
            "chunk_bytes": CHUNK_BYTES,
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    upload_id: str = info["upload_id"]
    for index in range(info["chunks"]):
        chunk = data[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
        client.call(
            "PUT",
            f"/uploads/{upload_id}/chunks/{index}",
            {"data_base64": base64.b64encode(chunk).decode("ascii")},
        )
    client.call("POST", f"/uploads/{upload_id}/complete")
    out.print(f"Uploaded {escape(path.name)} ({len(data):,} bytes) as {upload_id}.")
    return upload_id


# ------------------------------------------------------------------------------ rendering


def _safe(text: Any) -> str:
    return escape(console_safe(str(text)))


def show_plan(job: dict[str, Any], out: Console) -> None:
    plan = job.get("plan") or {}
    out.print(f"[bold]{_safe(job['description'])}[/bold]  ({job['id']}, {job['state']})")
    out.print(f"Data: {job['backend']}")
    if not plan.get("complete"):
        out.print(f"Still counting: {plan.get('items', 0):,} entries so far.")
        return
    out.print(f"Entries: {plan['items']:,}")
    estimate = plan.get("estimate")
    if estimate:
        requests = ", ".join(f"{n:,} {c}" for c, n in estimate["requests"].items())
        out.print(f"Open Cloud requests: {requests or 'none'}")
        out.print(f"Time at the current budget share: about {_duration(estimate['seconds'])}")
    if plan.get("budget"):
        out.print(f"Budget: {_safe(plan['budget']['headline'])}")
    for sample in plan.get("samples", []):
        out.print(
            f"  - {_safe(sample['datastore'])}/{_safe(sample['scope'])}/{_safe(sample['key'])}:"
            f" {_safe(sample['summary'])}"
        )
        for op in sample.get("patch", [])[:5]:
            value = f" {_safe(op['value_json'])}" if op.get("value_json") is not None else ""
            out.print(f"      {op['op']} {_safe(op['path'])}{value}")
        if sample.get("session"):
            out.print(f"      session: {_safe(sample['session'])}")
    for warning in plan.get("warnings", []):
        out.print(f"[yellow]warning:[/yellow] {_safe(warning)}")
    for note in plan.get("notes", []):
        out.print(f"note: {_safe(note)}")
    for bad in plan.get("bad_lines", [])[:20]:
        out.print(f"[red]line {bad['line']}:[/red] {_safe(bad['message'])}")
    if plan.get("bad_line_count", 0) > 20:
        out.print(f"... {plan['bad_line_count'] - 20:,} more bad lines")
    for problem in plan.get("blocking", []):
        out.print(f"[red]cannot start:[/red] {_safe(problem)}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def show_job(job: dict[str, Any], out: Console) -> None:
    show_plan(job, out)
    p = job["progress"]
    total = p.get("total")
    out.print(
        f"Progress: {p['done']:,}{f' of {total:,}' if total is not None else ''} done "
        f"({p['applied']:,} applied, {p['skipped']:,} skipped, {p['failed']:,} failed"
        + (f", {p['deferred']:,} waiting for a held session" if p.get("deferred") else "")
        + ")"
    )
    if job.get("failure"):
        out.print(f"[red]{job['failure']['code']}:[/red] {_safe(job['failure']['message'])}")
    if job.get("output_path"):
        out.print(f"File: {_safe(job['output_path'])}")
    if job.get("rollback_note"):  # where its rollback stands, or what a rollback left undone
        out.print(_safe(job["rollback_note"]))
    elif job.get("rolled_back_by"):
        out.print(f"Rolled back by {job['rolled_back_by']}")
    out.print(f"Next: {', '.join(job['actions']) or 'nothing'}")


def _bytes(n: int) -> str:
    return f"{n:,} bytes" if n < 1024 * 1024 else f"{n / (1024 * 1024):,.1f} MiB"


def show_prune(report: dict[str, Any], out: Console) -> None:
    verb = "Would remove" if report["dry_run"] else "Removed"
    jobs, items = report["jobs"], report["items"]
    out.print(
        f"{verb} {jobs:,} finished {'job' if jobs == 1 else 'jobs'} with {items:,} items "
        f"(finished before {report['cutoff']})."
    )
    if jobs:
        out.print(
            f"Oldest finished {report['oldest_finished_at']}, newest {report['newest_finished_at']}."
        )
        kinds = ", ".join(f"{n:,} {kind}" for kind, n in sorted(report["by_kind"].items()))
        out.print(f"By kind: {kinds}.")
    if report.get("data_bytes") is not None:
        out.print(f"Their stored data: about {_bytes(report['data_bytes'])}.")
    if report.get("file_bytes_before") is not None:
        out.print(
            f"The jobs file: {_bytes(report['file_bytes_before'])} before, "
            f"{_bytes(report['file_bytes_after'])} now."
        )
    if report["listed"]:
        table = Table("ID", "KIND", "STATE", "FINISHED", "ITEMS", "ROLLBACK")
        for job in report["listed"]:
            table.add_row(
                job["id"], job["kind"], job["state"], job["finished_at"], f"{job['items']:,}",
                "possible" if job["rollbackable"] else "",
            )  # fmt: skip
        out.print(table)
        if len(report["listed"]) < jobs:
            out.print(f"(the oldest {len(report['listed'])} of {jobs:,} shown)")
    for kept in report["kept"]:
        out.print(f"Kept {kept['jobs']:,}: {_safe(kept['note'])}.")
    for note in report["notes"]:
        out.print(_safe(note))
    if report["dry_run"]:
        out.print("Nothing was removed (dry run).")


def show_items(client: Client, job_id: str, state: str | None, out: Console) -> None:
    table = Table("#", "DATA STORE", "SCOPE", "KEY", "OUTCOME", "WHY")
    after = 0
    while True:
        page = client.call(
            "GET",
            f"/jobs/{job_id}/items",
            query={"after": str(after), "limit": "500", "state": state},
        )
        for item in page["items"]:
            why = item.get("skip_code") or item.get("error_code") or ""
            if item.get("message"):
                why = f"{why}: {item['message']}" if why else item["message"]
            table.add_row(
                str(item["seq"]),
                _safe(item["datastore"]),
                _safe(item["scope"]),
                _safe(item["key"]),
                item["state"],
                _safe(why),
            )
        if page.get("next_after") is None:
            break
        after = page["next_after"]
    out.print(table)


def watch(client: Client, job_id: str, out: Console) -> dict[str, Any]:
    """Follow a job with a progress bar until it ends (Ctrl+C stops watching, not the job)."""
    job = client.call("GET", f"/jobs/{job_id}")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=False) as bar:
        task = bar.add_task(job["kind"], total=None, rate="")
        while True:
            p = job["progress"]
            rate = f"{p['rate_per_second']:.1f}/s" if p.get("rate_per_second") else ""
            if p.get("eta_seconds") is not None:
                rate += f", {_duration(p['eta_seconds'])} left"
            description = (
                f"{job['kind']} {job['state']}: {p['applied']:,} applied, "
                f"{p['skipped']:,} skipped, {p['failed']:,} failed"
            )
            bar.update(
                task, total=p.get("total"), completed=p["done"], description=description, rate=rate
            )
            plan_ready = (job.get("plan") or {}).get("complete", True)
            if job["state"] in (*TERMINAL, "paused") or (job["state"] == "planned" and plan_ready):
                break
            time.sleep(POLL_SECONDS)
            job = client.call("GET", f"/jobs/{job_id}")
    found: dict[str, Any] = job
    return found


def _finish(client: Client, job: dict[str, Any], args: argparse.Namespace, out: Console) -> int:
    """After a plan: start it with --run (and watch), or say how to."""
    if not args.run:
        out.print(f"Nothing was written. Start it with `dsm jobs start {job['id']}`.")
        return 0
    job = client.call("POST", f"/jobs/{job['id']}/start", {"confirm": args.confirm})
    if args.no_watch:
        out.print(f"Started {job['id']}; follow it with `dsm jobs watch {job['id']}`.")
        return 0
    return _ended(client, watch(client, job["id"], out), out)


def _ended(client: Client, job: dict[str, Any], out: Console) -> int:
    """Show how the job ended; exit 0 only if it did all it was for (a rollback: only once the
    job it undoes is rolled back, not when it left some of its writes alone)."""
    show_job(job, out)
    if job["state"] == "succeeded" and job.get("rollback_of"):
        return (
            0 if client.call("GET", f"/jobs/{job['rollback_of']}")["state"] == "rolled_back" else 1
        )
    return 0 if job["state"] in ("succeeded", "rolled_back") else 1


# ------------------------------------------------------------------------------------ run


def run(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out = Console(file=stdout or sys.stdout, highlight=False, soft_wrap=True)
    err = Console(file=stderr or sys.stderr, highlight=False, soft_wrap=True)
    if not args.token:
        err.print(
            "error: a token is needed: pass --token or set DSM_TOKEN (make one with `dsm tokens "
            "create --role admin --label 'my laptop'`)."
        )
        return 2
    client = Client(args.server, args.token)
    try:
        return _dispatch(client, args, out)
    except ApiError as exc:
        err.print(f"error: {_safe(exc.message)}")
        if isinstance(exc.details, dict) and "confirmation" in exc.details:
            err.print(f"Pass --confirm {json.dumps(exc.details['confirmation'])} to go ahead.")
        return 1
    except KeyboardInterrupt:
        err.print("Stopped watching; the job goes on (`dsm jobs pause ID` pauses it).")
        return 130


def _dispatch(client: Client, args: argparse.Namespace, out: Console) -> int:
    command = args.jobs_command
    if command == "list":
        page = client.call(
            "GET", "/jobs", query={"state": args.state, "kind": args.kind, "limit": str(args.limit)}
        )
        # The id is what the other commands take: never cut.
        table = Table(
            Column("ID", no_wrap=True, min_width=16), "KIND", "STATE", "DONE", "DESCRIPTION", "BY"
        )
        for job in page["jobs"]:
            state = job["state"]
            if job.get("rollback_incomplete"):
                state += " · not fully rolled back"
            p = job["progress"]
            done = (
                f"{p['done']:,}/{p['total']:,}" if p.get("total") is not None else f"{p['done']:,}"
            )
            table.add_row(
                job["id"],
                job["kind"],
                state,
                done,
                _safe(job["description"]),
                _safe(job["created_by"]),
            )
        out.print(table if page["jobs"] else "No jobs yet.")
        return 0
    if command == "show":
        job = client.call("GET", f"/jobs/{args.job_id}")
        show_job(job, out)
        if args.items:
            show_items(client, args.job_id, args.state, out)
        return 0
    if command == "create":
        body = {
            "kind": args.kind.replace("-", "_"),
            "selection": selection_of(args),
            "params": params_of(args, client, out),
            "dry_run": True,
            "idempotency_key": "cli-" + uuid.uuid4().hex,
        }
        job = client.call("POST", "/jobs", body)
        show_plan(job, out)
        return _finish(client, job, args, out)
    if command == "rollback":
        job = client.call(
            "POST",
            f"/jobs/{args.job_id}/rollback",
            {"dry_run": True, "idempotency_key": "cli-" + uuid.uuid4().hex},
        )
        show_plan(job, out)
        return _finish(client, job, args, out)
    if command == "start":
        job = client.call("POST", f"/jobs/{args.job_id}/start", {"confirm": args.confirm})
        if args.no_watch:
            out.print(f"Started {job['id']}.")
            return 0
        return _ended(client, watch(client, args.job_id, out), out)
    if command in ("pause", "resume", "cancel"):
        job = client.call("POST", f"/jobs/{args.job_id}/{command}")
        out.print(f"{job['id']} is {job['state']}.")
        return 0
    if command == "watch":
        return _ended(client, watch(client, args.job_id, out), out)
    if command == "prune":
        body = {
            "older_than": args.older_than,
            "dry_run": args.dry_run,
            "include_rollbackable": args.include_rollbackable,
        }
        show_prune(client.call("POST", "/jobs/prune", body), out)
        return 0
    raise SystemExit(f"error: unknown jobs action {command!r}")
