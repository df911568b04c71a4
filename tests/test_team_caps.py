"""What team sync may spend of the game's memory store (a virtual clock, no waiting), and who
the journal, the events and the audit log name (the Studio user, or unknown)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dsm.services.team.governor import Caps, Governor
from shared_schema.common import Role
from tools.testing.server import entry_path, idem, running_server


class VirtualTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_requests_stay_under_the_cap_and_background_leaves_room() -> None:
    time = VirtualTime()
    governor = Governor(Caps(max_rpm=10), clock=time, sleep=time.sleep)
    for _ in range(8):  # background sync may use 80 %
        assert await governor.slot(background=True)
    # An interactive request (a lock) may use the rest of the cap at once...
    assert await governor.slot(background=False)
    assert await governor.slot(background=False)
    assert time.slept == [] and governor.used_last_minute() == 10
    # ...but not more: at the cap it is refused if no slot frees in time.
    assert not await governor.slot(background=False, wait_at_most=1.0)
    # Background sync waits until the oldest requests leave the 60 s window.
    assert await governor.slot(background=True)
    assert time.now >= 1060.0 and governor.held_back == 2
    assert governor.used_last_minute() == 1


def test_bytes_and_item_size_are_capped() -> None:
    time = VirtualTime()
    governor = Governor(Caps(max_bytes=2000, max_item_bytes=1024), clock=time)
    assert not governor.fits("c/1", 1025)  # one item too large
    assert governor.fits("c/1", 1000)
    governor.stored("c/1", 1000, ttl=30)
    governor.stored("p/me", 900, ttl=30)
    assert not governor.fits("c/2", 200)  # 2100 > 2000
    assert governor.fits("p/me", 1000)  # replacing an item counts the difference
    time.now += 31  # both expired
    assert governor.bytes_stored() == 0 and governor.fits("c/2", 1000)


async def test_journal_events_and_audit_name_the_studio_user_or_say_unknown(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        studio = await server.pair("Studio on Alex's laptop", role=Role.ADMIN)
        script = await server.pair("nightly export")
        status, opened = await server.call(
            "POST",
            "/sessions",
            studio,
            json={
                "client_name": "Studio",
                "studio_user_id": 1001,
                "studio_user_name": "AlexBuilds",
            },
        )
        assert status == 200 and opened["person"]["label"] == "AlexBuilds"
        status, tokens = await server.call("GET", "/tokens", studio)
        recorded = {t["name"]: t.get("studio_user_name") for t in tokens["tokens"]}
        assert recorded == {"Studio on Alex's laptop": "AlexBuilds", "nightly export": None}
        status, _ = await server.call("POST", "/team/1/enable", studio)
        assert status == 200
        for token, key in ((studio, "a"), (script, "b")):
            status, _ = await server.call(
                "POST",
                entry_path(1, "PlayerData", key),
                token,
                json={"value_json": "1", "idempotency_key": idem()},
            )
            assert status == 200
        status, journal = await server.call("GET", "/journal", studio)
        people = {i["key"]: i["person"] for i in journal["items"]}
        assert people["a"] == {
            "studio_user_id": 1001,
            "studio_user_name": "AlexBuilds",
            "token_name": "Studio on Alex's laptop",
            "label": "AlexBuilds",
        }
        assert people["b"] == {
            "token_name": "nightly export",
            "label": "nightly export (Studio user unknown)",
        }
        status, events = await server.call("GET", "/events?cursor=0&timeout=0", studio)
        changed = [e["payload"] for e in events["events"] if e["type"] == "entry.changed"]
        assert [c["person"]["label"] for c in changed] == [
            "AlexBuilds",
            "nightly export (Studio user unknown)",
        ]
        for _ in range(100):
            status, page = await server.call("GET", "/team/1/activity", studio)
            labels = {i["key"]: i["person"]["label"] for i in page["items"] if i["kind"] == "write"}
            if len(labels) == 2:
                break
            await asyncio.sleep(0.1)
        assert labels == {"a": "AlexBuilds", "b": "nightly export (Studio user unknown)"}
