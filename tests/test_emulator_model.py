"""Hypothesis stateful test: the emulator's standard data stores against a simple model."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dsm.emulator.clock import ManualClock
from dsm.emulator.db import Database
from dsm.emulator.errors import EmulatorError
from dsm.emulator.standard import PreconditionFailed, StandardStore

UNIVERSE = "1"
STORE = "ds"
keys = st.sampled_from(["a", "b", "c/d", "é", "k@1"])
scopes = st.sampled_from(["global", "s2"])
values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.text(max_size=8),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.text(max_size=3), st.booleans(), max_size=2),
)
attrs = st.one_of(st.none(), st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 9)))
users = st.lists(st.integers(1, 10**9), max_size=4)


class DataStoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(datetime(2026, 5, 1, tzinfo=UTC))
        self.store = StandardStore(Database(None), self.clock)
        # (scope, key) -> (value_json, attributes_json | None, user_ids, version)
        self.live: dict[tuple[str, str], tuple[str, str | None, list[int], str]] = {}
        self.written: dict[tuple[str, str, str], str | None] = {}  # version -> value
        self.versions_seen: set[tuple[str, str, str]] = set()

    def _record(self, scope: str, key: str, version: str, value: str | None) -> None:
        # Version ids are unique per entry (two keys written in the same tick may share one).
        assert (scope, key, version) not in self.versions_seen, "version ids must be unique"
        self.versions_seen.add((scope, key, version))
        self.written[(scope, key, version)] = value

    @rule(scope=scopes, key=keys, value=values, attributes=attrs, user_ids=users)
    def set_value(
        self,
        scope: str,
        key: str,
        value: object,
        attributes: dict[str, int] | None,
        user_ids: list[int],
    ) -> None:
        text = json.dumps(value)
        attr_text = json.dumps(attributes, separators=(",", ":")) if attributes else None
        revision, created = self.store.write(
            UNIVERSE, STORE, scope, key, text, attributes=attr_text, user_ids=user_ids
        )
        assert created == ((scope, key) not in self.live)
        self.live[(scope, key)] = (text, attr_text, user_ids, revision.version)
        self._record(scope, key, revision.version, text)

    @rule(scope=scopes, key=keys, value=values, stale=st.booleans())
    def conditional_set(self, scope: str, key: str, value: object, stale: bool) -> None:
        current = self.live.get((scope, key))
        expected = "0000.stale" if stale or current is None else current[3]
        text = json.dumps(value)
        try:
            revision, _ = self.store.write(
                UNIVERSE,
                STORE,
                scope,
                key,
                text,
                attributes=None,
                user_ids=[],
                match_version=expected,
            )
        except PreconditionFailed as failed:
            assert stale or current is None
            assert (failed.current.version if failed.current else None) == (
                current[3] if current else None
            )
            return
        assert not stale and current is not None
        self.live[(scope, key)] = (text, None, [], revision.version)
        self._record(scope, key, revision.version, text)

    @rule(scope=scopes, key=keys, amount=st.integers(-1000, 1000))
    def increment(self, scope: str, key: str, amount: int) -> None:
        current = self.live.get((scope, key))
        try:
            revision = self.store.increment(
                UNIVERSE, STORE, scope, key, amount, attributes=None, user_ids=[]
            )
        except EmulatorError as error:
            assert current is not None and not isinstance(json.loads(current[0]), int)
            assert error.v1_code == "ExistingValueNotNumeric"
            return
        base = json.loads(current[0]) if current else 0
        assert (isinstance(base, int) and not isinstance(base, bool)) or current is None
        assert json.loads(revision.value or "null") == base + amount
        self.live[(scope, key)] = (revision.value or "", None, [], revision.version)
        self._record(scope, key, revision.version, revision.value)

    @rule(scope=scopes, key=keys)
    def delete(self, scope: str, key: str) -> None:
        try:
            tombstone = self.store.delete(UNIVERSE, STORE, scope, key)
        except EmulatorError as error:
            assert error.status == 404 and (scope, key) not in self.live
            return
        assert (scope, key) in self.live
        del self.live[(scope, key)]
        self._record(scope, key, tombstone.version, None)

    @rule(minutes=st.one_of(st.integers(1, 180), st.just(60 * 24 * 31)))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    @precondition(lambda self: self.written)
    @rule(data=st.data())
    def old_version_reads_back_what_was_written(self, data: st.DataObject) -> None:
        scope, key, version = data.draw(st.sampled_from(sorted(self.written)))
        try:
            revision = self.store.get_version(UNIVERSE, STORE, scope, key, version)
        except EmulatorError:
            return  # collapsed within its hour, or expired: both documented
        assert revision.value == self.written[(scope, key, version)]

    @invariant()
    def reads_match_model(self) -> None:
        if self.store.get_datastore(UNIVERSE, STORE) is None:
            assert not self.live
            return
        for (scope, key), (text, attr_text, user_ids, version) in self.live.items():
            revision = self.store.get(UNIVERSE, STORE, scope, key)
            assert revision.value == text
            assert revision.attributes == attr_text
            assert list(revision.user_ids) == user_ids
            assert revision.version == version

    @invariant()
    def listing_matches_model(self) -> None:
        if self.store.get_datastore(UNIVERSE, STORE) is None:
            return
        listed, _ = self.store.list_keys(
            UNIVERSE, STORE, scope=None, limit=1000, include_deleted=False
        )
        assert [(k.scope, k.key) for k in listed] == sorted(self.live)


DataStoreModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestDataStoreModel = DataStoreModel.TestCase
