"""Checks shared by the recovery and cluster tests: completion and timing-free state equality."""

from __future__ import annotations

import time
from collections import Counter

from state.store import RedisStore


def lagging(store: RedisStore, per_user: Counter, dups: Counter) -> list[tuple]:
    """Users whose record does not (yet) show all their events and duplicates."""
    behind = []
    for user_id, n in per_user.items():
        record = store.get_user(user_id)
        if record is None or record.events < n or record.duplicates < dups[user_id]:
            got = None if record is None else (record.events, record.duplicates)
            behind.append((user_id, (n, dups[user_id]), got))
    return behind


def wait_complete(store: RedisStore, per_user: Counter, dups: Counter, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while behind := lagging(store, per_user, dups):
        assert time.monotonic() < deadline, f"{len(behind)} users incomplete, e.g. {behind[:5]}"
        time.sleep(0.5)


def user_view(store: RedisStore, user_id: str) -> dict:
    r = store.get_user(user_id)
    assert r is not None
    return {
        "events": r.events,
        "version": r.version,
        "recent": r.recent,
        "seen": r.seen,
        "counts": r.counts,
        "session": (r.session_no, r.session_start_ts_s, r.session_event_count, r.session_items),
        "duplicates": r.duplicates,
        "dedup_ids": r.dedup_ids,
        "segment": r.segment,
    }


def assert_same_state(store_a: RedisStore, store_b: RedisStore, per_user: Counter) -> None:
    """Two runs over the same input agree on everything that does not depend on timing."""
    for user_id in per_user:
        assert user_view(store_a, user_id) == user_view(store_b, user_id), user_id
    ca, cb = store_a.client, store_b.client
    ka, kb = store_a.keys, store_b.keys
    assert ca.hgetall(ka.item_versions) == cb.hgetall(kb.item_versions)
    pop_a = dict(ca.zrange(ka.popularity, 0, -1, withscores=True))
    pop_b = dict(cb.zrange(kb.popularity, 0, -1, withscores=True))
    assert pop_a.keys() == pop_b.keys()
    assert all(abs(pop_a[k] - pop_b[k]) < 1e-9 for k in pop_a)
    for key in ca.scan_iter(match=ka.segment_popularity("*")):
        segment = key.decode().removeprefix(ka.segment_popularity(""))
        seg_a = dict(ca.zrange(key, 0, -1, withscores=True))
        seg_b = dict(cb.zrange(kb.segment_popularity(segment), 0, -1, withscores=True))
        assert seg_a.keys() == seg_b.keys(), segment
        assert all(abs(seg_a[k] - seg_b[k]) < 1e-9 for k in seg_a), segment
    versions_a = {k: n.version for k in pop_a if (n := store_a.neighbours(k.decode()))}
    versions_b = {k: n.version for k in pop_b if (n := store_b.neighbours(k.decode()))}
    assert versions_a == versions_b
