"""Which features work right now, from real checks (the plugin's feature availability panel).

Per universe it makes one cheap call of each kind (list one data store, list one ordered entry,
list one sorted map item): what Open Cloud answers decides AVAILABLE or UNAVAILABLE with its
reason (a missing key scope names the scope). Team sync and the audit log report their own
state; features this server version does not have say so, read from its route table. The
answer is kept for CHECK_SECONDS, so opening the panel costs at most three calls a universe.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from shared_schema.common import Backend
from shared_schema.monitor import Feature, FeatureList, FeatureStatus
from shared_schema.registry import ROUTES

from ..opencloud import errors as oc
from ..opencloud.client import OpenCloudClient
from .errors import ServiceError
from .provenance import upstream_error
from .team import TeamService
from .team.names import SORTED_MAP
from .upstream import Upstream

CHECK_SECONDS = 30.0
PROBE_ORDERED_STORE = "dsm-feature-probe"

# Features that arrive with routes of their own: present in the route table or not.
_BY_ROUTE = (
    ("jobs", "Bulk jobs (edit, backup, restore)", ("list_jobs", "create_job")),
    ("search", "Search index", ("search", "search_index")),
)


class Features:
    def __init__(
        self,
        upstream: Upstream,
        team: TeamService,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstream = upstream
        self._team = team
        self._clock = clock
        self._kept: tuple[float, FeatureList] | None = None

    async def check(self) -> FeatureList:
        if self._kept is not None and self._clock() - self._kept[0] < CHECK_SECONDS:
            return self._kept[1]
        now = datetime.now(UTC)
        features = [self._backend(now), *self._by_route(now)]
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

    def _by_route(self, now: datetime) -> list[Feature]:
        ids = {route.operation_id for route in ROUTES}
        out = []
        for feature_id, name, routes in _BY_ROUTE:
            present = any(r in ids for r in routes)
            out.append(
                Feature(
                    feature_id=feature_id,
                    name=name,
                    status=FeatureStatus.EXPERIMENTAL if present else FeatureStatus.UNAVAILABLE,
                    reason="New in this version." if present else "Not in this server version.",
                    checked_at=now,
                    how="Looked for its routes in this server's route table.",
                )
            )
        return out

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
