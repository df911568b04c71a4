"""Published cross-server messages, recorded so tests and users can see what was sent.

Roblox delivers a published message to live servers subscribed to the topic and keeps
nothing; the emulator has no live servers, so it records each message instead and exposes
the record through the emulator-only `GET /_emulator/messages` endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .clock import Clock
from .db import Database

Surface = Literal["v1", "v2"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS published_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    universe TEXT NOT NULL,
    topic TEXT NOT NULL,
    message TEXT NOT NULL,
    publish_us INTEGER NOT NULL,
    api TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS published_by_topic ON published_messages (universe, topic, seq);
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PublishedMessage:
    seq: int
    universe: str
    topic: str
    message: str
    publish_time: datetime
    api: Surface

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.seq,
            "universe": self.universe,
            "topic": self.topic,
            "message": self.message,
            "publishTime": self.publish_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "api": self.api,
        }


class MessageLog:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        db.ensure_schema(SCHEMA)

    def record(self, universe: str, topic: str, message: str, api: Surface) -> PublishedMessage:
        now = self.clock.now().astimezone(UTC)
        publish_us = (now - _EPOCH) // timedelta(microseconds=1)
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO published_messages (universe, topic, message, publish_us, api) "
                "VALUES (?, ?, ?, ?, ?)",
                (universe, topic, message, publish_us, api),
            )
        seq = cursor.lastrowid
        assert seq is not None  # an AUTOINCREMENT insert always yields a rowid
        return PublishedMessage(seq, universe, topic, message, now, api)

    def recent(
        self, *, universe: str | None = None, topic: str | None = None, limit: int = 100
    ) -> list[PublishedMessage]:
        """The newest `limit` matching messages, oldest first (publish order)."""
        clauses: list[str] = []
        params: list[Any] = []
        if universe is not None:
            clauses.append("universe = ?")
            params.append(universe)
        if topic is not None:
            clauses.append("topic = ?")
            params.append(topic)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.conn.execute(
            f"SELECT * FROM published_messages {where} ORDER BY seq DESC LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [
            PublishedMessage(
                row["seq"],
                row["universe"],
                row["topic"],
                row["message"],
                _EPOCH + timedelta(microseconds=row["publish_us"]),
                row["api"],
            )
            for row in reversed(rows)
        ]
