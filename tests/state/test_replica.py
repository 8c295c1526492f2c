"""The API's copies of user records and neighbour lists, on the session's real redis-server.

The property every test comes back to: once the replica has followed Redis's pushes, it
answers exactly what a round trip to Redis answers (``RedisStore.get_user_with_neighbours``),
whatever was written, deleted or expired, and whoever did it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.records import NeighboursRecord
from state.replica import UNKNOWN, UserStateReplica
from state.store import RedisStore
from tests.conftest import wait_until
from tests.state.test_store import user_record

pytestmark = pytest.mark.integration

FACTORS = 4
SOURCES = 3


@pytest.fixture
def store(make_settings) -> Iterator[RedisStore]:
    settings = make_settings(factors=FACTORS)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    try:
        yield store
    finally:
        store.delete_namespace()
        store.client.close()


def started(store: RedisStore, max_bytes: int = 2**24) -> UserStateReplica:
    replica = UserStateReplica(store, max_bytes)
    replica.start()
    assert replica.loaded.wait(10), "the replica did not load"
    return replica


def answers_like_redis(replica: UserStateReplica, store: RedisStore, users: list[str]) -> bool:
    return all(
        replica.user_with_neighbours(u, SOURCES) == store.get_user_with_neighbours(u, SOURCES)
        for u in users
    )


def neighbours(version: int, *item_ids: str) -> NeighboursRecord:
    return NeighboursRecord(version, list(item_ids), [float(-i) for i in range(len(item_ids))])


def test_loads_what_redis_holds_and_knows_what_it_does_not(store: RedisStore) -> None:
    store.write_users([("a", user_record(3, recent=["i1", "i2", "i9"])), ("b", user_record(1))])
    store.write_neighbours([("i1", neighbours(2, "i7", "i8")), ("i9", neighbours(1, "i1"))])
    replica = started(store)
    try:
        assert replica.complete
        held = replica.user_with_neighbours("a", SOURCES)
        assert held == store.get_user_with_neighbours("a", SOURCES)
        assert held is not UNKNOWN and held is not None
        assert held.neighbours[0] == neighbours(2, "i7", "i8")  # type: ignore[union-attr]
        assert held.neighbours[1] is None  # type: ignore[union-attr]  # i2 has no list
        assert replica.user_with_neighbours("nobody", SOURCES) is None
        assert answers_like_redis(replica, store, ["a", "b", "nobody"])
    finally:
        replica.stop()


def test_follows_writes_deletions_and_expiry_made_by_others(store: RedisStore) -> None:
    replica = started(store)
    try:
        assert replica.user_with_neighbours("a", SOURCES) is None
        store.write_users([("a", user_record(1, recent=["i1"]))])
        wait_until(lambda: answers_like_redis(replica, store, ["a"]), 5)
        assert replica.user_with_neighbours("a", SOURCES) is not None

        store.write_neighbours([("i1", neighbours(1, "i5"))])
        wait_until(
            lambda: replica.user_with_neighbours("a", SOURCES).neighbours[0] is not None,  # type: ignore[union-attr]
            5,
        )
        store.write_users([("a", user_record(2, recent=["i1"]))])
        wait_until(lambda: replica.user_with_neighbours("a", SOURCES).user.version == 2, 5)  # type: ignore[union-attr]

        store.erase_users(["a"])
        wait_until(lambda: replica.user_with_neighbours("a", SOURCES) is None, 5)

        # An expired key goes when Redis deletes it: here a read makes it delete it at once
        # (its expiry cycle might take minutes to sample it among many keys).
        store.write_users([("short", user_record(1))], ttl_s=1)
        wait_until(lambda: replica.user_with_neighbours("short", SOURCES) is not None, 5)
        time.sleep(1.1)
        assert store.client.get(store.keys.user("short")) is None
        wait_until(lambda: replica.user_with_neighbours("short", SOURCES) is None, 5)
        assert replica.complete
    finally:
        replica.stop()


def test_a_record_past_its_retention_is_gone_before_redis_deletes_it(store: RedisStore) -> None:
    replica = UserStateReplica(store, 2**24, retention_s=1.0)
    replica.start()
    try:
        assert replica.loaded.wait(10)
        written = time.time()
        store.write_users([("a", user_record(1, written_at_s=written))], ttl_s=1)
        wait_until(lambda: replica.user_with_neighbours("a", SOURCES) is not None, 5)
        # No client reads the key, so Redis may hold it (and push nothing) for a while; the
        # copy is still not served past the record's retention.
        time.sleep(max(0.0, written + 1.0 - time.time()) + 0.05)
        assert replica.user_with_neighbours("a", SOURCES) is None
    finally:
        replica.stop()


def test_past_its_memory_it_sends_requests_to_redis_and_holds_what_they_asked_for(
    store: RedisStore,
) -> None:
    store.write_users([(f"u{i}", user_record(1, recent=[])) for i in range(200)])
    one = len(store.client.get(store.keys.user("u0")))  # type: ignore[arg-type]
    replica = started(store, max_bytes=50 * (one + 200))
    try:
        assert not replica.complete
        assert replica.evictions > 0
        assert replica.held_bytes <= replica.max_bytes
        missing = [u for u in (f"u{i}" for i in range(200)) if
                   replica.user_with_neighbours(u, SOURCES) is UNKNOWN]  # fmt: skip
        assert len(missing) >= 100
        # A key it does not hold may still exist: unknown, never "no such user".
        assert replica.user_with_neighbours("nobody", SOURCES) is UNKNOWN
        asked = missing[0]
        wait_until(lambda: replica.user_with_neighbours(asked, SOURCES) is not UNKNOWN, 5)
        assert answers_like_redis(replica, store, [asked])
    finally:
        replica.stop()


def test_a_lost_push_connection_drops_every_copy_and_loads_again(store: RedisStore) -> None:
    store.write_users([("a", user_record(1))])
    replica = started(store)
    try:
        assert replica.user_with_neighbours("a", SOURCES) is not None
        # Kill the connection Redis pushes to; writes made before the replica reconnects
        # are never pushed to it, so it must not keep what it held.
        store.client.client_kill_filter(_type="pubsub")
        store.write_users([("a", user_record(2))])
        wait_until(lambda: not replica.connected.is_set(), 5)
        assert replica.user_with_neighbours("a", SOURCES) is UNKNOWN  # not the stale version 1
        wait_until(lambda: replica.loaded.is_set(), 10)
        assert replica.user_with_neighbours("a", SOURCES).user.version == 2  # type: ignore[union-attr]
        assert replica.complete
    finally:
        replica.stop()


user_ids = st.sampled_from(["a", "b", "c"])
item_ids = st.sampled_from(["i1", "i2", "i3", "i4"])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("user"), user_ids, st.integers(1, 6), st.lists(item_ids, max_size=4)),
        st.tuples(st.just("list"), item_ids, st.integers(1, 6), st.lists(item_ids, max_size=3)),
        st.tuples(st.just("erase"), user_ids, st.just(0), st.just([])),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=operations, after=operations)
def test_answers_what_redis_answers_after_any_writes(
    store: RedisStore, before: list, after: list
) -> None:
    store.delete_namespace()

    def apply(ops: list) -> None:
        for kind, key, version, items in ops:
            if kind == "user":
                store.write_users([(key, user_record(version, recent=items))])
            elif kind == "list":
                store.write_neighbours([(key, neighbours(version, *items))])
            else:
                store.erase_users([key])

    apply(before)  # loaded at start ...
    replica = started(store)
    try:
        apply(after)  # ... and followed
        wait_until(lambda: answers_like_redis(replica, store, ["a", "b", "c"]), 5)
        assert replica.complete
    finally:
        replica.stop()
