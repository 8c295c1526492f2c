"""The Redis store on the session's real redis-server, isolated by key prefix."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators import user_pseudonym
from state.records import NeighboursRecord, UserRecord, vector_to_bytes
from state.store import ItemWrite, RedisStore, sink_writer_id

pytestmark = pytest.mark.integration

FACTORS = 4


@pytest.fixture
def store(make_settings) -> Iterator[RedisStore]:
    settings = make_settings(factors=FACTORS)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    assert store.ping()
    try:
        yield store
    finally:
        store.delete_namespace()
        store.client.close()


def user_record(version: int, **changes: object) -> UserRecord:
    fields: dict[str, object] = {
        "version": version,
        "event_ts_s": 1_700_000_000.0 + version,
        "written_at_s": 1_700_000_100.5,
        "vector": vector_to_bytes(np.arange(FACTORS, dtype=np.float32) * version),
        "recent": [f"i{version}", "i0"],
        "seen": ["i0", f"i{version}"],
        "counts": {"view": version},
    }
    fields.update(changes)
    return UserRecord(**fields)  # type: ignore[arg-type]


def vec(*values: float) -> bytes:
    return vector_to_bytes(np.array(values, dtype=np.float32))


def item(item_id: str, version: int, value: float = 0.0, pop: float = 1.0, trend=None) -> ItemWrite:
    return ItemWrite(item_id, version, vec(value, value, value, value), pop, trend)


# --- users -----------------------------------------------------------------------------------


def test_user_record_round_trips(store: RedisStore) -> None:
    record = user_record(
        3,
        session_no=2,
        session_start_ts_s=1.5,
        session_event_count=4,
        session_items=["a", "b"],
        segment="mobile|evening|DE",
        duplicates=1,
        dedup_ids=7,
        counts={"view": 2, "purchase": 1},
    )
    assert store.write_users([("u1", record)]) == 1
    assert store.get_user("u1") == record
    assert store.get_user("nobody") is None


def test_older_or_equal_version_never_overwrites(store: RedisStore) -> None:
    assert store.write_users([("u1", user_record(5))]) == 1
    assert store.write_users([("u1", user_record(4))]) == 0
    assert store.write_users([("u1", user_record(5, recent=["changed"]))]) == 0
    assert store.get_user("u1") == user_record(5)
    assert store.write_users([("u1", user_record(6))]) == 1
    assert store.get_user("u1") == user_record(6)


def test_versions_are_compared_within_one_batch(store: RedisStore) -> None:
    batch = [
        ("u1", user_record(7)),
        ("u1", user_record(3)),
        ("u2", user_record(1)),
        ("u1", user_record(7, recent=["late duplicate"])),
        ("u2", user_record(2)),
    ]
    # One record per user lands, its newest (the first of equal versions).
    assert store.write_users(batch) == 2
    assert store.get_user("u1") == user_record(7)
    assert store.get_user("u2") == user_record(2)


def test_erase_users_deletes_every_trace_and_nothing_else(store: RedisStore) -> None:
    k = store.keys
    for user in ("gone", "kept"):
        store.write_users([(user, user_record(3))], ttl_s=600)
        store.park_user_states([(user, b"state")], ttl_s=600)
        samples = [(f"{user}-e{n}", vec(1, 2, 3, 4), f"i{n}", user_pseudonym(user)) for n in (1, 2)]
        store.append_holdout(samples)
    store.client.xadd(k.alarms, {"kind": "popularity drift", "scope": "global", "detail": "d"})

    assert store.erase_users(["gone"], ["er-1", "er-2"], now_s=1_800_000_000.0) == 2
    assert store.get_user("gone") is None and store.parked_user_state("gone") is None
    assert store.client.zscore(k.parked_users, "gone") is None
    assert not store.client.exists(k.user_samples(user_pseudonym("gone")))
    held = [f[b"key"] for _, f in store.client.xrange(k.holdout)]
    assert held == [b"kept-e1", b"kept-e2"]
    assert store.get_user("kept") == user_record(3)
    assert store.client.xlen(k.alarms) == 1
    assert store.erasure_done_at("er-1") == store.erasure_done_at("er-2") == 1_800_000_000.0
    assert store.erasures_done() == 2
    # Again, and for users never seen: nothing to delete, no error; the API records nothing.
    assert store.erase_users(["gone", "never"]) == 0
    assert store.erasures_done() == 2
    assert store.erase_users([]) == 0


def test_user_records_and_their_indexes_expire(store: RedisStore) -> None:
    store.write_users([("u1", user_record(1))], ttl_s=100)
    assert 0 < store.client.ttl(store.keys.user("u1")) <= 100
    store.write_users([("u2", user_record(1))])  # no retention: kept
    assert store.client.ttl(store.keys.user("u2")) == -1
    store.append_holdout([("e", vec(1, 2, 3, 4), "i", "p1")], ttl_s=50)
    assert 0 < store.client.ttl(store.keys.user_samples("p1")) <= 50
    # Expired parked-index entries go as new users are parked.
    store.client.zadd(store.keys.parked_users, {"long-gone": 1.0})
    store.park_user_states([("u3", b"s")], ttl_s=60)
    assert store.client.zscore(store.keys.parked_users, "long-gone") is None


def test_large_versions_compare_correctly(store: RedisStore) -> None:
    # The Lua script reads the 8-byte big-endian header; versions beyond 32 bits must work.
    big = 2**40
    assert store.write_users([("u1", user_record(big))]) == 1
    assert store.write_users([("u1", user_record(big - 1))]) == 0
    assert store.write_users([("u1", user_record(big + 1))]) == 1
    assert store.get_user("u1").version == big + 1  # type: ignore[union-attr]


def test_write_users_with_nothing_to_write(store: RedisStore) -> None:
    assert store.write_users([]) == 0


_fresh_user = (f"h{n}" for n in itertools.count())
_item_ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    version=st.integers(1, 2**63 - 1),
    event_ts=st.one_of(st.floats(allow_nan=False), st.integers(-(2**63), 2**63 - 1)),
    written_at=st.one_of(st.floats(allow_nan=False), st.integers(0, 2**32)),
    vector_bytes=st.sampled_from([0, 4, 256, 255 * 4, 256 * 4, 16_384 * 4, 17_000 * 4]),
    recent=st.lists(_item_ids, max_size=25, unique=True),
    listed=st.sets(st.integers(0, 24)),
    sources=st.integers(0, 8),
)
def test_user_with_neighbours_reads_the_record_and_its_recent_lists(
    store: RedisStore,
    version: int,
    event_ts: float,
    written_at: float,
    vector_bytes: int,
    recent: list[str],
    listed: set[int],
    sources: int,
) -> None:
    """The script skips every msgpack encoding the fields before ``recent`` can take."""
    user_id = next(_fresh_user)
    record = user_record(
        version,
        event_ts_s=event_ts,
        written_at_s=written_at,
        vector=bytes(vector_bytes),
        recent=recent,
    )
    store.write_users([(user_id, record)])
    lists = {
        recent[n]: NeighboursRecord(1, [f"x{n}", "y"], [3.0, float(n)])
        for n in listed
        if n < len(recent)
    }
    store.write_neighbours(list(lists.items()))
    fetched = store.get_user_with_neighbours(user_id, sources)
    # (as get_user decodes it: an int given for a float field comes back a float)
    assert fetched is not None and fetched.user == store.get_user(user_id)
    assert fetched.user.vector == record.vector and fetched.user.recent == recent
    assert fetched.sources == recent[:sources]
    assert fetched.neighbours == [lists.get(item) for item in recent[:sources]]
    store.client.delete(*(store.keys.neighbours(item) for item in lists), store.keys.user(user_id))
    if lists:  # the versions the next example's writes must beat go with the records
        store.client.hdel(store.keys.neighbour_versions, *lists)


def test_user_with_neighbours_of_unknown_user_and_after_a_script_flush(
    store: RedisStore,
) -> None:
    assert store.get_user_with_neighbours("nobody", 5) is None
    store.write_users([("u1", user_record(2))])
    store.client.script_flush()  # as after a server restart: the script is loaded again
    fetched = store.get_user_with_neighbours("u1", 5)
    assert fetched is not None and fetched.sources == ["i2", "i0"]
    assert fetched.neighbours == [None, None]


def test_parked_state_round_trips_and_expires(store: RedisStore) -> None:
    assert store.parked_user_state("u1") is None
    store.park_user_states([("u1", b"\x00state\xff")], ttl_s=60)
    assert store.parked_user_state("u1") == b"\x00state\xff"
    assert store.parked_user_state("u1") == b"\x00state\xff"  # kept after reading
    assert 0 < store.client.ttl(store.keys.user_state("u1")) <= 60


# --- items -----------------------------------------------------------------------------------


def test_item_change_log(store: RedisStore) -> None:
    assert store.item_change_seq() == 0
    assert store.write_items([item("a", 1, 0.5), item("b", 1, 1.5), item("c", 2, 2.5)]) == 3

    everything = store.read_item_changes(0)
    assert sorted(everything.item_ids) == ["a", "b", "c"]
    assert everything.max_seq == store.item_change_seq() == 3
    rows = {i: everything.vectors[n] for n, i in enumerate(everything.item_ids)}
    np.testing.assert_array_equal(rows["b"], np.full(FACTORS, 1.5, dtype=np.float32))
    assert everything.vectors.dtype == np.float32 and everything.vectors.shape == (3, FACTORS)

    nothing = store.read_item_changes(everything.max_seq)
    assert nothing.item_ids == [] and nothing.vectors.shape == (0, FACTORS)
    assert nothing.max_seq == everything.max_seq

    assert store.write_items([item("b", 2, 9.0)]) == 1
    changed = store.read_item_changes(everything.max_seq)
    assert changed.item_ids == ["b"] and changed.max_seq == 4
    np.testing.assert_array_equal(changed.vectors[0], np.full(FACTORS, 9.0, dtype=np.float32))
    # Reading from 0 again gives each item once, with its newest vector.
    again = store.read_item_changes(0)
    assert sorted(again.item_ids) == ["a", "b", "c"] and again.max_seq == 4


def test_item_change_log_gives_each_id_once_in_order_of_last_change(store: RedisStore) -> None:
    store.write_items([item("a", 1, 1.0), item("b", 1, 1.0)])
    seq = store.item_change_seq()
    store.write_items([item("c", 1, 1.0), item("a", 2, 1.0)])
    store.write_items([item("c", 2, 1.0), item("d", 1, 1.0)])
    assert store.item_change_ids(seq) == (["a", "c", "d"], seq + 4)


def test_a_replica_skips_only_its_own_process_sinks_entries(store: RedisStore) -> None:
    # Items written other than by the dataflow's sink (an import, a model rollback) are read
    # by every replica, the writing process' own included.
    store.write_items([item("a", 1, 1.0)])
    assert store.item_change_ids(0, skip_writer=sink_writer_id()) == (["a"], 1)


def test_a_replica_behind_the_trimmed_change_log_gets_every_item(store: RedisStore) -> None:
    store.write_items([item("a", 1, 1.0), item("b", 1, 1.0)])
    seq = store.item_change_seq()
    store.write_items([item("c", 1, 1.0)])
    store.write_items([item("a", 2, 1.0)])
    # The entries after ``seq`` but the last are trimmed away: the log no longer reaches back.
    first_kept = store.client.xrange(store.keys.item_changes)[-1][0]
    store.client.xtrim(store.keys.item_changes, minid=first_kept, approximate=False)
    ids, newest = store.item_change_ids(seq)
    assert sorted(ids) == ["a", "b", "c"] and newest == seq + 2
    # Up to date with the log's last entry: only that entry.
    assert store.item_change_ids(seq + 1) == (["a"], seq + 2)
    assert store.item_change_ids(seq + 2) == ([], seq + 2)


def test_rewriting_the_same_item_version_changes_nothing(store: RedisStore) -> None:
    assert store.write_items([item("a", 3, 1.0)]) == 1
    seq = store.item_change_seq()
    assert store.write_items([item("a", 3, 7.0)]) == 0  # replayed output after a resume
    assert store.write_items([item("a", 2, 7.0)]) == 0  # late, older
    assert store.item_change_seq() == seq
    assert store.read_item_changes(seq).item_ids == []
    changes = store.read_item_changes(0)
    np.testing.assert_array_equal(changes.vectors[0], np.full(FACTORS, 1.0, dtype=np.float32))
    assert store.client.hget(store.keys.item_versions, "a") == b"3"


def test_item_versions_are_compared_within_one_batch(store: RedisStore) -> None:
    assert store.write_items([item("a", 2, 2.0), item("a", 1, 1.0), item("a", 2, 5.0)]) == 1
    np.testing.assert_array_equal(
        store.read_item_changes(0).vectors[0], np.full(FACTORS, 2.0, dtype=np.float32)
    )
    assert store.item_change_seq() == 1


def test_applied_counts_read_user_events_and_item_versions(store: RedisStore) -> None:
    assert store.applied_counts([], []) == ([], [])
    store.write_users([("u1", user_record(3, events=3)), ("u2", user_record(1, events=1))])
    store.write_items([item("a", 7), item("b", 1)])
    assert store.applied_counts(["u2", "nobody", "u1"], ["a", "zz", "b"]) == (
        [1, 0, 3],
        [7, 0, 1],
    )
    assert store.applied_counts(["u1"], []) == ([3], [])
    assert store.applied_counts([], ["b"]) == ([], [1])


def test_popular_orders_by_log_popularity(store: RedisStore) -> None:
    store.write_items(
        [
            item("low", 1, pop=-3.5),
            item("high", 1, pop=1e7 + 0.25),
            item("mid", 1, pop=12.0),
            item("never", 1, pop=-math.inf),
        ]
    )
    assert store.popular(3) == [("high", 1e7 + 0.25), ("mid", 12.0), ("low", -3.5)]
    assert store.popular(10)[-1] == ("never", -math.inf)
    store.write_items([item("low", 2, pop=1e8)])  # a newer version moves it up
    assert [i for i, _ in store.popular(2)] == ["low", "high"]
    store.write_items([item("mid", 1, pop=1e9)])  # a stale version does not
    assert store.popular(1) == [("low", 1e8)]


def test_trending_is_set_and_cleared_with_the_item(store: RedisStore) -> None:
    store.write_items([item("a", 1, trend=2.0), item("b", 1, trend=-1.0), item("c", 1)])
    assert store.trending(10) == [("a", 2.0), ("b", -1.0)]
    store.write_items([item("a", 2, trend=None)])
    assert store.trending(10) == [("b", -1.0)]


def test_neighbours_are_versioned(store: RedisStore) -> None:
    first = NeighboursRecord(2, ["b", "c"], [3.0, 1.0])
    assert store.write_neighbours([("a", first)]) == 1
    assert store.write_neighbours([("a", NeighboursRecord(1, ["x"], [9.0]))]) == 0
    assert store.neighbours("a") == first
    assert store.neighbours("b") is None


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("other", ["a:b", "a*", "*", "a:*", "u:a", "a\\", "[a]"])
def test_ids_with_key_syntax_stay_in_their_own_key(store: RedisStore, other: str) -> None:
    store.write_users([("a", user_record(1)), (other, user_record(2))])
    assert store.get_user("a") == user_record(1)
    assert store.get_user(other) == user_record(2)
    assert store.keys.user("a") != store.keys.user(other)
    store.write_items([item("a", 1, 1.0), item(other, 1, 2.0)])
    changes = store.read_item_changes(0)
    assert sorted(changes.item_ids) == sorted(["a", other])
    store.write_neighbours([("a", NeighboursRecord(1, ["x"], [1.0]))])
    assert store.neighbours(other) is None


def test_every_key_is_inside_the_namespace(store: RedisStore) -> None:
    store.write_users([("u:1", user_record(1))])
    store.park_user_states([("u:1", b"s")], ttl_s=60)
    store.write_items([item("i*1", 1, trend=1.0)])
    store.write_neighbours([("i*1", NeighboursRecord(1, ["x"], [1.0]))])
    keys = sorted(k.decode() for k in store.client.scan_iter(match=store.keys.pattern()))
    prefix = store.keys.prefix
    assert keys == sorted(
        [
            f"{prefix}:u:u:1",
            f"{prefix}:us:u:1",
            f"{prefix}:usidx",
            f"{prefix}:if",
            f"{prefix}:if:ver",
            f"{prefix}:if:chg",
            f"{prefix}:if:seq",
            f"{prefix}:pop",
            f"{prefix}:trend",
            f"{prefix}:cov:i*1",
            f"{prefix}:covver",
        ]
    )
    assert store.delete_namespace() == len(keys)
    assert list(store.client.scan_iter(match=store.keys.pattern())) == []


def test_namespaces_do_not_see_each_other(store: RedisStore, make_settings) -> None:
    other_settings = make_settings(factors=FACTORS)
    other = RedisStore.from_url(other_settings.redis_url, other_settings.redis_prefix, FACTORS)
    try:
        store.write_users([("u1", user_record(1))])
        store.write_items([item("a", 1)])
        assert other.get_user("u1") is None
        assert other.read_item_changes(0).item_ids == []
        assert other.popular(10) == []
        other.delete_namespace()
        assert store.get_user("u1") == user_record(1)
    finally:
        other.delete_namespace()
        other.client.close()


def test_user_with_neighbours_survives_a_dropped_connection(store: RedisStore) -> None:
    """The serving read keeps its own connection; one the server closed is reopened."""
    store.write_users([("u1", user_record(2))])
    assert store.get_user_with_neighbours("u1", 5) is not None
    host, port = store._hot.connection._sock.getsockname()[:2]  # that connection's end
    assert store.client.client_kill_filter(addr=f"{host}:{port}") == 1
    fetched = store.get_user_with_neighbours("u1", 5)
    assert fetched is not None and fetched.user == user_record(2)


def test_rules_round_trip_and_every_write_bumps_the_version(store: RedisStore) -> None:
    from datetime import UTC, datetime

    from state.records import Rule

    assert store.rules() == (0, []) and store.rules_version() == 0
    pin = Rule(kind="pin", item_id="i1", position=2, starts_at=datetime(2026, 1, 1, tzinfo=UTC))
    boost = Rule(kind="boost", brand="acme", factor=1.5, note="spring")
    store.put_rule("r2", pin)
    store.put_rule("r1", boost)
    assert store.rules() == (2, [("r1", boost), ("r2", pin)])
    assert store.rule("r2") == pin and store.rule("nope") is None and store.rule_count() == 2
    assert pin.window_s == (datetime(2026, 1, 1, tzinfo=UTC).timestamp(), math.inf)
    assert store.delete_rule("r2") and not store.delete_rule("r2")
    assert store.rules_version() == 4 and store.rules() == (4, [("r1", boost)])
