"""The sample game: generated, clearly labelled player data for trying search and analytics.

It exists only inside the emulator (never on live Open Cloud): `dsm emulator --sample-game`,
`dsm serve --sample-game`, or `POST /_emulator/sample-game`. The same seed gives the same
players, values and history offsets. Every generated entry carries the attribute
`dsmSample` so it can never be mistaken for a real player's data, and the emulator records
what it loaded (`GET /_emulator/sample-game`). docs/sample-game.md describes it, including the
planted anomalies below.

Revisions are written through the emulator's own store with a clock set into the past, so
their histories (over the last 30 days, at least two hours apart) behave exactly like ones
Open Cloud keeps. A serving emulator loads it with `load_async`, which keeps the loop free.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from .clock import ManualClock
from .context import EmulatorContext
from .standard import StandardStore

PLAYER_STORE = "PlayerData"
LEADERBOARDS = {"Leaderboard_Coins": "coins", "Leaderboard_Level": "level"}
SAMPLE_ATTRIBUTES = {"dsmSample": "generated sample game, not real players"}
ITEMS = ["sword", "shield", "bow", "potion", "helmet", "boots", "wand", "pickaxe", "pet_egg"]
LANGUAGES = ["en", "en", "en", "es", "pt", "fr", "de", "ja"]

# Planted anomalies (docs/sample-game.md): fixed user ids so the docs can name the keys.
COIN_DUPE = 900000001  # coins jump from ~1,200 to 2,000,000,000 in its last revision
COINS_AS_TEXT = 900000002  # coins saved as the string "1500" (type drift)
WRONG_USER_ID = 900000003  # key names 900000003, entry tagged with 900000999
HUGE_SAVE = 900000004  # a purchase log that brings the value to ~3.87 MB (92% of 4 MiB)
LEVEL_OUTLIER = 900000005  # level 5000 where every other player is at most 100
PLANTED = (COIN_DUPE, COINS_AS_TEXT, WRONG_USER_ID, HUGE_SAVE, LEVEL_OUTLIER)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sample_game (
    universe TEXT PRIMARY KEY,
    seed INTEGER NOT NULL,
    players INTEGER NOT NULL,
    loaded_time TEXT NOT NULL,
    datastores TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class SampleGameInfo:
    universe: str
    seed: int
    players: int
    loaded_time: str
    datastores: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "universe": self.universe,
            "seed": self.seed,
            "players": self.players,
            "loaded_time": self.loaded_time,
            "datastores": self.datastores,
            "notice": "Generated sample data for trying DataStore Manager Pro; not real players.",
        }


def key_of(user_id: int) -> str:
    return f"Player_{user_id}"


def loaded(ctx: EmulatorContext) -> list[SampleGameInfo]:
    ctx.db.ensure_schema(SCHEMA)
    rows = ctx.db.conn.execute("SELECT * FROM sample_game ORDER BY universe").fetchall()
    return [
        SampleGameInfo(
            r["universe"], r["seed"], r["players"], r["loaded_time"], json.loads(r["datastores"])
        )
        for r in rows
    ]


def is_empty(ctx: EmulatorContext) -> bool:
    return ctx.db.conn.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is None


@dataclass(frozen=True)
class _Player:
    user_id: int
    saves: list[tuple[datetime, str]]  # (revision time, value JSON), oldest first
    score: dict[str, int]  # leaderboard -> score


@dataclass
class SampleGameLoading:
    """A load under way: what it fills and how far it got."""

    universe: str
    seed: int
    players: int
    written: int = 0  # players whose history is in the emulator

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__}


class SampleGameBusy(Exception):
    def __init__(self, loading: SampleGameLoading) -> None:
        super().__init__(
            f"The sample game is already loading into universe {loading.universe} "
            f"({loading.written} of {loading.players} players written); wait until it is done."
        )
        self.loading = loading


# One load at a time per emulator; an entry lives only while its load runs.
_LOADS: WeakKeyDictionary[EmulatorContext, SampleGameLoading] = WeakKeyDictionary()
# Players written per emulator transaction before other requests get a turn (a few ms each).
SLICE_SECONDS = 0.01


def loading(ctx: EmulatorContext) -> SampleGameLoading | None:
    return _LOADS.get(ctx)


def load(
    ctx: EmulatorContext, *, universe: str = "1", seed: int = 1, players: int = 500
) -> SampleGameInfo:
    """Generate the sample game into `universe` (keys it writes are replaced), blocking the
    loop throughout: only where nothing else is served yet (`dsm emulator` before it listens)."""
    with _claim(ctx, universe, seed, players) as progress:
        now = _now(ctx)
        generated = generate(seed, players, now)
        for _ in _write(ctx, universe, generated, progress):
            pass
        return _record(ctx, progress, now)


async def load_async(
    ctx: EmulatorContext, *, universe: str = "1", seed: int = 1, players: int = 500
) -> SampleGameInfo:
    """`load` for a serving emulator: generated in a thread (nothing shared), then written on
    the loop, which owns the emulator's state, in short transactions with a yield between each,
    so other requests are answered meanwhile. SampleGameBusy while another load runs."""
    with _claim(ctx, universe, seed, players) as progress:
        now = _now(ctx)
        generated = await asyncio.to_thread(generate, seed, players, now)
        for _ in _write(ctx, universe, generated, progress):
            await asyncio.sleep(0)
        return _record(ctx, progress, now)


@contextmanager
def _claim(
    ctx: EmulatorContext, universe: str, seed: int, players: int
) -> Iterator[SampleGameLoading]:
    running = _LOADS.get(ctx)
    if running is not None:
        raise SampleGameBusy(running)
    progress = _LOADS[ctx] = SampleGameLoading(universe, seed, players)
    try:
        yield progress
    finally:
        del _LOADS[ctx]


def _now(ctx: EmulatorContext) -> datetime:
    ctx.db.ensure_schema(SCHEMA)
    return ctx.clock.now().astimezone(UTC).replace(microsecond=0)


def generate(seed: int, players: int, now: datetime) -> list[_Player]:
    """Every player's saves; pure (touches no emulator state), so it may run in a thread."""
    rng = random.Random(seed)
    user_ids = sorted(rng.sample(range(10_000_000, 99_999_999), players - len(PLANTED)))
    out = []
    for user_id in [*user_ids, *PLANTED]:
        history = _history(rng, user_id, now)
        final = history[-1][1]
        out.append(
            _Player(
                user_id,
                [(when, json.dumps(value, separators=(",", ":"))) for when, value in history],
                {b: final[f] if isinstance(final[f], int) else 0 for b, f in LEADERBOARDS.items()},
            )
        )
    return out


def _write(
    ctx: EmulatorContext, universe: str, generated: list[_Player], progress: SampleGameLoading
) -> Iterator[None]:
    """Write the players through the emulator's own stores, one transaction per slice of about
    SLICE_SECONDS; yields after each slice (no transaction is open then)."""
    clock = ManualClock(generated[0].saves[0][0])
    store = StandardStore(ctx.db, clock)
    attributes = json.dumps(SAMPLE_ATTRIBUTES)
    players = iter(generated)
    player = next(players, None)
    while player is not None:
        ends = time.perf_counter() + SLICE_SECONDS
        with ctx.db.transaction():
            while player is not None:  # at least one player a slice
                tagged = [900000999] if player.user_id == WRONG_USER_ID else [player.user_id]
                for when, value in player.saves:
                    clock.set(when)
                    store.write(
                        universe,
                        PLAYER_STORE,
                        "global",
                        key_of(player.user_id),
                        value,
                        attributes=attributes,
                        user_ids=tagged,
                    )
                for board, score in player.score.items():
                    ctx.ordered.update(
                        universe, board, "global", key_of(player.user_id), score, allow_missing=True
                    )
                progress.written += 1
                player = next(players, None)
                if time.perf_counter() >= ends:
                    break
        yield


def _record(ctx: EmulatorContext, progress: SampleGameLoading, now: datetime) -> SampleGameInfo:
    info = SampleGameInfo(
        progress.universe,
        progress.seed,
        progress.players,
        now.isoformat(),
        [PLAYER_STORE, *LEADERBOARDS],
    )
    with ctx.db.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO sample_game VALUES (?, ?, ?, ?, ?)",
            (info.universe, info.seed, info.players, info.loaded_time, json.dumps(info.datastores)),
        )
    return info


def _history(
    rng: random.Random, user_id: int, now: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """A player's saves over the last 30 days: created some day, then saved every few hours."""
    age_days = rng.uniform(0.5, 29.0)
    created = now - timedelta(days=age_days)
    saves = max(1, min(14, int(rng.expovariate(1 / 5)) + 1))
    spacing = max(2.0, age_days * 24 / saves)  # hours; Open Cloud keeps one version an hour
    skill = rng.lognormvariate(0, 0.6)
    spender = rng.random() < 0.1
    value: dict[str, Any] = {
        "coins": 100,
        "gems": 0,
        "level": 1,
        "xp": 0,
        "inventory": ["sword"],
        "settings": {
            "music": rng.random() < 0.7,
            "sfx": rng.random() < 0.9,
            "language": rng.choice(LANGUAGES),
        },
        "stats": {"playtime_minutes": 0, "wins": 0},
    }
    history = []
    when = created
    for index in range(saves):
        if index:
            when = when + timedelta(hours=rng.uniform(spacing * 0.6, spacing * 1.4))
            if when > now - timedelta(minutes=5):
                break
            minutes = rng.randint(10, 180)
            value["stats"]["playtime_minutes"] += minutes
            value["stats"]["wins"] += rng.randint(0, minutes // 20)
            value["xp"] += int(minutes * 15 * skill)
            value["level"] = min(100, 1 + int((value["xp"] / 400) ** 0.6))
            value["coins"] += int(rng.uniform(-0.3, 1.0) * minutes * 40 * skill)
            value["coins"] = max(0, value["coins"])
            if spender:
                value["gems"] += rng.choice([0, 80, 400, 1700])
            if rng.random() < 0.35:
                item = rng.choice(ITEMS)
                if item not in value["inventory"]:
                    value["inventory"].append(item)
        history.append((when, json.loads(json.dumps(value))))
    return _plant(user_id, history, now)


def _plant(
    user_id: int, history: list[tuple[datetime, dict[str, Any]]], now: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    if user_id not in PLANTED:
        return history
    # The planted save is the newest, half an hour ago; earlier saves end 3 hours before it.
    cutoff = now - timedelta(hours=3)
    kept = [(t, v) for t, v in history if t <= cutoff] or [(cutoff, history[0][1])]
    last = kept[-1][1]
    planted = json.loads(json.dumps(last))
    if user_id == COIN_DUPE:
        last["coins"] = 1200
        planted["coins"] = 2_000_000_000
    elif user_id == COINS_AS_TEXT:
        planted["coins"] = "1500"
    elif user_id == HUGE_SAVE:
        planted["purchaseLog"] = [f"receipt-{i:07d}-{'x' * 24}" for i in range(90_000)]
    elif user_id == LEVEL_OUTLIER:
        planted["level"] = 5000
    return [*kept, (now - timedelta(minutes=30), planted)]
