"""`dsm budget show | set | unset`: the CCU the Open Cloud budgets of a universe assume.

The settings live in the data directory (budgets.json); a running `dsm serve` picks a change up
within a second, so there is nothing to restart.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from .opencloud.ratelimit import MAX_CCU
from .paths import data_dir
from .services.jobs.budget import BudgetPolicy, BudgetSettingsError, CcuSettings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `budget` command to the top-level `dsm` parser."""
    parser = subparsers.add_parser(
        "budget",
        help="show or set the concurrent users (CCU) the Open Cloud budgets assume",
        description="Data store budgets grow with a game's concurrent users (300 + k x CCU "
        "requests a minute) and are shared with its servers. Tell the server the CCU so it can "
        "use the budget the game really has; it keeps the reserve share for the game.",
    )
    actions = parser.add_subparsers(dest="budget_command", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="show the CCU settings and the budgets they give",
        description="List universes with their own CCU; with --universe, every budget in force.",
    )
    show.add_argument("--universe", type=int, help="show every budget of this universe")
    show.add_argument(
        "--ccu",
        type=int,
        default=0,
        help="the `dsm serve --ccu` default to assume for universes without a setting (default 0)",
    )
    show.add_argument(
        "--reserve-share",
        type=float,
        default=0.5,
        help="the `dsm serve --reserve-share` to assume (default 0.5)",
    )
    set_ = actions.add_parser(
        "set",
        help="set a universe's CCU",
        description="Set the concurrent users a universe's budgets assume. Use the game's peak "
        "CCU only if it is reached at the time you run jobs; too high a figure makes Open "
        "Cloud answer 429, and the server then slows down.",
    )
    set_.add_argument("--universe", type=int, required=True)
    set_.add_argument("--ccu", type=int, required=True)
    unset = actions.add_parser(
        "unset",
        help="forget a universe's CCU (it goes back to the server default)",
        description="Forget a universe's CCU; it then uses `dsm serve --ccu`.",
    )
    unset.add_argument("--universe", type=int, required=True)


def run(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Execute a parsed `dsm budget ...` command; returns the process exit code."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    settings = CcuSettings(data_dir())
    try:
        if args.budget_command == "set":
            settings.set(args.universe, args.ccu)
            print(f"Universe {args.universe} now assumes {args.ccu:,} concurrent users.", file=out)
            print(_policy(settings, 0, 0.5).in_use(args.universe).headline(), file=out)
            return 0
        if args.budget_command == "unset":
            if settings.unset(args.universe):
                print(
                    f"Universe {args.universe} uses the server default CCU again "
                    "(`dsm serve --ccu`).",
                    file=out,
                )
            else:
                print(f"Universe {args.universe} had no CCU of its own.", file=out)
            return 0
        if args.budget_command == "show":
            policy = _policy(settings, args.ccu, args.reserve_share)
            if args.universe is not None:
                print(policy.in_use(args.universe).describe(), file=out)
                return 0
            print(_table(settings.all()), file=out)
            return 0
    except BudgetSettingsError as exc:
        print(f"error: {exc}", file=err)
        return 1
    except ValueError as exc:  # a reserve share out of range
        print(f"error: {exc}", file=err)
        return 2
    print(f"error: unknown budget action {args.budget_command!r}", file=err)
    return 2


def _policy(settings: CcuSettings, ccu: int, reserve_share: float) -> BudgetPolicy:
    return BudgetPolicy(settings, default_ccu=ccu, reserve_share=reserve_share)


def _table(ccus: dict[int, int]) -> str:
    footer = (
        "Other universes use `dsm serve --ccu` (0 unless given). "
        "`dsm budget show --universe ID` lists every budget of one universe; "
        f"CCUs go from 0 to {MAX_CCU:,}."
    )
    if not ccus:
        return f"No universe has its own CCU yet. {footer}"
    rows = [("UNIVERSE", "CCU")] + [(str(u), f"{c:,}") for u, c in sorted(ccus.items())]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a.ljust(width)}  {b}" for a, b in rows) + "\n" + footer
