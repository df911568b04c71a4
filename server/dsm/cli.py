"""`dsm` command line: `dsm emulator` runs the local Open Cloud emulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from . import (
    __version__,
    cli_backup,
    cli_backup_jobs,
    cli_budget,
    cli_index,
    cli_jobs,
    cli_keys,
    cli_mcp,
    cli_plugin,
    cli_team,
    cli_tokens,
)
from .config import DEFAULT_PORT, ServerConfig
from .emulator import sample_game
from .emulator.app import EmulatorConfig, FaultConfig, create_emulator_app
from .emulator.auth import load_keys
from .emulator.context import EMULATOR
from .emulator.faults import EXPECTED, MAX_LATENCY_MS, FaultSettingError, check_changes
from .emulator.throttle import LimitsConfig
from .opencloud.ratelimit import MAX_CCU
from .paths import data_dir, ensure_private_dir
from .services.jobs.budget import BudgetSettingsError, check_ccu


def _emulator_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "emulator",
        help="run the local Open Cloud emulator",
        description="Serve a local stand-in for https://apis.roblox.com (data stores, ordered "
        "data stores, memory stores, messaging). Its data is never live game data.",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 picks a free one)")
    p.add_argument("--data", type=Path, help="state directory (omitted: a fresh temporary store)")
    p.add_argument("--keys", type=Path, help="JSON list of {key, universes, scopes} grants")
    p.add_argument("--limits", choices=["documented", "off"], default="documented")
    p.add_argument("--ccu", type=int, default=0, help="concurrent users for the v2 budgets")
    p.add_argument(
        "--budget",
        default="",
        help="custom budgets as name=requests_per_minute,... (e.g. v2.standard.read=120)",
    )
    p.add_argument(
        "--latency-ms",
        type=_fault("latency_ms"),
        default=0.0,
        help=f"added latency per request (0 to {MAX_LATENCY_MS:,.0f})",
    )
    p.add_argument(
        "--error-rate",
        type=_fault("error_rate"),
        default=0.0,
        help="share of 500/503/429 answers (0 to 1)",
    )
    p.add_argument(
        "--drop-rate",
        type=_fault("drop_rate"),
        default=0.0,
        help="share of dropped connections (0 to 1)",
    )
    p.add_argument(
        "--lost-response-rate",
        type=_fault("lost_response_rate"),
        default=0.0,
        help="share of writes applied whose response is then lost (0 to 1)",
    )
    p.add_argument("--seed", type=int, help="seed for fault injection and the sample game")
    _sample_game_flag(p)


def _sample_game_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sample-game",
        action="store_true",
        help="fill the emulator with the generated, labelled sample game (docs/sample-game.md; "
        "deterministic with --seed)",
    )


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the companion server for the Studio plugin",
        description="Serve the plugin API on 127.0.0.1. Without an Open Cloud key in the vault "
        "it runs the embedded emulator, and everything it shows is labelled EMULATOR.",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--data-dir", type=Path, help="state directory (default: $DSM_HOME or per-user)")
    p.add_argument(
        "--emulator-universe",
        type=int,
        action="append",
        help="universe id to offer on the emulator (repeatable; default 1)",
    )
    p.add_argument("--emulator-limits", choices=["documented", "off"], default="documented")
    p.add_argument(
        "--reserve-share",
        type=float,
        default=0.5,
        help="share of each Open Cloud budget left for live game servers (default 0.5)",
    )
    p.add_argument(
        "--upstream",
        metavar="URL",
        help="use the Open Cloud-compatible server at URL (e.g. a `dsm emulator`) instead of the "
        "embedded emulator, with the vault's keys or a local key; its data is labelled "
        "EMULATOR only if it says it is one",
    )
    p.add_argument(
        "--ccu",
        type=_ccu,
        default=0,
        help="concurrent users the game has, for the Open Cloud budgets of universes without "
        "their own `dsm budget set` (default 0: the smallest budgets)",
    )
    p.add_argument(
        "--job-retention-days",
        type=_retention_days,
        default=ServerConfig.job_retention_days,
        metavar="N",
        help="remove finished jobs older than N days once a day, keeping any that could still "
        "be rolled back or that something refers to (default %(default)s; 0 turns it off)",
    )
    p.add_argument("--seed", type=int, default=1, help="the sample game's seed (default 1)")
    _sample_game_flag(p)
    assistants = p.add_argument_group("AI assistants (`dsm mcp`, docs/assistants.md)")
    assistants.add_argument(
        "--no-assistant-proposals",
        action="store_true",
        help="assistant tokens may read and search but not propose jobs",
    )
    assistants.add_argument(
        "--assistant-requests-per-minute",
        type=_positive,
        default=ServerConfig.assistant_requests_per_minute,
        metavar="N",
        help="API requests one assistant token may make a minute (default %(default)s)",
    )
    assistants.add_argument(
        "--assistant-opencloud-per-minute",
        type=_positive,
        default=ServerConfig.assistant_opencloud_per_minute,
        metavar="N",
        help="Open Cloud requests made for one assistant token a minute (default %(default)s)",
    )


def _fault(name: str) -> Callable[[str], float]:
    """An argparse type for one fault setting, checked as POST /_emulator/faults checks it."""

    def parse(text: str) -> float:
        try:
            value = float(text)
            check_changes({name: value})
        except (ValueError, FaultSettingError):
            raise argparse.ArgumentTypeError(f"expected {EXPECTED[name]}, got {text!r}") from None
        return value

    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _retention_days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 3650:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of days from 0 (off) to 3650, got {text!r}"
        )
    return value


def _ccu(text: str) -> int:
    try:
        return check_ccu(int(text))
    except (ValueError, BudgetSettingsError):
        raise argparse.ArgumentTypeError(
            f"expected a whole number of concurrent users from 0 to {MAX_CCU:,}, got {text!r}"
        ) from None


def _upstream(parser: argparse.ArgumentParser, url: str | None) -> str | None:
    if url is None:
        return None
    parsed = urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        parser.error(
            f"--upstream must be an http(s) URL such as http://127.0.0.1:8787, got {url!r}"
        )
    return url.strip().rstrip("/")


def build_emulator_config(args: argparse.Namespace) -> EmulatorConfig:
    limits = LimitsConfig.from_cli(mode=args.limits, ccu=args.ccu, overrides=args.budget)
    faults = FaultConfig(
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        lost_response_rate=args.lost_response_rate,
        seed=args.seed,
    )
    keys = load_keys(args.keys) if args.keys else None
    return EmulatorConfig(data_dir=args.data, keys=keys, limits=limits, faults=faults)


async def _serve_emulator(
    config: EmulatorConfig, host: str, port: int, *, sample: bool = False
) -> None:
    bound = [0]
    if host in ("127.0.0.1", "localhost", "::1"):
        # On loopback only local programs should reach it: refuse browsers and rebound names.
        config.guard_port = lambda: bound[0]
    app = create_emulator_app(config)
    if sample:
        info = sample_game.load(app[EMULATOR], seed=config.faults.seed or 1)
        print(f"Sample game loaded: {info.players} generated players in universe {info.universe}")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None)
    bound[0] = sockets[0].getsockname()[1] if sockets else port
    print(f"DataStore Manager Pro Open Cloud emulator {__version__}")
    print(f"  base URL : http://{host}:{bound[0]}  (stands in for https://apis.roblox.com)")
    print(f"  data     : {config.data_dir or 'temporary store, deleted on exit'}")
    if config.keys is None:
        print(
            "  auth     : OPEN - any non-empty x-api-key has full access (use --keys to restrict)"
        )
    else:
        print(f"  auth     : {len(config.keys)} key(s) from the keys file")
    print(f"  limits   : {config.limits.mode} (CCU {config.limits.ccu})")
    print("Everything served here is emulator data, never a live game's. Ctrl+C stops.")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsm", description="DataStore Manager Pro companion")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    _emulator_parser(sub)
    _serve_parser(sub)
    cli_keys.register(sub)
    cli_tokens.register(sub)
    cli_budget.register(sub)
    cli_jobs.register(sub)
    cli_mcp.register(sub)
    cli_plugin.register(sub)
    cli_team.register(sub)
    cli_index.register(sub)
    cli_backup.register(sub)
    cli_backup_jobs.restore_arguments(
        sub.add_parser("restore", help="restore an archive or a moment (as `dsm backup restore`)")
    )
    cli_backup_jobs.register_erase_user(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "emulator":
        try:
            config = build_emulator_config(args)
        except ValueError as exc:
            parser.error(str(exc))
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_emulator(config, args.host, args.port, sample=args.sample_game))
        return 0
    if args.command == "serve":
        from .serve import serve

        server_config = ServerConfig(
            data_dir=ensure_private_dir(args.data_dir) if args.data_dir else data_dir(),
            port=args.port,
            emulator_universes=args.emulator_universe or [1],
            emulator_limits=args.emulator_limits,
            reserve_share=args.reserve_share,
            ccu=args.ccu,
            job_retention_days=args.job_retention_days or None,
            upstream_url=_upstream(parser, args.upstream),
            sample_game_seed=args.seed if args.sample_game else None,
            assistant_proposals=not args.no_assistant_proposals,
            assistant_requests_per_minute=args.assistant_requests_per_minute,
            assistant_opencloud_per_minute=args.assistant_opencloud_per_minute,
        )
        return serve(server_config)
    if args.command == "key":
        return cli_keys.run(args)
    if args.command == "tokens":
        return cli_tokens.run(args)
    if args.command == "budget":
        return cli_budget.run(args)
    if args.command == "jobs":
        return cli_jobs.run(args)
    if args.command == "mcp":
        return cli_mcp.run(args)
    if args.command == "plugin":
        return cli_plugin.run(args)
    if args.command in ("team", "audit"):
        return cli_team.run(args)
    if args.command in ("search", "index", "analytics", "report"):
        return cli_index.run(args)
    if args.command in ("backup", "restore"):
        return cli_backup.run(args)
    if args.command == "erase-user":
        return cli_backup_jobs.run(args)
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
