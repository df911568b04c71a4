"""The sample game: generated, clearly labelled player data for trying search and analytics.

It exists only inside the emulator (never on live Open Cloud): `dsm emulator --sample-game`,
`dsm serve --sample-game`, or `POST /_emulator/sample-game`. The same seed gives the same
players, values and history offsets. Every generated entry carries the attribute
`dsmSample` so it can never be mistaken for a real player's data, and the emulator records
what it loaded (`GET /_emulator/sample-game`). docs/sample-game.md describes it, including the
planted anomalies below.

Revisions are written through the emulator's own store with a clock set into the past, so
their histories (over the last 30 days, at least two hours apart) behave exactly like ones
Open Cloud keeps.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

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


def load(
    ctx: EmulatorContext, *, universe: str = "1", seed: int = 1, players: int = 500
) -> SampleGameInfo:
    """Generate the sample game into `universe` (keys it writes are replaced)."""
    ctx.db.ensure_schema(SCHEMA)
    rng = random.Random(seed)
    now = ctx.clock.now().astimezone(UTC).replace(microsecond=0)
    clock = ManualClock(now)
    store = StandardStore(ctx.db, clock)
    user_ids = sorted(rng.sample(range(10_000_000, 99_999_999), players - len(PLANTED)))
    for user_id in [*user_ids, *PLANTED]:
        history = _history(rng, user_id, now)
        for when, value in history:
            clock.set(when)
            tagged = [900000999] if user_id == WRONG_USER_ID else [user_id]
            store.write(
                universe,
                PLAYER_STORE,
                "global",
                key_of(user_id),
                json.dumps(value, separators=(",", ":")),
                attributes=json.dumps(SAMPLE_ATTRIBUTES),
                user_ids=tagged,
            )
        final = history[-1][1]
        for board, field in LEADERBOARDS.items():
            score = final[field] if isinstance(final[field], int) else 0
            ctx.ordered.update(
                universe, board, "global", key_of(user_id), score, allow_missing=True
            )
    info = SampleGameInfo(universe, seed, players, now.isoformat(), [PLAYER_STORE, *LEADERBOARDS])
    with ctx.db.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO sample_game VALUES (?, ?, ?, ?, ?)",
            (universe, seed, players, info.loaded_time, json.dumps(info.datastores)),
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
