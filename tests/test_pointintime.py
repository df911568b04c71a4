"""Point in time against a scripted history.

The server writes through its one journaled write path (journal clock = the emulator's manual
clock); a game-server stand-in writes straight to the emulator; a backup archive reads some
keys while the game plays. Then each key's state at T is chosen from the journal, the archive
and Roblox's revision history, and compared with the history the test wrote.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dsm.emulator.clock import ManualClock
from dsm.opencloud.client import NotFound, OpenCloudClient, RetryPolicy
from dsm.services.backups.archive import (
    ArchiveEntry,
    ArchiveReader,
    ArchiveWriter,
    EntryName,
)
from dsm.services.backups.keyslots import ArchiveKeys
from dsm.services.backups.pointintime import (
    ABSENT,
    ArchiveObservations,
    JournalObservations,
    Observation,
    PitSource,
    PitState,
    Precision,
    RobloxObservations,
    UpstreamRevisions,
    decide,
    plan_point_in_time,
)
from dsm.services.dataplane import DataPlane
from dsm.services.entries import EntryRef
from dsm.services.events import EventBus
from dsm.services.jobs.budget import BudgetPolicy, CcuSettings
from dsm.services.ordered import OrderedRef
from dsm.services.upstream import Upstream
from dsm.storage.cache import EntryCache
from dsm.storage.crypto import RecordCipher, new_key
from dsm.storage.journal import WriteJournal
from shared_schema.common import Backend
from shared_schema.entries import StoreKind

from .conftest import API_KEY, RunningEmulator

U, DS, LB = 1, "players", "wins"
DAY = datetime(2026, 3, 10, tzinfo=UTC)


def at(hh: int, mm: int) -> datetime:
    return DAY.replace(hour=hh, minute=mm)


@dataclass(frozen=True)
class Actor:
    token_id: str = "tok_test"
    name: str = "Studio tester"


@dataclass
class World:
    clock: ManualClock
    plane: DataPlane
    journal: WriteJournal
    game: OpenCloudClient
    tmp: Path
    writes: int = 0

    def to(self, when: datetime) -> None:
        assert when >= self.clock.now()
        self.clock.set(when)

    def idem(self) -> str:
        self.writes += 1
        return f"pit-{self.writes:06d}"

    async def server_set(self, key: str, value: object) -> None:
        ref = EntryRef(U, DS, "global", key)
        text = json.dumps(value)
        try:
            current = await self.game.get_entry(U, DS, key)
        except NotFound:
            current = None
        if current is None:
            await self.plane.entries.create(Actor(), ref, text, None, [], self.idem())
        else:
            await self.plane.entries.update(
                Actor(),
                ref,
                text,
                current.revision_id,
                lambda a: a,
                lambda u: u,
                self.idem(),
            )

    async def server_delete(self, key: str) -> None:
        await self.plane.entries.delete(Actor(), EntryRef(U, DS, "global", key), None, self.idem())

    async def game_set(self, key: str, value: object) -> None:
        await self.game.update_entry(
            U, DS, key, json.dumps(value), attributes=None, user_ids=[], allow_missing=True
        )


@pytest.fixture
async def world(emulator: RunningEmulator, tmp_path: Path) -> AsyncIterator[World]:
    clock = emulator.clock
    clock.set(at(12, 0))
    cipher = RecordCipher(new_key())
    fast = RetryPolicy(base_delay=0.001, max_delay=0.01)
    server_client = OpenCloudClient(api_key=API_KEY, base_url=emulator.base_url, retry=fast)
    upstream = Upstream(Backend.EMULATOR, {}, [], shared_client=server_client)
    journal = WriteJournal(tmp_path, cipher, clock=lambda: clock.now().timestamp())
    cache = EntryCache(tmp_path, cipher)
    plane = DataPlane.build(
        upstream, cache, journal, EventBus(64), BudgetPolicy(CcuSettings(tmp_path))
    )
    async with OpenCloudClient(
        api_key="game-server", base_url=emulator.base_url, retry=fast
    ) as game:
        yield World(clock, plane, journal, game, tmp_path)
    await server_client.close()
    journal.close()
    cache.close()


def value_of(state: PitState | None) -> object:
    assert state is not None
    return json.loads(state.value_json or "null") if state.exists else ABSENT


async def test_each_key_at_t_comes_from_the_best_source_with_its_precision(world: World) -> None:
    w = world
    # A: only the server writes it (journal); Roblox keeps the hours' versions too.
    w.to(at(12, 5))
    await w.server_set("A", 1)
    w.to(at(12, 10))
    await w.server_set("A", 2)
    # B: only the game writes it, in different hours.
    w.to(at(12, 20))
    await w.game_set("B", 1)
    # E: the game writes it, the server deletes it.
    w.to(at(12, 25))
    await w.game_set("E", "to delete")
    w.to(at(12, 45))
    await w.server_delete("E")
    # F: an ordered entry the server sets, then the game changes.
    w.to(at(12, 50))
    await w.plane.ordered.create(Actor(), OrderedRef(U, LB, "global", "F"), 10, w.idem())
    # C: three game writes in one UTC hour; Roblox keeps the first and the last only.
    w.to(at(13, 5))
    await w.game_set("C", 1)
    w.to(at(13, 10))
    await w.game.ordered_update(U, LB, "F", 20)
    w.to(at(13, 20))
    await w.game_set("C", 2)

    # A backup reads C and F while the game plays (each entry with its own read time).
    keys = ArchiveKeys(data_key=new_key())
    archive = w.tmp / "live.dsmbak"
    with ArchiveWriter(
        archive, universe_id=U, backend=Backend.EMULATOR, keys=keys, clock=w.clock.now
    ) as writer:
        w.to(at(13, 22))
        writer.add(
            ArchiveEntry.from_standard(await w.game.get_entry(U, DS, "C"), DS, w.clock.now())
        )
        w.to(at(13, 23))
        ordered = await w.game.ordered_get(U, LB, "F")
        writer.add(ArchiveEntry.from_ordered(ordered, LB, "global", w.clock.now()))
        writer.finish()

    w.to(at(13, 40))
    await w.game_set("C", 3)
    w.to(at(13, 50))
    await w.server_set("A", 3)
    w.to(at(14, 10))
    await w.game_set("B", 2)
    w.to(at(14, 30))
    await w.game_set("D", "born after T")
    w.to(at(15, 0))

    T = at(13, 30)
    names = [EntryName(StoreKind.STANDARD, DS, "global", k) for k in "ABCDEH"]
    names.append(EntryName(StoreKind.ORDERED, LB, "global", "F"))
    with ArchiveReader(archive, keys) as reader:
        plan = await plan_point_in_time(
            U,
            names,
            T,
            journal=JournalObservations(w.journal),
            archives=ArchiveObservations([reader]),
            roblox=RobloxObservations(UpstreamRevisions(w.plane.upstream.call), now=w.clock.now),
        )
    got = {d.name.key: d for d in plan.decisions}

    # A: the journal's 12:10 write and its 13:50 write's before-image share a revision: exact.
    assert got["A"].precision is Precision.EXACT and got["A"].source is PitSource.JOURNAL
    assert value_of(got["A"].state) == 2
    # B: Roblox's revision current at T, nothing else written in T's hour: exact.
    assert got["B"].precision is Precision.EXACT and got["B"].source is PitSource.ROBLOX
    assert value_of(got["B"].state) == 1
    # C: the true state at 13:30 was 2, which Roblox dropped (overwritten at 13:40 in the same
    # hour). Roblox alone would say "1 as of 13:05"; the archive read 2 at 13:22: as of 13:22.
    assert got["C"].precision is Precision.AS_OF and got["C"].source is PitSource.ARCHIVE
    assert value_of(got["C"].state) == 2 and got["C"].known_at == at(13, 22)
    assert got["C"].gap == timedelta(minutes=8) and "not ruled out" in got["C"].reason
    # D: no revision at or before T, within Roblox's 30 days: it did not exist. Same for H.
    for key in "DH":
        assert got[key].precision is Precision.EXACT and got[key].state == ABSENT
    # E: deleted by the server at 12:45: Roblox's tombstone says absent through T.
    assert got["E"].precision is Precision.EXACT and got["E"].state == ABSENT
    # F (ordered): no history at Roblox; the archive's 13:23 read beats the journal's 12:50.
    assert got["F"].precision is Precision.AS_OF and got["F"].source is PitSource.ARCHIVE
    assert value_of(got["F"].state) == 20 and got["F"].known_at == at(13, 23)
    assert plan.unknown == [] and plan.conflicts == []

    # Without the archive, C is only known from Roblox, as of its first write of the hour.
    plan = await plan_point_in_time(
        U,
        [names[2]],
        T,
        journal=JournalObservations(w.journal),
        roblox=RobloxObservations(UpstreamRevisions(w.plane.upstream.call), now=w.clock.now),
    )
    (c,) = plan.decisions
    assert c.precision is Precision.AS_OF and c.source is PitSource.ROBLOX
    assert value_of(c.state) == 1 and c.known_at is not None
    assert c.known_at.replace(microsecond=0) == at(13, 5)

    # Forty days back: Roblox's history does not reach, the journal has nothing: unknown,
    # listed with why, never guessed.
    old = T - timedelta(days=40)
    plan = await plan_point_in_time(
        U,
        names[:2],
        old,
        journal=JournalObservations(w.journal),
        roblox=RobloxObservations(UpstreamRevisions(w.plane.upstream.call), now=w.clock.now),
    )
    assert [d.precision for d in plan.decisions] == [Precision.UNKNOWN, Precision.UNKNOWN]
    assert all(d.state is None for d in plan.decisions)
    a, b = plan.decisions
    assert (
        "30 days" in a.reason
        and "the journal: nothing about it before 2026-03-10T12:05" in a.reason
    )
    assert "journal has no write of it" in b.reason
    assert plan.as_json()["keys"][0]["precision"] == "unknown"


NAME = EntryName(StoreKind.STANDARD, "players", "global", "k")
T = datetime(2026, 3, 10, 13, 30, tzinfo=UTC)


def obs(
    source: PitSource, value: object, start: datetime, end: datetime, revision: str | None
) -> Observation:
    state = ABSENT if value is None else PitState(True, json.dumps(value))
    return Observation(source, state, start, end, revision, f"{source} {value}")


def test_decide_prefers_exact_then_the_newest_then_says_unknown() -> None:
    early, late = T - timedelta(hours=2), T - timedelta(minutes=5)
    # Point observations only: the newest one before T, as of its moment.
    d = decide(
        NAME,
        T,
        [obs(PitSource.JOURNAL, 1, early, early, None), obs(PitSource.ROBLOX, 2, late, late, "r2")],
    )
    assert (d.precision, d.source, d.known_at) == (Precision.AS_OF, PitSource.ROBLOX, late)
    # Two points of one revision around T make it exact, the journal named over Roblox.
    d = decide(
        NAME,
        T,
        [
            obs(PitSource.ROBLOX, 2, late, late, "r2"),
            obs(PitSource.JOURNAL, 2, T + timedelta(hours=1), T + timedelta(hours=1), "r2"),
        ],
    )
    assert (d.precision, d.source, d.revision_id) == (Precision.EXACT, PitSource.JOURNAL, "r2")
    # Observations only after T: unknown, with the notes.
    d = decide(
        NAME,
        T,
        [obs(PitSource.ARCHIVE, 1, T + timedelta(1), T + timedelta(1), None)],
        ["no archive"],
    )
    assert d.precision is Precision.UNKNOWN and d.state is None and "no archive" in d.reason


def test_decide_never_picks_between_disagreeing_sources() -> None:
    start = T - timedelta(hours=1)
    # Two revisions both claiming T.
    d = decide(
        NAME,
        T,
        [obs(PitSource.ROBLOX, 1, start, T, "r1"), obs(PitSource.ARCHIVE, 2, start, T, "r2")],
    )
    assert d.precision is Precision.CONFLICT and d.state is None and len(d.evidence) == 2
    # One revision id with two contents: one source is wrong.
    d = decide(
        NAME,
        T,
        [obs(PitSource.JOURNAL, 1, start, start, "r1"), obs(PitSource.ROBLOX, 9, T, T, "r1")],
    )
    assert d.precision is Precision.CONFLICT
    # The same content spelled differently is not a conflict.
    spaced = Observation(
        PitSource.ARCHIVE, PitState(True, '{ "a" : 1 }'), start, T, "r1", "archive"
    )
    compact = Observation(PitSource.ROBLOX, PitState(True, '{"a":1}'), start, T, "r1", "roblox")
    assert decide(NAME, T, [spaced, compact]).precision is Precision.EXACT
