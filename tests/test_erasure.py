"""Right to erasure: find a player's entries, scrub the server's copies, leave no trace.

The server writes the player's data through its journaled write path (journal, cache), backups
archive it, then the player is erased: Open Cloud first (as the erasure job will), then the
cache, the journal and the archives. Every file of the data dir is searched afterwards, as
test_canary does, for the user id, the values and the very ciphertexts that held them.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from dsm.services.backups.archive import ArchiveEntry, ArchiveReader, ArchiveWriter, EntryName
from dsm.services.backups.folder import backups_dir
from dsm.services.backups.keyslots import ArchiveKeys
from dsm.services.entries import EntryRef
from dsm.services.erasure import (
    HOOKS_FOR_WIRING,
    Action,
    ErasurePatterns,
    ErasureReport,
    ErasureRules,
    OrderedTarget,
    Reason,
    RobloxAction,
    find_candidates,
    metadata_from_entries,
    scrub_archives,
    scrub_cache,
    scrub_journal,
)
from dsm.services.jobs.erasure_files import scrub_exports
from dsm.services.jobs.formats import ExportEntry, JsonLinesWriter
from dsm.services.ordered import OrderedRef
from dsm.storage.crypto import new_key
from dsm.storage.journal import ERASED_KEY, UndoNotPossible
from dsm.storage.vault import KdfParams
from shared_schema.common import Backend
from shared_schema.entries import StoreKind

from . import test_pointintime
from .test_canary import leak_forms, scan_tree
from .test_pointintime import DS, LB, Actor, U, World, at

world = test_pointintime.world  # the fixture: server, journal and game on a manual clock

USER = 9081726354
OTHER = 555


def patterns() -> ErasurePatterns:
    return ErasurePatterns(
        standard={"*": ["Player_{userId}", "{userId}"], "inventory": ["{userId}_inventory"]},
        ordered={"wins": OrderedTarget(scopes=["global"], ids=["{userId}"])},
    )


def canary(tag: str) -> str:
    return f"CANARY-dsm-7f3a9c-{tag}-{secrets.token_hex(16)}"


async def read_all(w: World) -> list[ArchiveEntry]:
    """What a backup reads (every entry of both stores, then the ordered one)."""
    out = []
    for ds in (DS, "inventory"):
        async for listed in w.game.iter_entries(U, ds, scope="-"):
            entry = await w.game.get_entry(U, ds, listed.key, scope=listed.scope)
            out.append(ArchiveEntry.from_standard(entry, ds, w.clock.now()))
    async for ordered in w.game.ordered_iter(U, LB):
        out.append(ArchiveEntry.from_ordered(ordered, LB, "global", w.clock.now()))
    return out


def journal_blobs(path: Path) -> list[bytes]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT before_blob, after_blob FROM writes WHERE key LIKE ? OR key LIKE ?",
            (f"%{USER}%", "guild%"),
        ).fetchall()
    return [bytes(b) for row in rows for b in row if b is not None]


def cache_blobs(path: Path) -> list[bytes]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return [bytes(r[0]) for r in db.execute("SELECT blob FROM records").fetchall()]


async def test_erasure_finds_the_player_and_leaves_no_trace(world: World) -> None:
    w = world
    secret, inventory_secret = canary("save"), canary("inventory")
    data_key = new_key()
    archive_keys = ArchiveKeys(
        data_key=data_key, passphrase="portable passphrase", kdf=KdfParams(n=2**10)
    )
    # The player's data, written by the server (journaled) and by the game.
    w.to(at(12, 0))
    player = EntryRef(U, DS, "global", f"Player_{USER}")
    await w.plane.entries.create(
        Actor(),
        player,
        json.dumps({"secret": secret, "coins": 1}),
        {"by": "server"},
        [USER],
        w.idem(),
    )
    w.to(at(12, 10))
    await w.server_set(f"Player_{USER}", {"secret": secret, "coins": 2})
    await w.game.create_entry(
        U, "inventory", f"{USER}_inventory", json.dumps([inventory_secret]), scope="s2"
    )
    await w.plane.entries.create(
        Actor(),
        EntryRef(U, DS, "global", "guild_7"),
        '{"members":2}',
        None,
        [USER, OTHER],
        w.idem(),
    )
    await w.plane.ordered.create(Actor(), OrderedRef(U, LB, "global", str(USER)), 99, w.idem())
    await w.plane.entries.create(
        Actor(), EntryRef(U, DS, "global", "Player_1"), '{"keep":"me"}', None, [1], w.idem()
    )
    # Cached reads, and a cached key list naming the player's key.
    await w.plane.entries.get(player)
    w.plane.cache.put_list("keys", U, DS, "global", value=[f"Player_{USER}", "Player_1"])
    # Backups: two archives, and the leftover of a backup a crash interrupted.
    folder = backups_dir(w.tmp)
    snapshot = await read_all(w)
    for name in ("a.dsmbak", "b.dsmbak"):
        with ArchiveWriter(
            folder / name, universe_id=U, backend=Backend.EMULATOR, keys=archive_keys
        ) as writer:
            for entry in snapshot:
                writer.add(entry)
            writer.finish()
    crashed = ArchiveWriter(
        folder / "c.dsmbak", universe_id=U, backend=Backend.EMULATOR, keys=archive_keys
    )
    for entry in snapshot:
        crashed.add(entry)
    assert crashed._file is not None
    crashed._file.flush()
    # An export of both stores, as an export job writes it (the exports folder of the data dir).
    exports = w.tmp / "exports"
    exports.mkdir()
    with (
        open(exports / "everything.jsonl", "w", encoding="utf-8") as out,
        JsonLinesWriter(out) as export,
    ):
        for entry in snapshot:
            if entry.name.kind is StoreKind.STANDARD:
                export.write(ExportEntry(entry.name.key, entry.value_json, entry.name.scope,
                                         entry.attributes, list(entry.user_ids)))  # fmt: skip

    # Before: the search finds the player in clear (the journal names keys), so it can fail.
    user_forms = [str(USER).encode(), str(USER).encode("utf-16-le")]
    _, hits = scan_tree(w.tmp, user_forms)
    assert any("journal.sqlite3" in path for path in hits)
    assert str(exports / "everything.jsonl") in hits
    sealed = journal_blobs(w.journal.path) + cache_blobs(w.plane.cache.path)
    sealed_forms = [blob[i : i + 48] for blob in sealed for i in range(13, len(blob) - 48, 4096)]
    for name in ("a.dsmbak", "b.dsmbak"):
        with ArchiveReader(folder / name, archive_keys) as reader:
            frames = reader.manifest.frames
        raw = (folder / name).read_bytes()
        sealed_forms += [raw[o + 30 : o + 78] for o in frames]
    assert len(sealed_forms) >= 9

    # 1. Find: pattern keys in every scope, the ordered id, user ids from the newest backup.
    rules = ErasureRules(USER, patterns())
    with ArchiveReader(folder / "b.dsmbak", archive_keys) as reader:
        plan = await find_candidates(
            w.plane.upstream.call,
            U,
            rules,
            metadata=metadata_from_entries(reader.entries()),
            metadata_source="backup b",
        )
    found = {
        (c.name.kind, c.name.datastore, c.name.scope, c.name.key): c.match for c in plan.candidates
    }
    assert found == {
        (StoreKind.STANDARD, DS, "global", f"Player_{USER}"): found[
            (StoreKind.STANDARD, DS, "global", f"Player_{USER}")
        ],
        (StoreKind.STANDARD, "inventory", "s2", f"{USER}_inventory"): found[
            (StoreKind.STANDARD, "inventory", "s2", f"{USER}_inventory")
        ],
        (StoreKind.STANDARD, DS, "global", "guild_7"): found[
            (StoreKind.STANDARD, DS, "global", "guild_7")
        ],
        (StoreKind.ORDERED, LB, "global", str(USER)): found[
            (StoreKind.ORDERED, LB, "global", str(USER))
        ],
    }
    assert found[(StoreKind.STANDARD, DS, "global", "guild_7")].action is Action.REMOVE_USER_ID
    assert (
        found[(StoreKind.STANDARD, "inventory", "s2", f"{USER}_inventory")].reason
        is Reason.KEY_PATTERN
    )
    assert found[(StoreKind.ORDERED, LB, "global", str(USER))].reason is Reason.ORDERED_ID
    assert len(plan.deletes) == 3 and len(plan.metadata_edits) == 1

    # 2. Open Cloud, as the erasure job will do it: through the journaled write path.
    w.to(at(13, 0))
    done: list[RobloxAction] = []
    for candidate in plan.candidates:
        name = candidate.name
        if name.kind is StoreKind.ORDERED:
            await w.plane.ordered.delete(
                Actor(), OrderedRef(U, name.datastore, name.scope, name.key), w.idem()
            )
        elif candidate.match.action is Action.DELETE_ENTRY:
            await w.plane.entries.delete(
                Actor(), EntryRef(U, name.datastore, name.scope, name.key), None, w.idem()
            )
        else:
            ref = EntryRef(U, name.datastore, name.scope, name.key)
            current = await w.game.get_entry(U, name.datastore, name.key, scope=name.scope)
            await w.plane.entries.update(
                Actor(),
                ref,
                current.value_json or "null",
                current.revision_id,
                lambda a: a,
                lambda users: [u for u in users if u != USER],
                w.idem(),
            )
        done.append(RobloxAction.done(candidate, w.clock.now()))

    # 3. This server's copies.
    local = [
        scrub_cache(w.plane.cache, clock=w.clock.now),
        scrub_journal(w.journal, rules, request_id="er_test1", clock=w.clock.now),
        scrub_archives(
            sorted(folder.glob("*.dsmbak")) + sorted(folder.glob(".*.partial")),
            archive_keys,
            rules,
            request_id="er_test1",
            clock=w.clock.now,
        ),
        scrub_exports(exports, rules, {}, clock=w.clock.now),
    ]
    crashed._file.close()
    crashed._file = None

    # After: no file of the data dir holds the user id, the values, or the old ciphertexts.
    forms = user_forms + leak_forms(secret) + leak_forms(inventory_secret) + sealed_forms
    seen, hits = scan_tree(w.tmp, forms)
    assert hits == {}
    assert {
        "journal.sqlite3",
        "cache.sqlite3",
        "backups/a.dsmbak",
        "backups/b.dsmbak",
        "exports/everything.jsonl",
    } <= set(seen)
    exported = [json.loads(line) for line in (exports / "everything.jsonl").open()]
    assert [(e["key"], e["user_ids"]) for e in exported] == [
        ("Player_1", [1]),
        ("guild_7", [OTHER]),
    ]
    # ... nor anything the server can still decrypt.
    for record in w.journal.list(limit=1000):
        detail = w.journal.get(record.id)
        assert detail.problems == ()
        for image in (detail.before, detail.after):
            if image is not None:
                text = json.dumps([image.value_json, image.metadata], default=str)
                assert str(USER) not in text and "CANARY" not in text
    for name in ("a.dsmbak", "b.dsmbak"):
        with ArchiveReader(folder / name, archive_keys) as reader:
            assert reader.verify().ok
            kept = list(reader.entries())
            assert reader.manifest.erasures[0].request_id == "er_test1"
        assert sorted(e.name.key for e in kept) == ["Player_1", "guild_7"]
        assert all(USER not in e.user_ids and "CANARY" not in e.value_json for e in kept)
        assert next(e for e in kept if e.name.key == "guild_7").user_ids == (OTHER,)
    # Redacted writes cannot be undone (their images are gone); the others still can.
    redacted = [r for r in w.journal.list(limit=1000) if r.key == ERASED_KEY]
    assert len(redacted) >= 5
    with pytest.raises(UndoNotPossible, match="erased for a right-to-erasure request"):
        w.journal.undo_plan(redacted[0].id)
    keep = next(r for r in w.journal.list(limit=1000) if r.key == "Player_1")
    assert w.journal.undo_plan(keep.id).action == "delete"

    # 4. The report: what was removed where and when, what Roblox keeps and until when.
    report = ErasureReport(
        request_id="er_test1",
        user_id=USER,
        universe_id=U,
        backend=Backend.EMULATOR,
        requested_at=at(12, 55),
        completed_at=w.clock.now(),
        searched=plan.searched,
        not_searched=plan.not_searched,
        roblox=done,
        local=local,
    )
    doc = report.as_json()
    assert [s["where"] for s in doc["local"]] == ["cache", "journal", "backups", "exports"]
    assert doc["local"][2]["removed"] == 6 and doc["local"][2]["changed"] == 2
    until = (at(13, 0) + timedelta(days=30)).strftime("%Y-%m-%d %H:%M")
    assert any(f"until {until}Z" in line for line in doc["retained_by_roblox"])
    text = report.text()
    assert "deleted players/global/Player_9081726354" in text
    assert "user id removed from players/global/guild_7" in text
    assert "deleted ordered wins/global/9081726354" in text
    assert "Roblox keeps earlier versions and the deletion tombstone until" in text
    assert "interrupted backup file deleted" in text
    assert "exports/everything.jsonl: rewritten, 2 entries removed, 1 with the user id" in text
    assert len(HOOKS_FOR_WIRING) >= 2


def test_an_archive_the_server_cannot_open_is_reported_not_scrubbed(tmp_path: Path) -> None:
    path = tmp_path / "portable.dsmbak"
    entry = ArchiveEntry(
        EntryName(StoreKind.STANDARD, "players", "global", f"Player_{USER}"), "1", at(12, 0)
    )
    with ArchiveWriter(
        path,
        universe_id=U,
        backend=Backend.LIVE,
        keys=ArchiveKeys(passphrase="elsewhere!", kdf=KdfParams(n=2**10)),
    ) as writer:
        writer.add(entry)
        writer.finish()
    before = path.read_bytes()
    outcome = scrub_archives(
        [path], ArchiveKeys(data_key=new_key()), ErasureRules(USER, patterns()), request_id="er_2"
    )
    assert outcome.removed == 0 and path.read_bytes() == before
    assert (
        len(outcome.problems) == 1
        and "was not scrubbed: this archive is protected by a passphrase" in outcome.problems[0]
    )


def test_patterns_are_validated_and_kept_in_the_data_dir(tmp_path: Path) -> None:
    assert ErasurePatterns.load(tmp_path).standard == {"*": ["{userId}", "Player_{userId}"]}
    patterns().save(tmp_path)
    assert ErasurePatterns.load(tmp_path) == patterns()
    for bad in ("Player_", "Player_{userId}_{x}", "{userId}" + "x" * 40):
        with pytest.raises(ValueError):
            ErasurePatterns(standard={"*": [bad]})
    (tmp_path / "erasure-patterns.json").write_text('{"standard": {"*": ["nope"]}}')
    with pytest.raises(ValueError, match=r"erasure-patterns\.json is not valid"):
        ErasurePatterns.load(tmp_path)
    rules = ErasureRules(42, patterns())
    assert rules.match(EntryName(StoreKind.STANDARD, "x", "global", "42")) is not None
    assert rules.match(EntryName(StoreKind.STANDARD, "x", "global", "42_inventory")) is None
    assert rules.match(EntryName(StoreKind.STANDARD, "inventory", "s", "42_inventory")) is not None
    assert rules.match(EntryName(StoreKind.STANDARD, "x", "global", "420")) is None
    with pytest.raises(ValueError):
        ErasureRules(0, patterns())
