"""WriteJournal: durable, sealed record of every write, with reconciliation and undo support."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dsm.storage.cache import EntryCache
from dsm.storage.crypto import RecordCipher, new_key
from dsm.storage.journal import (
    JOURNAL_FILENAME,
    EntryImage,
    IdempotencyConflict,
    InvalidTransition,
    JournalUnavailable,
    Status,
    UndoNotPossible,
    UnknownRecord,
    WriteJournal,
)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> bytes:
    return new_key()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def journal(tmp_path: Path, key: bytes, clock: FakeClock) -> Iterator[WriteJournal]:
    opened = WriteJournal(tmp_path, RecordCipher(key), clock=clock)
    yield opened
    opened.close()


@contextmanager
def raw_db(path: Path) -> Iterator[sqlite3.Connection]:
    """Direct access to a storage file, as someone with the disk (or a bad disk) would have."""
    conn = sqlite3.connect(path)
    try:
        with conn:  # commits on success
            yield conn
    finally:
        conn.close()


OLD = EntryImage('{"coins":5}', {"attributes": {"tier": "gold"}, "userIds": [42], "revision": "v1"})
NEW = EntryImage('{"coins":500}', {"attributes": {"tier": "gold"}, "userIds": [42]})


def intent(journal: WriteJournal, **overrides: object) -> int:
    fields: dict[str, object] = {
        "actor_id": "tok_1",
        "actor_name": "Ada",
        "universe": 99,
        "datastore": "Players",
        "scope": "global",
        "key": "Player_42",
        "operation": "update",
        "before": OLD,
        "intended": NEW,
        "base_revision": "v1",
    }
    fields.update(overrides)
    return journal.record_intent(**fields).id  # type: ignore[arg-type]


def test_intent_then_applied_round_trip(journal: WriteJournal, clock: FakeClock) -> None:
    record = journal.record_intent(
        actor_id="tok_1",
        actor_name="Ada",
        universe=99,
        datastore="Players",
        scope="global",
        key="Player_42",
        operation="update",
        before=OLD,
        intended=NEW,
        base_revision="v1",
        idempotency_key="idem-1",
        job_id="job-7",
    )
    assert record.status is Status.INTENT
    assert (record.universe, record.at, record.outcome_at) == ("99", clock.now, None)
    assert record.before_exists and record.after_exists is None
    assert record.before_sha256 == hashlib.sha256(b'{"coins":5}').hexdigest()
    assert record.intended_sha256 == hashlib.sha256(b'{"coins":500}').hexdigest()

    clock.now += 2
    applied = journal.mark_applied(record.id, NEW, "v2")
    assert applied.status is Status.APPLIED and applied.outcome_at == clock.now
    assert (applied.after_exists, applied.after_revision) == (True, "v2")
    assert applied.after_sha256 == applied.intended_sha256

    detail = journal.get(record.id)
    assert detail.problems == ()
    assert detail.before == OLD and detail.after == NEW
    assert detail.before is not None and detail.before.metadata["userIds"] == [42]
    # Applying the same outcome again (a second reconciliation run) changes nothing.
    assert journal.mark_applied(record.id, NEW, "v2") == applied
    with pytest.raises(InvalidTransition, match="another outcome"):
        journal.mark_applied(record.id, NEW, "v3")


def test_ids_are_monotonic_and_never_reused(tmp_path: Path, key: bytes) -> None:
    with WriteJournal(tmp_path, RecordCipher(key)) as journal:
        ids = [intent(journal, key=f"k{i}") for i in range(3)]
        assert ids == sorted(ids) and len(set(ids)) == 3
    with raw_db(tmp_path / JOURNAL_FILENAME) as conn:
        conn.execute("DELETE FROM writes WHERE id = ?", (ids[-1],))
    with WriteJournal(tmp_path, RecordCipher(key)) as journal:
        assert intent(journal) > ids[-1]


def test_status_transitions(journal: WriteJournal) -> None:
    failed = intent(journal)
    assert (
        journal.mark_failed(failed, "409 precondition failed").reason == "409 precondition failed"
    )
    assert journal.mark_failed(failed, "again").status is Status.FAILED  # idempotent
    with pytest.raises(InvalidTransition, match="already FAILED"):
        journal.mark_applied(failed, NEW, "v2")
    with pytest.raises(InvalidTransition, match="in flight"):
        journal.mark_unknown(failed, "timeout")

    lost = intent(journal)
    assert journal.mark_unknown(lost, "connection reset").status is Status.UNKNOWN
    # Reconciliation settles an UNKNOWN either way.
    assert journal.mark_applied(lost, NEW, "v2").status is Status.APPLIED
    with pytest.raises(InvalidTransition):
        journal.mark_failed(lost, "too late")

    with pytest.raises(UnknownRecord, match="#12345"):
        journal.mark_applied(12345, None, None)
    with pytest.raises(UnknownRecord):
        journal.get(12345)
    with pytest.raises(ValueError, match="unknown write operation 'upsert'"):
        intent(journal, operation="upsert")


def test_idempotency_key_returns_the_first_outcome(journal: WriteJournal) -> None:
    first = intent(journal, idempotency_key="req-1")
    journal.mark_applied(first, NEW, "v2")
    with pytest.raises(IdempotencyConflict) as raised:
        intent(journal, idempotency_key="req-1", intended=EntryImage("1"))
    assert raised.value.existing.id == first
    assert raised.value.existing.status is Status.APPLIED
    found = journal.find_by_idempotency_key("req-1")
    assert found is not None and (found.id, found.after_revision) == (first, "v2")
    assert journal.find_by_idempotency_key("req-2") is None
    assert len(journal.list()) == 1  # the retry added nothing


def test_list_filters_and_pages_without_decrypting(journal: WriteJournal) -> None:
    for i in range(5):
        intent(journal, key=f"k{i % 2}", actor_id="tok_1" if i < 3 else "tok_2")
    intent(journal, universe=7, key="k0")
    assert [r.id for r in journal.list(limit=3)] == [6, 5, 4]
    assert [r.id for r in journal.list(limit=3, before_id=4)] == [3, 2, 1]
    assert [r.id for r in journal.list(universe=99, key="k0")] == [5, 3, 1]
    assert [r.id for r in journal.list(universe="7")] == [6]
    assert [r.id for r in journal.list(actor="tok_2")] == [5, 4]
    journal.mark_failed(2, "no")
    assert [r.id for r in journal.list(status=Status.FAILED)] == [2]
    assert all(r.before_sha256 == OLD.sha256 for r in journal.list())


def test_unknown_writes_of_a_key_are_found_by_the_open_index(journal: WriteJournal) -> None:
    """Every fresh read asks for its key's unknown writes: that must not scan the key's history."""
    for _ in range(300):
        journal.mark_applied(intent(journal), NEW, "v2")
    lost_first = intent(journal)
    journal.mark_unknown(lost_first, "the answer was lost")
    journal.mark_unknown(intent(journal, key="Player_7"), "another key")
    lost_second = intent(journal)
    journal.mark_unknown(lost_second, "the answer was lost")
    intent(journal)  # still in flight: not unknown
    found = journal.unknown_for(99, "Players", "Player_42")
    assert [r.id for r in found] == [lost_second, lost_first]
    assert journal.unknown_for("99", "Players", "Player_8") == []
    with raw_db(journal.path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM writes INDEXED BY writes_open"
            " WHERE status IN ('INTENT', 'UNKNOWN') AND status = 'UNKNOWN'"
            " AND universe = '99' AND datastore = 'Players' AND key = 'Player_42'"
        ).fetchall()
    assert any("writes_open" in str(row) for row in plan)


def test_pending_survives_a_crash(tmp_path: Path, key: bytes) -> None:
    """A real process records writes and dies without closing anything; a new one reconciles."""
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from dsm.storage.crypto import RecordCipher
        from dsm.storage.journal import EntryImage, WriteJournal

        journal = WriteJournal(Path({str(tmp_path)!r}), RecordCipher(bytes.fromhex({key.hex()!r})))
        def intent(key, op="update", before=EntryImage("1")):
            return journal.record_intent(
                actor_id="t", actor_name="A", universe=1, datastore="d", scope="global",
                key=key, operation=op, before=before, intended=EntryImage("2"),
            ).id
        done = intent("applied")
        journal.mark_applied(done, EntryImage("2"), "v2")
        intent("in-flight", op="create", before=None)
        lost = intent("lost")
        journal.mark_unknown(lost, "timeout")
        journal.mark_failed(intent("failed"), "403")
        os._exit(0)  # no close, no checkpoint: the WAL is all there is
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)
    assert (tmp_path / (JOURNAL_FILENAME + "-wal")).stat().st_size > 0

    with WriteJournal(tmp_path, RecordCipher(key)) as journal:
        pending = journal.pending()
        assert [(r.key, r.status) for r in pending] == [
            ("in-flight", Status.INTENT),
            ("lost", Status.UNKNOWN),
        ]
        assert pending[0].intended_sha256 == EntryImage("2").sha256
        applied = journal.get(1)
        assert applied.record.status is Status.APPLIED and applied.after == EntryImage("2")
        # Reconciliation: a re-read found the intended value, so the in-flight write landed.
        journal.mark_applied(pending[0].id, EntryImage("2"), "v1")
        journal.mark_failed(pending[1].id, "re-read shows the old value")
        assert journal.pending() == []


def crash_after_writes(directory: Path, key: bytes, count: int) -> None:
    """A separate process journals `count` applied writes, then dies without closing."""
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from dsm.storage.crypto import RecordCipher
        from dsm.storage.journal import EntryImage, WriteJournal

        journal = WriteJournal(Path({str(directory)!r}), RecordCipher(bytes.fromhex({key.hex()!r})))
        for i in range({count}):
            record = journal.record_intent(
                actor_id="t", actor_name="A", universe=1, datastore="d", scope="global",
                key=f"k{{i}}", operation="update", before=EntryImage(str(i) * 700),
            )
            journal.mark_applied(record.id, EntryImage(str(i + 1) * 700), f"v{{i}}")
        os._exit(0)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)


@pytest.mark.parametrize("keep_shm", [False, True])
def test_torn_wal_tail_recovers_to_the_last_complete_write(
    tmp_path: Path, key: bytes, keep_shm: bool
) -> None:
    source = tmp_path / "crashed"
    crash_after_writes(source, key, count=12)
    wal = (source / (JOURNAL_FILENAME + "-wal")).read_bytes()
    assert len(wal) > 0
    seen_counts: set[int] = set()
    for cut in sorted({*range(0, len(wal), max(1, len(wal) // 40)), len(wal) - 1}):
        target = tmp_path / f"cut-{cut}"
        target.mkdir()
        for path in source.iterdir():
            if path.name.endswith("-shm") and not keep_shm:
                continue
            (target / path.name).write_bytes(path.read_bytes())
        (target / (JOURNAL_FILENAME + "-wal")).write_bytes(wal[:cut])
        with WriteJournal(target, RecordCipher(key)) as journal:
            records = journal.list(limit=100)
            ids = sorted(r.id for r in records)
            assert ids == list(range(1, len(ids) + 1)), f"gap after cutting the WAL at {cut}"
            for record in records:
                # Never a half-written record: each one is a whole intent or a whole outcome.
                detail = journal.get(record.id)
                assert detail.problems == ()
                assert detail.before == EntryImage(str(record.id - 1) * 700)
                if record.status is Status.APPLIED:
                    assert detail.after == EntryImage(str(record.id) * 700)
                else:
                    assert record.status is Status.INTENT and detail.after is None
            assert journal.verify() == []
            seen_counts.add(len(ids))
    assert 0 in seen_counts and max(seen_counts) >= 10


def test_undo_plan_for_update_create_and_delete(journal: WriteJournal) -> None:
    update = intent(journal)
    journal.mark_applied(update, NEW, "v2")
    plan = journal.undo_plan(update)
    assert (plan.action, plan.value_json, plan.metadata) == ("write", OLD.value_json, OLD.metadata)
    assert (plan.expected_revision, plan.expected_sha256, plan.must_be_absent) == (
        "v2",
        NEW.sha256,
        False,
    )
    assert (plan.universe, plan.datastore, plan.scope, plan.key) == (
        "99",
        "Players",
        "global",
        "Player_42",
    )

    create = intent(journal, operation="create", key="New", before=None)
    journal.mark_applied(create, NEW, "c1")
    plan = journal.undo_plan(create)
    assert (plan.action, plan.value_json, plan.metadata) == ("delete", None, None)
    assert (plan.expected_revision, plan.must_be_absent) == ("c1", False)

    delete = intent(journal, operation="delete", key="Gone", intended=None)
    journal.mark_applied(delete, None, None)
    plan = journal.undo_plan(delete)
    assert (plan.action, plan.value_json, plan.metadata) == ("write", OLD.value_json, OLD.metadata)
    assert (plan.expected_revision, plan.expected_sha256, plan.must_be_absent) == (None, None, True)

    # The undo is itself journaled; once applied, the original cannot be undone twice.
    undo = intent(journal, operation="undo", before=NEW, intended=OLD, undoes=update)
    with pytest.raises(UndoNotPossible, match="has not finished"):
        journal.undo_plan(update)
    journal.mark_applied(undo, OLD, "v3")
    with pytest.raises(UndoNotPossible, match=f"already undone by write #{undo}"):
        journal.undo_plan(update)
    with pytest.raises(UnknownRecord):
        intent(journal, operation="undo", undoes=9999)


def test_undo_plan_refuses_unsettled_failed_and_empty_writes(journal: WriteJournal) -> None:
    pending = intent(journal)
    with pytest.raises(UndoNotPossible, match="not known yet"):
        journal.undo_plan(pending)
    journal.mark_failed(pending, "409")
    with pytest.raises(UndoNotPossible, match="failed"):
        journal.undo_plan(pending)
    nothing = intent(journal, operation="delete", before=None, intended=None)
    journal.mark_applied(nothing, None, None)
    with pytest.raises(UndoNotPossible, match="did not exist"):
        journal.undo_plan(nothing)


def test_image_moved_to_another_record_is_reported(tmp_path: Path, key: bytes) -> None:
    with WriteJournal(tmp_path, RecordCipher(key)) as journal:
        a = intent(journal, key="a/b", scope="c", before=EntryImage('"A"'))
        b = intent(journal, key="a", scope="b/c", before=EntryImage('"B"'))
        c = intent(journal, key="c", before=EntryImage('"C"'))
        for record_id in (a, b, c):
            journal.mark_applied(record_id, NEW, "v2")
    with raw_db(tmp_path / JOURNAL_FILENAME) as conn:
        # Same value hash columns, swapped sealed images: only the associated data differs.
        blob_a = conn.execute("SELECT before_blob FROM writes WHERE id = ?", (a,)).fetchone()[0]
        conn.execute(
            "UPDATE writes SET before_blob = ?, before_sha256 = ? WHERE id = ?",
            (blob_a, EntryImage('"A"').sha256, b),
        )
        conn.execute("UPDATE writes SET after_sha256 = 'forged' WHERE id = ?", (c,))

    with WriteJournal(tmp_path, RecordCipher(key)) as journal:
        assert journal.get(a).before == EntryImage('"A"')
        moved = journal.get(b)
        assert moved.before is None
        assert moved.problems == ("before-image failed authentication (tampered or moved)",)
        assert journal.get(c).problems == ("after-image does not match its recorded hash",)
        with pytest.raises(UndoNotPossible, match="failed authentication"):
            journal.undo_plan(b)
        assert [(p.record_id, p.problem.split(" ")[0]) for p in journal.verify()] == [
            (b, "before-image"),
            (c, "after-image"),
        ]
        # The rest of the journal keeps working.
        assert journal.undo_plan(a).value_json == '"A"'


def test_journal_under_another_key_reports_instead_of_failing(tmp_path: Path, key: bytes) -> None:
    with WriteJournal(tmp_path, RecordCipher(key)) as journal:
        intent(journal)
    with WriteJournal(tmp_path, RecordCipher(new_key())) as other:
        assert other.list()[0].before_sha256 == OLD.sha256  # audit metadata needs no key
        assert other.get(1).problems == ("before-image failed authentication (tampered or moved)",)


def test_corrupt_journal_file_is_reported_and_left_untouched(tmp_path: Path, key: bytes) -> None:
    garbage = os.urandom(8192)
    (tmp_path / JOURNAL_FILENAME).write_bytes(garbage)
    with pytest.raises(JournalUnavailable, match="left untouched; move it aside"):
        WriteJournal(tmp_path, RecordCipher(key))
    assert (tmp_path / JOURNAL_FILENAME).read_bytes() == garbage


def test_journal_is_durable_wal_full_sync(journal: WriteJournal) -> None:
    conn = sqlite3.connect(journal.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert journal._db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_canary_value_never_reaches_disk_in_clear(tmp_path: Path, key: bytes) -> None:
    canary = "CANARY-9d1f7c-valuë"
    canary_meta = "CANARY-META-4b2e"
    cipher = RecordCipher(key)
    cache = EntryCache(tmp_path, cipher)
    journal = WriteJournal(tmp_path, cipher)
    value = f'{{"secret":"{canary}"}}'
    meta = {"attributes": {"note": canary_meta}, "userIds": [1]}
    cache.put_entry(1, "ds", "global", "k", value_json=value, metadata=meta, revision="v1")
    cache.put_list("keys", 1, "ds", "global", value=[canary])
    record = journal.record_intent(
        actor_id="t",
        actor_name="A",
        universe=1,
        datastore="ds",
        scope="global",
        key="k",
        operation="update",
        before=EntryImage(value, meta),
        intended=EntryImage(value, meta),
    )
    journal.mark_applied(record.id, EntryImage(value, meta), "v2")

    def assert_nowhere_in_clear() -> None:
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert any(p.name.endswith("-wal") for p in files) or not cache.stats().disk_enabled
        for path in files:
            raw = path.read_bytes()
            for secret in (canary, canary_meta):
                for encoding in ("utf-8", "utf-16-le"):
                    assert secret.encode(encoding) not in raw, f"{secret} in clear in {path.name}"

    assert_nowhere_in_clear()  # while open: recent writes live in the -wal files
    # And it all reads back.
    hit = cache.get_entry(1, "ds", "global", "k")
    assert hit is not None and canary in hit.value_json
    assert journal.get(record.id).before == EntryImage(value, meta)
    cache.close()
    journal.close()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes()
