"""EntryCache: encrypted two-tier read cache (memory LRU over SQLite)."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dsm.storage.cache import CACHE_FILENAME, CacheConfig, EntryCache
from dsm.storage.crypto import NONCE_BYTES, RecordCipher, new_key, slot
from dsm.storage.sqlite import pack

MIB = 1024 * 1024
# A sealed blob is the plaintext plus format byte, nonce and GCM tag.
SEAL_OVERHEAD = 1 + NONCE_BYTES + 16


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cipher() -> RecordCipher:
    return RecordCipher(new_key())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@contextmanager
def raw_db(path: Path) -> Iterator[sqlite3.Connection]:
    """Direct access to a storage file, as someone with the disk (or a bad disk) would have."""
    conn = sqlite3.connect(path)
    try:
        with conn:  # commits on success
            yield conn
    finally:
        conn.close()


def entry_packed_size(value_json: str, metadata: dict[str, Any] | None = None) -> int:
    return len(pack({"v": value_json, "m": metadata or {}}))


def put(cache: EntryCache, key: str, value: str = "1", *, ds: str = "ds", u: int = 1) -> None:
    cache.put_entry(u, ds, "global", key, value_json=value, metadata={}, revision="r1")


def value_of(cache: EntryCache, key: str, *, ds: str = "ds", u: int = 1) -> str | None:
    found = cache.get_entry(u, ds, "global", key)
    return None if found is None else found.value_json


def rows(directory: Path) -> list[tuple[Any, ...]]:
    """Raw rows of a closed cache file, oldest use first."""
    with raw_db(directory / CACHE_FILENAME) as conn:
        return conn.execute(
            "SELECT rowid, revision, fetched_ms, blob FROM records ORDER BY used"
        ).fetchall()


def test_entry_round_trip_through_memory_and_disk(
    tmp_path: Path, cipher: RecordCipher, clock: FakeClock
) -> None:
    metadata = {
        "revision": "08DC1",
        "createdTime": "2024-07-29T10:00:00Z",
        "attributes": {"tier": "gold", "nested": [1, 2.5, None, True]},
        "userIds": [1, 2**62],
    }
    value = '{"coins":9007199254740993,"inventory":[],"name":"ünï"}'
    cache = EntryCache(tmp_path, cipher, clock=clock)
    cache.put_entry(
        42, "Players", "global", "Player_1", value_json=value, metadata=metadata, revision="08DC1"
    )
    hit = cache.get_entry(42, "Players", "global", "Player_1")
    assert hit is not None
    assert (hit.value_json, hit.metadata, hit.revision) == (value, metadata, "08DC1")
    assert hit.fetched_at == clock.now and hit.age_seconds == 0.0 and not hit.stale
    # The caller may mutate what it got; the cached copy must not change with it.
    hit.metadata["attributes"]["tier"] = "changed"
    again = cache.get_entry(42, "Players", "global", "Player_1")
    assert again is not None and again.metadata == metadata
    assert cache.get_entry(42, "Players", "global", "Player_2") is None
    cache.close()

    reopened = EntryCache(tmp_path, cipher, clock=clock)
    from_disk = reopened.get_entry(42, "Players", "global", "Player_1")
    assert (
        from_disk is not None and from_disk.value_json == value and from_disk.metadata == metadata
    )
    assert reopened.stats().disk_hits == 1
    # Promoted to memory by the disk hit.
    reopened.get_entry(42, "Players", "global", "Player_1")
    stats = reopened.stats()
    assert (stats.memory_hits, stats.disk_hits, stats.misses) == (1, 1, 0)
    reopened.close()


def test_list_round_trip_and_levels(tmp_path: Path, cipher: RecordCipher) -> None:
    with EntryCache(tmp_path, cipher) as cache:
        page = {"keys": ["a", "b"], "nextPageToken": "tok"}
        cache.put_list("keys", 1, "ds", "global", "", value=page)
        cache.put_list("datastores", 1, None, "", value=["ds", "other"])
        # A universe-level list and a data store named "" are different slots.
        cache.put_list("datastores", 1, "", "", value=["never-mixed"])
        found = cache.get_list("keys", 1, "ds", "global", "")
        assert found is not None and found.value == page
        stores = cache.get_list("datastores", 1, None, "")
        assert stores is not None and stores.value == ["ds", "other"]
        assert cache.get_list("keys", 1, "ds", "global", "tok") is None
        assert cache.get_list("keys", 2, "ds", "global", "") is None
    with EntryCache(tmp_path, cipher) as reopened:
        found = reopened.get_list("keys", 1, "ds", "global", "")
        assert found is not None and found.value == page


def test_names_that_collide_when_concatenated_never_mix(
    tmp_path: Path, cipher: RecordCipher
) -> None:
    slots = [
        (1, "a/b", "c", "k"),
        (1, "a", "b/c", "k"),
        (1, "a", "b", "c/k"),
        (1, "a/b/c", "", "k"),
        (1, "ab", "c", "k"),
        (12, "a", "b", "k"),
        (1, "2a", "b", "k"),
    ]
    cache = EntryCache(tmp_path, cipher)
    for i, (u, ds, scope, key) in enumerate(slots):
        cache.put_entry(u, ds, scope, key, value_json=str(i), metadata={}, revision="r")
    cache.close()
    cache = EntryCache(tmp_path, cipher)  # from disk, where only tags are stored
    for i, (u, ds, scope, key) in enumerate(slots):
        hit = cache.get_entry(u, ds, scope, key)
        assert hit is not None and hit.value_json == str(i)
    # Invalidating store "a" must leave "a/b", "a/b/c" and "ab" alone.
    assert cache.invalidate_datastore(1, "a") == 2
    assert cache.get_entry(1, "a/b", "c", "k") is not None
    assert cache.get_entry(1, "a/b/c", "", "k") is not None
    assert cache.get_entry(1, "ab", "c", "k") is not None
    assert cache.get_entry(1, "a", "b/c", "k") is None
    cache.close()


def test_names_are_not_stored_in_clear(tmp_path: Path, cipher: RecordCipher) -> None:
    with EntryCache(tmp_path, cipher) as cache:
        cache.put_entry(
            987654321,
            "SecretStoreName",
            "global",
            "Player_555123",
            value_json="1",
            metadata={},
            revision="r",
        )
        cache.put_list("keys", 987654321, "SecretStoreName", "global", "Player_555123", value=[])
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for name in (b"SecretStoreName", b"Player_555123", b"987654321"):
        assert name not in raw


def test_row_moved_to_another_slot_is_discarded(
    tmp_path: Path, cipher: RecordCipher, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EntryCache(tmp_path, cipher, CacheConfig(memory_bytes=0))
    put(cache, "victim", '"victim value"')
    put(cache, "attacker", '"attacker value"')
    cache.close()
    victim, attacker = rows(tmp_path)
    with raw_db(tmp_path / CACHE_FILENAME) as conn:
        conn.execute("UPDATE records SET blob = ? WHERE rowid = ?", (attacker[3], victim[0]))

    cache = EntryCache(tmp_path, cipher, CacheConfig(memory_bytes=0))
    with caplog.at_level(logging.WARNING, logger="dsm.storage.cache"):
        assert cache.get_entry(1, "ds", "global", "victim") is None
    assert "discarded an unreadable entry record" in caplog.text
    assert '"attacker value"' not in caplog.text
    assert value_of(cache, "attacker") == '"attacker value"'
    stats = cache.stats()
    assert (stats.discarded, stats.disk_rows) == (1, 1)
    cache.close()
    assert len(rows(tmp_path)) == 1  # the bad row is gone from the file


def test_tampered_revision_or_fetch_time_is_discarded(tmp_path: Path, cipher: RecordCipher) -> None:
    cache = EntryCache(tmp_path, cipher, CacheConfig(memory_bytes=0))
    put(cache, "a")
    put(cache, "b")
    cache.close()
    a, b = rows(tmp_path)
    with raw_db(tmp_path / CACHE_FILENAME) as conn:
        conn.execute("UPDATE records SET revision = 'r2' WHERE rowid = ?", (a[0],))
        conn.execute("UPDATE records SET fetched_ms = fetched_ms + 1 WHERE rowid = ?", (b[0],))
    with EntryCache(tmp_path, cipher, CacheConfig(memory_bytes=0)) as cache:
        assert value_of(cache, "a") is None
        assert value_of(cache, "b") is None
        assert cache.stats().discarded == 2


def test_corrupt_rows_are_discarded_not_raised(
    tmp_path: Path, cipher: RecordCipher, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EntryCache(tmp_path, cipher, CacheConfig(memory_bytes=0))
    for key in ("flipped", "short", "not-msgpack", "wrong-shape", "good"):
        put(cache, key, f'"{key}"')
    cache.close()
    flipped, short, not_msgpack, wrong_shape, _ = rows(tmp_path)
    bad_blob = bytearray(flipped[3])
    bad_blob[len(bad_blob) // 2] ^= 0x01

    def resealed(row: tuple[Any, ...], key: str, plaintext: bytes) -> bytes:
        # Correctly sealed for its slot, so only the decoding step can reject it.
        return cipher.seal(plaintext, slot("entry", "1", "ds", "global", key, row[1], row[2]))

    with raw_db(tmp_path / CACHE_FILENAME) as conn:
        for rowid, blob in (
            (flipped[0], bytes(bad_blob)),
            (short[0], b"\x01abc"),
            (not_msgpack[0], resealed(not_msgpack, "not-msgpack", b"\xc1\xc1\xc1")),
            (wrong_shape[0], resealed(wrong_shape, "wrong-shape", pack({"v": 5, "m": []}))),
        ):
            conn.execute("UPDATE records SET blob = ? WHERE rowid = ?", (blob, rowid))

    with caplog.at_level(logging.WARNING, logger="dsm.storage.cache"):
        cache = EntryCache(tmp_path, cipher, CacheConfig(memory_bytes=0))
        for key in ("flipped", "short", "not-msgpack", "wrong-shape"):
            assert value_of(cache, key) is None
        assert value_of(cache, "good") == '"good"'
    assert caplog.text.count("discarded an unreadable entry record") == 4
    stats = cache.stats()
    assert (stats.discarded, stats.misses, stats.disk_hits, stats.disk_rows) == (4, 4, 1, 1)
    cache.close()


def test_garbage_cache_file_is_moved_aside(
    tmp_path: Path, cipher: RecordCipher, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = os.urandom(20_000)
    (tmp_path / CACHE_FILENAME).write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="dsm.storage.cache"):
        cache = EntryCache(tmp_path, cipher)
    assert "was unusable" in caplog.text
    assert (tmp_path / (CACHE_FILENAME + ".corrupt")).read_bytes() == garbage
    assert cache.stats().disk_enabled
    put(cache, "k", "7")
    cache.close()
    with EntryCache(tmp_path, cipher) as reopened:
        assert value_of(reopened, "k") == "7"


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.33, 0.5, 0.9, 0.999])
def test_truncated_cache_file_never_breaks_start_or_reads(
    tmp_path: Path, cipher: RecordCipher, fraction: float
) -> None:
    values = {f"k{i}": f'"{i}-' + "x" * 3000 + '"' for i in range(40)}
    cache = EntryCache(tmp_path, cipher, CacheConfig(memory_bytes=0))
    for key, value in values.items():
        put(cache, key, value)
    cache.close()
    path = tmp_path / CACHE_FILENAME
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(int(size * fraction))

    cache = EntryCache(tmp_path, cipher, CacheConfig(memory_bytes=0))
    for key, value in values.items():
        assert value_of(cache, key) in (None, value)
    put(cache, "after", "1")
    assert value_of(cache, "after") == "1"
    cache.close()


def test_file_damaged_while_open_is_replaced(
    tmp_path: Path, cipher: RecordCipher, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EntryCache(tmp_path, cipher, CacheConfig(memory_bytes=0))
    for i in range(30):
        put(cache, f"k{i}", '"' + "y" * 20_000 + '"')
    assert cache._db is not None
    # Reach in only to make SQLite read pages from the file instead of its page cache.
    cache._db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache._db.conn.execute("PRAGMA cache_size=0")
    path = tmp_path / CACHE_FILENAME
    with path.open("r+b") as f:
        f.seek(4096)
        f.write(os.urandom(path.stat().st_size - 4096))
    with caplog.at_level(logging.ERROR, logger="dsm.storage.cache"):
        for i in range(30):
            assert value_of(cache, f"k{i}") is None
    assert "the cache file failed" in caplog.text
    put(cache, "fresh", "2")
    assert value_of(cache, "fresh") == "2"
    stats = cache.stats()
    assert stats.disk_enabled and stats.disk_rows == 1
    cache.close()


def test_file_sealed_under_another_key_starts_empty(tmp_path: Path, cipher: RecordCipher) -> None:
    with EntryCache(tmp_path, cipher) as cache:
        put(cache, "k", "1")
    with EntryCache(tmp_path, RecordCipher(new_key())) as other:
        assert value_of(other, "k") is None
        stats = other.stats()
        assert stats.disk_enabled and stats.disk_rows == 0
        put(other, "k", "2")
        assert value_of(other, "k") == "2"
    assert (tmp_path / (CACHE_FILENAME + ".corrupt")).exists()


def test_memory_tier_is_bounded_by_bytes_with_exact_lru_evictions(
    tmp_path: Path, cipher: RecordCipher
) -> None:
    size = entry_packed_size("v0")
    cache = EntryCache(tmp_path, cipher, CacheConfig(memory_bytes=3 * size, disk_bytes=0))
    for i in range(5):
        put(cache, f"k{i}", f"v{i}")
    stats = cache.stats()
    assert (stats.memory_items, stats.memory_bytes, stats.memory_evictions) == (3, 3 * size, 2)
    assert not stats.disk_enabled
    assert value_of(cache, "k0") is None and value_of(cache, "k1") is None
    assert value_of(cache, "k2") == "v2"  # now most recently used: k3 is the oldest
    put(cache, "k5", "v5")
    assert value_of(cache, "k3") is None
    assert [value_of(cache, k) for k in ("k2", "k4", "k5")] == ["v2", "v4", "v5"]
    stats = cache.stats()
    assert (stats.memory_evictions, stats.memory_hits, stats.misses) == (3, 4, 3)
    # A record bigger than the whole memory tier is not admitted and evicts nothing.
    put(cache, "huge", "h" * (4 * size))
    assert value_of(cache, "huge") is None
    assert cache.stats().memory_evictions == 3
    cache.close()


def test_disk_tier_cap_evicts_least_recently_used_rows(
    tmp_path: Path, cipher: RecordCipher
) -> None:
    blob = entry_packed_size("v0") + SEAL_OVERHEAD
    config = CacheConfig(memory_bytes=0, disk_bytes=3 * blob)
    cache = EntryCache(tmp_path, cipher, config)
    for i in range(5):
        put(cache, f"k{i}", f"v{i}")
    stats = cache.stats()
    assert (stats.disk_rows, stats.disk_bytes, stats.disk_evictions) == (3, 3 * blob, 2)
    assert value_of(cache, "k2") == "v2"  # a disk hit makes k2 the most recent
    put(cache, "k5", "v5")
    assert cache.stats().disk_evictions == 3
    cache.close()

    # The use order survived the restart: k3 was evicted, k2 was kept.
    with EntryCache(tmp_path, cipher, config) as cache:
        assert [value_of(cache, f"k{i}") for i in range(6)] == [None, None, "v2", None, "v4", "v5"]
        assert cache.stats().disk_rows == 3
        # Bigger than the disk cap: memory only (off here), and nothing else is evicted for it.
        put(cache, "huge", "h" * (4 * blob))
        assert value_of(cache, "huge") is None
        assert (cache.stats().disk_evictions, cache.stats().disk_rows) == (0, 3)

    # Lowering the cap evicts at start-up, oldest first.
    with EntryCache(tmp_path, cipher, CacheConfig(memory_bytes=0, disk_bytes=blob)) as small:
        assert small.stats().disk_evictions == 2
        assert [value_of(small, k) for k in ("k2", "k4", "k5")] == [None, None, "v5"]


def test_four_mib_values_stay_within_both_caps(tmp_path: Path, cipher: RecordCipher) -> None:
    big = '"' + "z" * (4 * MIB - 2) + '"'
    config = CacheConfig(memory_bytes=10 * MIB, disk_bytes=10 * MIB)
    cache = EntryCache(tmp_path, cipher, config)
    for i in range(6):
        put(cache, f"k{i}", big[:-2] + str(i) + '"')
    stats = cache.stats()
    assert (stats.memory_items, stats.memory_evictions) == (2, 4)
    assert (stats.disk_rows, stats.disk_evictions) == (2, 4)
    assert stats.memory_bytes <= 10 * MIB and stats.disk_bytes <= 10 * MIB
    hit = cache.get_entry(1, "ds", "global", "k5")
    assert hit is not None and hit.value_json == big[:-2] + '5"'
    cache.close()
    # Room is made before each insert and freed pages go back: the file stays under the cap.
    assert (tmp_path / CACHE_FILENAME).stat().st_size <= 10 * MIB
    with EntryCache(tmp_path, cipher, CacheConfig(disk_bytes=5 * MIB)) as smaller:
        assert smaller.stats().disk_rows == 1
    assert (tmp_path / CACHE_FILENAME).stat().st_size <= 5 * MIB


def test_freshness_age_and_expiry_follow_the_injected_clock(
    tmp_path: Path, cipher: RecordCipher, clock: FakeClock
) -> None:
    config = CacheConfig(fresh_seconds=30, max_age_seconds=3600)
    cache = EntryCache(tmp_path, cipher, config, clock=clock)
    put(cache, "k", "1")
    cache.put_list("keys", 1, "ds", "global", value=["k"])
    fetched = clock.now
    clock.now += 10
    hit = cache.get_entry(1, "ds", "global", "k")
    assert hit is not None and (hit.fetched_at, hit.age_seconds, hit.stale) == (
        fetched,
        10.0,
        False,
    )
    clock.now += 21
    hit = cache.get_entry(1, "ds", "global", "k")
    assert hit is not None and (hit.age_seconds, hit.stale) == (31.0, True)
    listed = cache.get_list("keys", 1, "ds", "global")
    assert listed is not None and listed.stale and listed.value == ["k"]
    clock.now = fetched + 3600.5
    assert cache.get_entry(1, "ds", "global", "k") is None
    stats = cache.stats()
    assert (stats.expired, stats.disk_rows) == (1, 1)
    cache.close()
    # The expired list is pruned at start-up, before anyone asks for it.
    with EntryCache(tmp_path, cipher, config, clock=clock) as reopened:
        assert (reopened.stats().expired, reopened.stats().disk_rows) == (1, 0)
    # A clock stepped backwards gives age 0, not a negative age.
    with EntryCache(tmp_path, cipher, config, clock=clock) as cache:
        put(cache, "k", "2")
        clock.now -= 100
        hit = cache.get_entry(1, "ds", "global", "k")
        assert hit is not None and hit.age_seconds == 0.0 and not hit.stale


def test_invalidation_by_entry_datastore_and_universe(tmp_path: Path, cipher: RecordCipher) -> None:
    cache = EntryCache(tmp_path, cipher)

    def fill() -> None:
        for u in (1, 2):
            for ds in ("A", "B"):
                for key in ("x", "y"):
                    put(cache, key, f"{u}{ds}{key}", ds=ds, u=u)
                cache.put_list("keys", u, ds, "global", value=[ds])
            cache.put_list("datastores", u, None, value=["A", "B"])

    def present() -> set[str]:
        found = set()
        for u in (1, 2):
            for ds in ("A", "B"):
                for key in ("x", "y"):
                    if value_of(cache, key, ds=ds, u=u) is not None:
                        found.add(f"{u}{ds}{key}")
                if cache.get_list("keys", u, ds, "global") is not None:
                    found.add(f"{u}{ds}-list")
            if cache.get_list("datastores", u, None) is not None:
                found.add(f"{u}-stores")
        return found

    everything = {
        f"{u}{ds}{k}" for u in (1, 2) for ds in ("A", "B") for k in ("x", "y", "-list")
    } | {"1-stores", "2-stores"}

    fill()
    # Our write to 1/A/x: the entry, A's lists and universe 1's store list go.
    assert cache.invalidate_entry(1, "A", "global", "x") == 3
    assert present() == everything - {"1Ax", "1A-list", "1-stores"}

    fill()
    assert cache.invalidate_datastore(1, "B") == 4
    assert present() == everything - {"1Bx", "1By", "1B-list", "1-stores"}

    fill()
    assert cache.invalidate_universe(2) == 7
    cache.close()
    cache = EntryCache(tmp_path, cipher)  # and the disk tier agrees
    assert present() == {x for x in everything if x.startswith("1")}
    assert cache.clear() == 7
    assert present() == set()
    assert cache.stats().invalidated == 7
    cache.close()


def test_read_overtaken_by_our_write_is_not_cached(tmp_path: Path, cipher: RecordCipher) -> None:
    with EntryCache(tmp_path, cipher) as cache:
        before_read = cache.generation
        # ... the read is in flight when our own write to the key lands and invalidates ...
        cache.invalidate_entry(1, "ds", "global", "k")
        stored = cache.put_entry(
            1,
            "ds",
            "global",
            "k",
            value_json="old",
            metadata={},
            revision="r1",
            if_generation=before_read,
        )
        assert stored is False and cache.get_entry(1, "ds", "global", "k") is None
        assert not cache.put_list("keys", 1, "ds", value=["k"], if_generation=before_read)
        fresh = cache.generation
        assert cache.put_entry(
            1,
            "ds",
            "global",
            "k",
            value_json="new",
            metadata={},
            revision="r2",
            if_generation=fresh,
        )
        assert value_of(cache, "k") == "new"


def test_unpackable_metadata_is_a_clear_error(tmp_path: Path, cipher: RecordCipher) -> None:
    with EntryCache(tmp_path, cipher) as cache:
        with pytest.raises(ValueError, match="cannot store this value"):
            cache.put_entry(1, "ds", "s", "k", value_json="1", metadata={"n": 2**70}, revision="r")
        assert cache.get_entry(1, "ds", "s", "k") is None


def test_closed_cache_refuses_use(tmp_path: Path, cipher: RecordCipher) -> None:
    cache = EntryCache(tmp_path, cipher)
    cache.close()
    with pytest.raises(RuntimeError, match="closed"):
        cache.get_entry(1, "ds", "s", "k")


# ---- property test: random operation sequences against a dict model ------------------------------

# Few names, chosen so that naive concatenation collides ("a/b"+"c" vs "a"+"b/c", "" vs none):
# a small pool makes the machine revisit the same and the colliding slots often.
NAMES = st.sampled_from(["a", "c", "a/b", "b/c", ""])
UNIVERSES = st.sampled_from([1, 12])
LIST_STORES = st.none() | st.sampled_from(["", "a", "a/b"])  # None: a universe-level list
LIST_PARTS = st.sampled_from(["", "b/c"])
VALUES = st.text(max_size=40)

EntrySlot = tuple[str, str, str, str]
ListSlot = tuple[str, str | None, str]


class CacheModel(RuleBasedStateMachine):
    """The cache must return exactly what a dict would, or (when caps evict) nothing at all."""

    config = CacheConfig(memory_bytes=64 * MIB, disk_bytes=512 * MIB, max_age_seconds=None)
    exact = True

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="dsm-cache-model-"))
        self.cipher = RecordCipher(new_key())
        self.clock = FakeClock()
        self.cache = EntryCache(self.directory, self.cipher, self.config, clock=self.clock)
        self.entries: dict[EntrySlot, tuple[str, str]] = {}
        self.lists: dict[ListSlot, list[str]] = {}
        self.serial = 0

    def teardown(self) -> None:
        self.cache.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule(u=UNIVERSES, ds=NAMES, scope=NAMES, key=NAMES, value=VALUES)
    def put_entry(self, u: int, ds: str, scope: str, key: str, value: str) -> None:
        self.serial += 1
        revision = f"r{self.serial}"
        self.cache.put_entry(
            u, ds, scope, key, value_json=value, metadata={"rev": revision}, revision=revision
        )
        self.entries[(str(u), ds, scope, key)] = (value, revision)

    @rule(u=UNIVERSES, ds=NAMES, scope=NAMES, key=NAMES)
    def get_entry(self, u: int, ds: str, scope: str, key: str) -> None:
        self.clock.now += 1
        hit = self.cache.get_entry(u, ds, scope, key)
        expected = self.entries.get((str(u), ds, scope, key))
        got = None if hit is None else (hit.value_json, hit.revision)
        if hit is not None:
            assert hit.metadata == {"rev": hit.revision}
        if self.exact or expected is None:
            assert got == expected
        else:
            assert got in (None, expected)

    @rule(u=UNIVERSES, ds=LIST_STORES, part=LIST_PARTS, value=st.lists(VALUES, max_size=3))
    def put_list(self, u: int, ds: str | None, part: str, value: list[str]) -> None:
        self.cache.put_list("keys", u, ds, part, value=value)
        self.lists[(str(u), ds, part)] = value

    @rule(u=UNIVERSES, ds=LIST_STORES, part=LIST_PARTS)
    def get_list(self, u: int, ds: str | None, part: str) -> None:
        hit = self.cache.get_list("keys", u, ds, part)
        expected = self.lists.get((str(u), ds, part))
        got = None if hit is None else hit.value
        if self.exact or expected is None:
            assert got == expected
        else:
            assert got in (None, expected)

    @rule(u=UNIVERSES, ds=NAMES, scope=NAMES, key=NAMES)
    def invalidate_entry(self, u: int, ds: str, scope: str, key: str) -> None:
        self.cache.invalidate_entry(u, ds, scope, key)
        self.entries.pop((str(u), ds, scope, key), None)
        for slot_ in list(self.lists):
            if slot_[0] == str(u) and slot_[1] in (ds, None):
                del self.lists[slot_]

    @rule(u=UNIVERSES, ds=NAMES)
    def invalidate_datastore(self, u: int, ds: str) -> None:
        self.cache.invalidate_datastore(u, ds)
        for e in [e for e in self.entries if e[0] == str(u) and e[1] == ds]:
            del self.entries[e]
        for slot_ in list(self.lists):
            if slot_[0] == str(u) and slot_[1] in (ds, None):
                del self.lists[slot_]

    @rule(u=UNIVERSES)
    def invalidate_universe(self, u: int) -> None:
        self.cache.invalidate_universe(u)
        self.entries = {e: v for e, v in self.entries.items() if e[0] != str(u)}
        self.lists = {s: v for s, v in self.lists.items() if s[0] != str(u)}

    @rule()
    def reopen(self) -> None:
        self.cache.close()
        self.cache = EntryCache(self.directory, self.cipher, self.config, clock=self.clock)

    @invariant()
    def within_caps(self) -> None:
        stats = self.cache.stats()
        assert 0 <= stats.memory_bytes <= self.config.memory_bytes
        assert 0 <= stats.disk_bytes <= self.config.disk_bytes
        assert stats.discarded == 0


class TightCacheModel(CacheModel):
    # Small enough that both tiers evict constantly.
    config = CacheConfig(memory_bytes=300, disk_bytes=700, max_age_seconds=None)
    exact = False


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestTightCacheModel = TightCacheModel.TestCase
TestTightCacheModel.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
