"""The Open Cloud budget this server uses per universe, at the CCU the user says the game has.

v2 data store budgets are shared with the experience's game servers and grow with its
concurrent users (``300 + k x CCU`` requests a minute; ``dsm.opencloud.ratelimit.
DOCUMENTED_RATES`` holds every documented formula). Roblox does not tell an API client the
CCU, so the user does: ``dsm serve --ccu N`` is the default for every universe and
``dsm budget set --universe U --ccu N`` overrides it for one (kept in ``budgets.json`` in the
data directory and picked up by a running server within a second). The server paces itself to
``budget x (1 - reserve share)`` and leaves the rest to the game; 429s, ``retry-after`` and
``x-ratelimit-*`` headers can only lower that pace (see ``ClientRateLimiter``).

Interfaces used by the server and, later, the jobs engine:

- ``CcuSettings(data_dir)``: ``get(u)``, ``set(u, ccu)``, ``unset(u)``, ``all()``.
- ``BudgetPolicy(settings, default_ccu, reserve_share)``: ``budget_for("123")`` is the limiter's
  per-universe budget callback; ``in_use(123, limiter)`` describes what is in force.
- ``BudgetInUse``: ``describe()`` for plans, ``headline()`` for the status bar,
  ``estimate_seconds({"write": 2000, "read": 2000})`` for dry-run plans, ``to_dict()``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from shared_schema.common import Backend
from shared_schema.jobs import BudgetCategoryView, BudgetView
from shared_schema.jobs import CcuSource as CcuSourceEnum

from ...opencloud.ratelimit import (
    DOCUMENTED_RATES,
    MAX_CCU,
    WINDOW_SECONDS,
    ClientBudget,
    ClientRateLimiter,
)

SETTINGS_FILENAME = "budgets.json"
_FORMAT_VERSION = 1
# How often a running server looks at budgets.json for changes made by `dsm budget set`.
RELOAD_SECONDS = 1.0

CcuSource = Literal["universe", "default"]


class BudgetSettingsError(Exception):
    """budgets.json cannot be read or written, or a CCU is out of range."""


def check_ccu(ccu: int) -> int:
    if isinstance(ccu, bool) or not isinstance(ccu, int) or not 0 <= ccu <= MAX_CCU:
        raise BudgetSettingsError(
            f"A CCU must be a whole number of concurrent users from 0 to {MAX_CCU:,}; got {ccu!r}."
        )
    return ccu


class CcuSettings:
    """Per-universe CCU settings in ``<data dir>/budgets.json`` (written atomically, mode 0600).

    The CLI writes while the server may be reading, so every write replaces the whole file in
    one rename and a reader sees either the old or the new settings, never half of them.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / SETTINGS_FILENAME
        self._lock = threading.Lock()

    def all(self) -> dict[int, int]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise BudgetSettingsError(f"Cannot read {self.path}: {exc.strerror}.") from None
        try:
            doc = json.loads(text)
            universes = doc["universes"]
            if doc.get("version") != _FORMAT_VERSION or not isinstance(universes, dict):
                raise ValueError("unknown layout")
            return {int(u): check_ccu(c) for u, c in universes.items() if str(u).isdigit()}
        except (ValueError, KeyError, TypeError, BudgetSettingsError) as exc:
            raise BudgetSettingsError(
                f"{self.path} is not a budget settings file this version understands ({exc}). "
                "Fix or delete it, then set the CCUs again with `dsm budget set`."
            ) from None

    def get(self, universe_id: int) -> int | None:
        return self.all().get(universe_id)

    def set(self, universe_id: int, ccu: int) -> None:
        check_ccu(ccu)
        if universe_id <= 0:
            raise BudgetSettingsError(f"Universe id {universe_id} is not a valid universe id.")
        with self._lock:
            current = self.all()
            current[universe_id] = ccu
            self._write(current)

    def unset(self, universe_id: int) -> bool:
        """Forget a universe's CCU (it goes back to the default); False if none was set."""
        with self._lock:
            current = self.all()
            if current.pop(universe_id, None) is None:
                return False
            self._write(current)
            return True

    def stamp(self) -> tuple[int, int] | None:
        """A cheap change marker (mtime, size) of the file; None when there is none."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _write(self, universes: Mapping[int, int]) -> None:
        doc = {
            "version": _FORMAT_VERSION,
            "universes": {str(u): universes[u] for u in sorted(universes)},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".budgets-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(doc, out, indent=2)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise BudgetSettingsError(f"Cannot write {self.path}: {exc.strerror}.") from None


@dataclass(frozen=True)
class CategoryBudget:
    """One documented budget as this server uses it for a universe."""

    category: str  # the limiter category ("write", "ordered.read", ...)
    label: str
    formula: str  # "300 + 20 × CCU"
    documented_rpm: float  # the formula at the CCU: shared with the game's servers
    share_rpm: int  # what this server may use: documented x (1 - reserve share), rounded down
    pace_rpm: int  # what it uses now: the share, lowered by Open Cloud's headers if they say so
    paused_for: float  # seconds a 429 or an exhausted x-ratelimit-remaining still holds it back
    source: str


@dataclass(frozen=True)
class BudgetInUse:
    """The budget in force for one universe, for plans, the status bar and estimates."""

    universe_id: int
    ccu: int
    ccu_source: CcuSource
    reserve_share: float
    categories: tuple[CategoryBudget, ...]

    def category(self, name: str) -> CategoryBudget:
        for item in self.categories:
            if item.category == name:
                return item
        raise KeyError(f"unknown budget category {name!r}")

    def headline(self) -> str:
        """One line for the status bar, e.g. ``CCU 100 (set for this universe): writes 1150/min
        of 2300, reads 2150/min of 4300; 50% kept for game servers``."""
        where = "set for this universe" if self.ccu_source == "universe" else "server default"
        w, r = self.category("write"), self.category("read")
        return (
            f"CCU {self.ccu:,} ({where}): writes {w.pace_rpm:,}/min of {w.documented_rpm:,.0f}, "
            f"reads {r.pace_rpm:,}/min of {r.documented_rpm:,.0f}; "
            f"{self.reserve_share:.0%} kept for game servers"
        )

    def describe(self) -> str:
        """A few lines for a job plan: the CCU assumed, every budget, and why it may be lower."""
        where = (
            f"set for universe {self.universe_id} with `dsm budget set`"
            if self.ccu_source == "universe"
            else "the server default (`dsm serve --ccu`)"
        )
        lines = [
            f"Open Cloud budget for universe {self.universe_id}, assuming {self.ccu:,} concurrent "
            f"users ({where}). The game's servers share these budgets; "
            f"{self.reserve_share:.0%} of each is left to them.",
        ]
        for item in self.categories:
            line = (
                f"  {item.label}: {item.formula} = {item.documented_rpm:,.0f}/min, "
                f"this server uses up to {item.share_rpm:,}/min"
            )
            if item.pace_rpm < item.share_rpm:
                line += f", lowered to {item.pace_rpm:,}/min by Open Cloud's rate-limit headers"
            if item.paused_for > 0:
                line += f", paused {item.paused_for:.0f} s by Open Cloud (429)"
            lines.append(line)
        lines.append(
            "If the game has fewer players than assumed, Open Cloud answers 429 and the server "
            "slows down; it never goes faster than these figures."
        )
        return "\n".join(lines)

    def estimate_seconds(self, requests: Mapping[str, int]) -> float:
        """Seconds to send ``requests`` (category -> count) at the current pace, latency aside.

        Categories are separate budgets, paced in parallel, so the slowest one decides. A
        paused category adds its pause.
        """
        longest = 0.0
        for name, count in requests.items():
            if count <= 0:
                continue
            item = self.category(name)
            seconds = item.paused_for + (count - 1) * WINDOW_SECONDS / item.pace_rpm
            longest = max(longest, seconds)
        return longest

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def view(self, backend: Backend) -> BudgetView:
        """The protocol's form, for the status bar and job plans."""
        return BudgetView(
            universe_id=self.universe_id,
            ccu=self.ccu,
            ccu_source=CcuSourceEnum(self.ccu_source),
            reserve_share=self.reserve_share,
            headline=self.headline(),
            description=self.describe(),
            categories=[
                BudgetCategoryView(
                    category=item.category,
                    label=item.label,
                    formula=item.formula,
                    documented_rpm=item.documented_rpm,
                    share_rpm=item.share_rpm,
                    pace_rpm=item.pace_rpm,
                    paused_seconds=round(item.paused_for, 3),
                    source=item.source,
                )
                for item in self.categories
            ],
            backend=backend,
        )


class BudgetPolicy:
    """Which budget each universe gets: its own CCU if set, else the server default."""

    def __init__(
        self,
        settings: CcuSettings,
        *,
        default_ccu: int = 0,
        reserve_share: float = 0.5,
        reload_seconds: float = RELOAD_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.default_ccu = check_ccu(default_ccu)
        self.reserve_share = reserve_share
        ClientBudget.for_ccu(default_ccu, reserve_share)  # refuse a bad reserve share now
        self._reload_seconds = reload_seconds
        self._monotonic = monotonic
        self._checked = -math.inf
        self._stamp: tuple[int, int] | None = None
        self._ccus: dict[int, int] = {}
        self._budgets: dict[int, ClientBudget] = {}
        self._default_budget = ClientBudget.for_ccu(default_ccu, reserve_share)
        self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = self._monotonic()
        if not force and now - self._checked < self._reload_seconds:
            return
        self._checked = now
        stamp = self.settings.stamp()
        if not force and stamp == self._stamp:
            return
        try:
            ccus = self.settings.all()
        except BudgetSettingsError:
            if force:
                raise
            return  # keep the last good settings; `dsm budget show` reports the problem
        self._stamp = stamp
        self._ccus = ccus
        self._budgets = {}

    def reload(self) -> None:
        """Read budgets.json now (after this process changed it) instead of within a second."""
        self._refresh(force=True)

    def ccu_of(self, universe_id: int) -> tuple[int, CcuSource]:
        self._refresh()
        ccu = self._ccus.get(universe_id)
        return (self.default_ccu, "default") if ccu is None else (ccu, "universe")

    def budget_for(self, universe_id: str) -> ClientBudget:
        """The limiter's per-universe budget (``ClientRateLimiter(budget_for=...)``)."""
        self._refresh()
        if not universe_id.isdigit():
            return self._default_budget
        u = int(universe_id)
        if u not in self._ccus:
            return self._default_budget
        budget = self._budgets.get(u)
        if budget is None:
            budget = self._budgets[u] = ClientBudget.for_ccu(self._ccus[u], self.reserve_share)
        return budget

    def in_use(self, universe_id: int, limiter: ClientRateLimiter | None = None) -> BudgetInUse:
        """What is in force for a universe; with the limiter, also what Open Cloud said."""
        ccu, source = self.ccu_of(universe_id)
        budget = self.budget_for(str(universe_id))
        rpm = budget.categories()
        items = []
        for name, rate in DOCUMENTED_RATES.items():
            share = budget.allowed_per_window(name)
            pace = limiter.allowed(str(universe_id), name) if limiter is not None else share
            paused = limiter.paused_for(str(universe_id), name) if limiter is not None else 0.0
            items.append(
                CategoryBudget(
                    category=name,
                    label=rate.label,
                    formula=rate.formula(),
                    documented_rpm=rpm[name],
                    share_rpm=share,
                    pace_rpm=min(pace, share),
                    paused_for=paused,
                    source=rate.source,
                )
            )
        return BudgetInUse(universe_id, ccu, source, self.reserve_share, tuple(items))
