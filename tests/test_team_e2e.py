"""The proof of team sync, as two developers on two machines would live it: two `dsm serve`
processes on one emulator (`--upstream`), set up with the `dsm team` command line, and the real
plugin in two harness instances with different Studio users. They see each other, a soft lock,
each other's changes within 5 s, one shared audit log (verified, and a tampered record caught
by `dsm audit verify`), and the Monitor view drawn only from counted requests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from dsm.emulator.app import EmulatorConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.opencloud.client import OpenCloudClient
from dsm.services.team.names import AUDIT_STORE, audit_key
from tests.test_serve_process import BANNER_END, Child, dsm_serve
from tools.luau_harness import LuauHarness
from tools.testing.emulator import start_emulator
from tools.testing.plugin import PLUGIN_SRC, PORT_SETTING, TOOLBAR_BUTTON, WIDGET_SETTING

U = 77
TOKEN_SETTING = "DataStoreManagerPro.token@"


async def dsm(*args: str, home: Path) -> tuple[int, str, str]:
    """The `dsm` command line in a child process, with the server's data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSM_")}
    env["DSM_HOME"] = str(home)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dsm.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@asynccontextmanager
async def serve(tmp_path: Path, name: str, upstream: str) -> AsyncIterator[Child]:
    async with dsm_serve(
        tmp_path / name, "--upstream", upstream, "--emulator-universe", str(U)
    ) as child:
        await child.wait_for(child.out, lambda line: BANNER_END in line)
        yield child


class Studio:
    """One developer's Studio: the real plugin in its own harness, with its own Studio user."""

    def __init__(self, server: Child, token: str, user_id: int, name: str) -> None:
        self.h = LuauHarness(PLUGIN_SRC, studio_user_id=user_id, user_names={user_id: name})
        self.h.plugin_settings[PORT_SETTING] = server.port
        self.h.plugin_settings[WIDGET_SETTING] = False
        self.h.plugin_settings[TOKEN_SETTING + server.base_url] = token

    async def start(self) -> None:
        self.h.run_scripts()
        await self.h.click_async(self.h.toolbar_button(TOOLBAR_BUTTON))
        await self.wait_text(f"Universe {U}")

    def has_text(self, text: str) -> bool:
        return any(text in t for t in self.h.texts())

    async def wait_text(self, text: str, timeout: float = 15.0) -> float:
        """Seconds it took until some drawn text contained `text`."""
        began = time.monotonic()
        try:
            await self.h.wait_until(lambda: self.has_text(text), timeout=timeout)
        except Exception as exc:
            raise AssertionError(
                f"{exc}: no text contains {text!r}; texts: {self.h.texts()}"
            ) from None
        return time.monotonic() - began

    def element(self, name: str) -> Any:
        found = [e for e in self.h.find_all(name) if e.node().rendered]
        assert len(found) == 1, (name, len(found), self.h.texts())
        return found[0]

    async def click(self, name: str) -> None:
        await self.h.click_async(self.element(name))

    async def open_universe(self) -> None:
        await self.click(f"Universe_{U}")
        await self.wait_text("data stores")

    async def to_universe(self) -> None:
        """From any screen of the universe, back to its data stores through the breadcrumb
        (folded into "…" on deep screens)."""
        shown = [e for e in self.h.find_all("Crumb2") if e.node().rendered]
        await self.click("Crumb2" if shown else "CrumbFolded")
        await self.wait_text("data stores")

    async def open_entry(self, datastore: str, key: str) -> None:
        await self.to_universe()
        await self.h.wait_until(lambda: self.has_text(datastore), timeout=15)
        rows = [e for e in self.h.find_all("DataStoreRow") if e.node().rendered]
        row = next(r for r in rows if any(c.text == datastore for c in r.node().walk()))
        await self.h.click_async(row)
        await self.wait_text(" in scope ")
        rows = [e for e in self.h.find_all("KeyRow") if e.node().rendered]
        row = next(r for r in rows if any(c.text == key for c in r.node().walk()))
        await self.h.click_async(row)
        await self.wait_text("Revision ")

    def close(self) -> None:
        self.h.close()


async def api(server: Child, token: str, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"{server.base_url}/api/v1{path}",
            headers={"Authorization": f"Bearer {token}"},
            json=body if body is not None else ({} if method != "GET" else None),
        ) as resp,
    ):
        answer = await resp.json()
        assert resp.status < 400, answer
        return answer


async def test_two_developers_on_two_servers(tmp_path: Path) -> None:
    runner, upstream, _ = await start_emulator(EmulatorConfig(limits=LimitsConfig(mode="off")))
    studios: list[Studio] = []
    try:
        async with (
            serve(tmp_path, "alice", upstream) as alice,
            serve(tmp_path, "bob", upstream) as bob,
        ):
            alice_home, bob_home = tmp_path / "alice" / "data", tmp_path / "bob" / "data"
            code, alice_token, err = await dsm(
                "tokens", "create", "--role", "admin", "--label", "Alice's Studio", home=alice_home
            )
            assert code == 0, err
            code, bob_token, err = await dsm(
                "tokens", "create", "--role", "admin", "--label", "Bob's Studio", home=bob_home
            )
            alice_token, bob_token = alice_token.strip(), bob_token.strip()

            # Team set-up from the command line: Alice turns it on and invites Bob's server.
            where = ["--server", alice.base_url, "--data-dir", str(alice_home)]
            code, out, err = await dsm(
                "team", "enable", "--universe", str(U), *where, home=alice_home
            )
            assert code == 0 and "team sync ON" in out and "team role admin" in out, out + err
            code, invite, err = await dsm(
                "team", "invite", "--universe", str(U), "--role", "editor", *where, home=alice_home
            )
            assert code == 0 and invite.startswith(f"DSM1-{U}-"), invite + err
            bob_where = ["--server", bob.base_url, "--data-dir", str(bob_home)]
            code, out, err = await dsm("team", "join", invite.strip(), *bob_where, home=bob_home)
            assert code == 0 and "team role editor" in out, out + err
            code, out, err = await dsm("team", "join", invite.strip(), *bob_where, home=bob_home)
            assert code == 1 and "already" in err  # single use

            await api(
                alice,
                alice_token,
                "POST",
                f"/universes/{U}/datastores/PlayerData/entries/Player_1",
                {"value_json": '{"coins":10}', "idempotency_key": "seed-player-1"},
            )

            alex = Studio(alice, alice_token, 1001, "AliceDev")
            sam = Studio(bob, bob_token, 2002, "BobDev")
            studios += [alex, sam]
            await alex.start()
            await sam.start()

            # Presence both ways, named by each Studio user.
            await sam.open_universe()
            await sam.click("TeamButton")
            await sam.wait_text("AliceDev (teammate's server")
            await alex.open_universe()
            await alex.click("TeamButton")
            await alex.wait_text("BobDev (teammate's server")
            # The status bar counts the teammate on the other machine too.
            await alex.wait_text("1 teammate: BobDev")
            await sam.wait_text("1 teammate: AliceDev")

            # Alice starts editing Player_1: her plugin takes the soft lock; Bob's sees it.
            await alex.open_entry("PlayerData", "Player_1")
            await alex.h.click_async(
                next(
                    e
                    for e in alex.h.find_all("TreeRow")
                    if e.node().rendered
                    and any((c.text or "") == "coins:" for c in e.node().walk())
                )
            )
            await alex.h.type_text_async(alex.element("Editor"), "25", True)
            await alex.wait_text("Unsaved changes")
            await sam.wait_text("AliceDev is editing PlayerData / global / Player_1")
            await sam.open_entry("PlayerData", "Player_1")
            await sam.wait_text("AliceDev is editing this entry")
            await sam.h.wait_until(lambda: bool(sam.h.find_all("BookmarkButton")), timeout=10)
            await sam.click("BookmarkButton")
            await sam.wait_text("Bookmarked for the team.")

            # Alice saves: Bob's open entry shows her change within 5 s.
            await alex.click("SaveButton")
            await alex.h.wait_until(lambda: bool(alex.h.find_all("SaveDialog")), timeout=10)
            await alex.click("ConfirmButton")
            await alex.wait_text("Saved Player_1")
            seen = await sam.wait_text("by AliceDev (through a teammate's server)", timeout=5.0)
            assert seen < 5.0
            assert sam.has_text('"coins": 25') or sam.has_text("25")

            # One shared audit log: Bob's Activity view lists Alice's write, by her name.
            await sam.to_universe()
            await sam.click("TeamButton")
            await sam.click("ActivityButton")
            await sam.wait_text("AliceDev · update PlayerData / global / Player_1")
            page = await api(bob, bob_token, "GET", f"/team/{U}/activity")
            write = next(i for i in page["items"] if i["kind"] == "write")
            assert write["person"]["label"] == "AliceDev" and write["key"] == "Player_1"

            code, out, err = await dsm(
                "audit", "verify", "--universe", str(U), *bob_where, home=bob_home
            )
            assert code == 0 and "OK: every record is intact" in out, out + err

            # Someone with a key rewrites a record behind the team's back: verify says where.
            seq = write["seq"]
            async with OpenCloudClient(api_key="any", base_url=upstream) as client:
                entry = await client.get_entry(U, AUDIT_STORE, audit_key(seq))
                record = json.loads(entry.value_json or "{}")
                record["chained"]["events"][0]["by"]["name"] = "SomeoneElse"
                await client.update_entry(
                    U, AUDIT_STORE, audit_key(seq), json.dumps(record), attributes=None, user_ids=[]
                )
            code, out, err = await dsm(
                "audit", "verify", "--universe", str(U), *where, home=alice_home
            )
            assert code == 1 and f"PROBLEM #{seq}: its content does not match its hash" in out, out
            await sam.click("VerifyButton")
            await sam.wait_text("The audit chain was tampered with")
            assert sam.has_text(f"#{seq}: its content does not match its hash")

            # Bob's bookmark is the team's: Alice's Team screen lists it.
            await alex.to_universe()
            await alex.click("TeamButton")
            await alex.wait_text("Bookmark: Player_1 · PlayerData / Player_1 (by BobDev)")

            # The Monitor view draws what the server counted (its pure part, Monitor.points, is
            # checked second by second in plugin/specs/UI/Monitor.spec.luau): the same total
            # as the series read at the same moment, and a drawn line.
            await alex.to_universe()
            await alex.click("Crumb1")
            await alex.click("MonitorButton")
            await alex.wait_text("Requests per second")
            await alex.wait_text("AVAILABLE · Team sync (universe 77)")

            def shown_total() -> int | None:
                for text in alex.h.texts():
                    found = re.search(r"([\d,]+) request\(s\) counted in the last 5 min", text)
                    if found:
                        return int(found.group(1).replace(",", ""))
                return None

            for _ in range(20):
                await alex.click("RefreshButton")
                await alex.h.wait_until(lambda: True)
                series = await api(alice, alice_token, "GET", "/monitor/traffic?window_seconds=300")
                await asyncio.sleep(0.3)
                await alex.h.step_async()
                if shown_total() == series["totals"]["calls"]:
                    break
            assert shown_total() == series["totals"]["calls"] > 0
            drawn = alex.element("RequestsChart").node().walk()
            assert any(n.name == "Segment" and n.rendered for n in drawn)
            assert alex.has_text("counted by this server's own Open Cloud client")
            assert alex.has_text("last 5 min · 1 s buckets")
    finally:
        for studio in studios:
            studio.close()
        await runner.cleanup()
