"""Which features work right now, from real checks (the plugin's feature availability panel).

Per universe it makes one cheap call of each kind (list one data store, list one ordered entry,
list one sorted map item): what Open Cloud answers decides AVAILABLE or UNAVAILABLE with its
reason (a missing key scope names the scope). Team sync and the audit log report their own
state, search what the local index holds, bulk jobs whether the jobs engine runs. The
answer is kept for CHECK_SECONDS, so opening the panel costs at most three calls a universe.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from shared_schema.common import Backend
from shared_schema.monitor import Feature, FeatureList, FeatureStatus

from ..opencloud import errors as oc
from ..opencloud.client import OpenCloudClient
from .errors import ServiceError
from .index.service import IndexService
from .jobs.service import JobService
from .provenance import upstream_error
from .team import TeamService
from .team.names import SORTED_MAP
from .upstream import Upstream

CHECK_SECONDS = 30.0
PROBE_ORDERED_STORE = "dsm-feature-probe"


class Features:
    def __init__(
        self,
        upstream: Upstream,
        team: TeamService,
        *,
        index: Callable[[], IndexService | None] = lambda: None,
        jobs: Callable[[], JobService | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstream = upstream
        self._team = team
        self._index = index  # opened after this: looked up when checked
        self._jobs = jobs
        self._clock = clock
        self._kept: tuple[float, FeatureList] | None = None

    async def check(self) -> FeatureList:
        if self._kept is not None and self._clock() - self._kept[0] < CHECK_SECONDS:
            return self._kept[1]
        now = datetime.now(UTC)
        features = [self._backend(now), self._jobs_engine(now)]
        features.append(
            Feature(
                feature_id="monitor",
                name="Live monitoring",
                status=FeatureStatus.AVAILABLE,
                checked_at=now,
                how="This server counts every Open Cloud call it makes.",
            )
        )
        universes, _ = await self._upstream.universes()
        for binding in universes:
            features.extend(await self._universe(binding.universe_id, now))
        answer = FeatureList(features=features, checked_at=now, backend=self._upstream.backend)
        self._kept = (self._clock(), answer)
        return answer

    def _backend(self, now: datetime) -> Feature:
        live = self._upstream.backend is Backend.LIVE
        return Feature(
            feature_id="live_open_cloud",
            name="Live game data (Roblox Open Cloud)",
            status=FeatureStatus.AVAILABLE if live else FeatureStatus.UNAVAILABLE,
            reason=None
            if live
            else "This server runs on an emulator (no Open Cloud API key in the vault, or "
            "--upstream names an emulator); add a key with `dsm key add`.",
            checked_at=now,
            how="Which backend this server talks to.",
        )

    def _jobs_engine(self, now: datetime) -> Feature:
        running = self._jobs() is not None
        return Feature(
            feature_id="jobs",
            name="Bulk jobs (delete, copy, export, import, transform)",
            status=FeatureStatus.AVAILABLE if running else FeatureStatus.UNAVAILABLE,
            reason=None if running else "The jobs engine is not running on this server.",
            checked_at=now,
            how="Whether this server's jobs engine is running; each job needs the key scopes "
            "of the calls it makes (the data store rows below).",
        )

    async def _search(self, universe_id: int, now: datetime) -> Feature:
        index = self._index()
        reason: str | None = "The search index is not open on this server."
        how = "What the local search index holds for this universe."
        if index is not None:
            status = await index.status(universe_id)
            stores = [s for s in status.stores if s.universe_id == universe_id]
            indexed = sum(s.entries_indexed for s in stores)
            if indexed > 0:
                reason = None
                how = f"{indexed} entries of {len(stores)} data store(s) indexed. " + how
            else:
                reason = (
                    "Nothing indexed for this universe yet: open Search in the plugin, or run "
                    f"`dsm index crawl --universe {universe_id}`."
                )
        return Feature(
            feature_id="search",
            name="Search and analytics",
            status=FeatureStatus.AVAILABLE if reason is None else FeatureStatus.UNAVAILABLE,
            reason=reason,
            universe_id=universe_id,
            checked_at=now,
            how=how,
        )

    async def _universe(self, universe_id: int, now: datetime) -> list[Feature]:
        probes: list[tuple[str, str, Callable[[OpenCloudClient], Awaitable[Any]]]] = [
            (
                "datastores",
                "Standard data stores",
                lambda c: c.list_data_stores_page(universe_id, page_size=1),
            ),
            (
                "ordered",
                "Ordered data stores",
                lambda c: c.ordered_list_page(universe_id, PROBE_ORDERED_STORE, page_size=1),
            ),
            (
                "memory",
                "Memory store sorted maps",
                lambda c: c.sorted_map_list_page(universe_id, SORTED_MAP, page_size=1),
            ),
        ]
        out = []
        for feature_id, name, probe in probes:
            reason = await self._probe(universe_id, probe)
            out.append(
                Feature(
                    feature_id=feature_id,
                    name=name,
                    status=FeatureStatus.AVAILABLE if reason is None else FeatureStatus.UNAVAILABLE,
                    reason=reason,
                    universe_id=universe_id,
                    checked_at=now,
                    how="One list call of this kind, just now.",
                )
            )
        out.append(await self._search(universe_id, now))
        on = self._team.is_on(universe_id)
        team_reason = (
            f"Off: `dsm team enable --universe {universe_id}` turns it on."
            if on is None
            else self._team.reason(universe_id)
            if on is False
            else None
        )
        for feature_id, name in (("team", "Team sync"), ("audit", "Shared audit log")):
            out.append(
                Feature(
                    feature_id=feature_id,
                    name=name,
                    status=FeatureStatus.AVAILABLE if on else FeatureStatus.UNAVAILABLE,
                    reason=team_reason,
                    universe_id=universe_id,
                    checked_at=now,
                    how="The state of this server's team sync for the universe.",
                )
            )
        return out

    async def _probe(
        self, universe_id: int, probe: Callable[[OpenCloudClient], Awaitable[Any]]
    ) -> str | None:
        """None when the call was answered (a 404 too: it was allowed), else the reason."""
        try:
            client = self._upstream.client_for(universe_id)
            await probe(client)
        except oc.NotFound:
            return None
        except oc.OpenCloudError as exc:
            return upstream_error(exc, self._upstream.binding(universe_id).backend).message
        except ServiceError as exc:
            return exc.message
        return None
