"""Tombstones in the flow (TestingSource, real Redis): before it gone, after it a new user.

Whatever the batching (a tombstone in the same batch as the user's earlier and later events,
or each message a batch of its own), the erased user's Redis keys and samples go, their later
events start a new user, the archive never holds them, and what they gave to aggregates (item
popularity, co-visitation) stays.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSource, run_main

from dataflows.personalize import build_flow
from freshrec.archive import read_archive
from freshrec.events import Erase, Event, encode_erase, encode_event
from operators import user_pseudonym
from state.store import RedisStore
from tests.conftest import unique_settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def views(user: str, items: list[str], start: int) -> list[Event]:
    return [
        Event(
            event_id=f"{user}-{start + n}",
            user_id=user,
            item_id=item,
            type="view",
            ts=T0 + timedelta(seconds=start + n),
        )
        for n, item in enumerate(items)
    ]


def tombstone(user: str, erasure_id: str) -> Erase:
    return Erase(type="erase", user_id=user, erasure_id=erasure_id, ts=T0)


def messages(stream: list[Event | Erase]) -> list[KafkaSourceMessage[bytes, bytes]]:
    """Keyed by user, as the ingest API and the erasure endpoint produce them."""
    return [
        KafkaSourceMessage(
            key=m.user_id.encode(),
            value=encode_event(m) if isinstance(m, Event) else encode_erase(m),
            topic="t",
            partition=0,
            offset=n,
        )
        for n, m in enumerate(stream)
    ]


@pytest.mark.parametrize("batch_size", [1, 7, 1000], ids=["one per batch", "some", "one batch"])
def test_a_tombstone_erases_what_came_before_and_not_what_came_after(
    stack, tmp_path: Path, batch_size: int
) -> None:
    archive = tmp_path / "archive"
    settings = unique_settings(
        stack, tmp_path, archive_dir=str(archive), prequential_sample_every=1
    )
    before = views("anna", [f"i{n}" for n in range(10)], 0)
    after = views("anna", ["j1", "j2", "j3"], 100)
    bert = views("bert", ["i1", "i2", "i3", "i4"], 0)
    carl = views("carl", ["i1", "i5", "i6"], 0)
    stream: list[Event | Erase] = [
        *before[:5],
        *bert,
        *carl,
        *before[5:],
        tombstone("anna", "er-anna"),
        tombstone("bert", "er-bert"),
        tombstone("nobody", "er-nobody"),  # never seen: nothing to delete, still done
        *after,
    ]
    run_main(build_flow(settings, TestingSource(messages(stream), batch_size=batch_size)))

    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    # Before the tombstone: gone. After it: a new user with only the later events.
    anna = store.get_user("anna")
    assert anna is not None
    assert (anna.events, anna.version) == (3, 3)
    assert anna.recent == ["j3", "j2", "j1"]
    assert set(anna.seen) == {"j1", "j2", "j3"}
    assert store.get_user("bert") is None
    assert store.get_user("carl") is not None and store.get_user("carl").events == 3  # type: ignore[union-attr]
    # Every erasure is recorded as done (by its id; the ledger names no user).
    for erasure_id in ("er-anna", "er-bert", "er-nobody"):
        assert store.erasure_done_at(erasure_id) is not None
    # Samples carry pseudonyms: bert has none left, anna only those of her new events.
    samples = store.client.xrange(store.keys.holdout)
    users = [fields[b"user"].decode() for _, fields in samples]
    assert user_pseudonym("bert") not in users
    assert users.count(user_pseudonym("anna")) == len(after)
    assert users.count(user_pseudonym("carl")) == len(carl)
    # Aggregates keep the erased users' contributions: the items they alone viewed exist.
    assert {"i0", "i9"} <= {item for item, _ in store.popular(100)}
    # The archive keeps neither erased user, not even anna's later events.
    archived = read_archive(archive, columns=["user_id", "event_id"])
    assert set(archived["user_id"].to_list()) == {"carl"}
    assert archived.height == len(carl)


def test_an_erased_users_parked_state_is_deleted(stack, tmp_path: Path) -> None:
    settings = unique_settings(stack, tmp_path)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    # A state parked by an earlier run of the worker (idle users leave memory).
    store.park_user_states([("dora", b"an old state")], ttl_s=600)
    assert store.client.zscore(store.keys.parked_users, "dora") is not None
    stream = [tombstone("dora", "er-dora"), *views("dora", ["k1"], 0)]
    # The parked index is loaded when the worker starts: dora is parked, yet her new event
    # must not restore the old state (the tombstone came first).
    run_main(build_flow(settings, TestingSource(messages(stream), batch_size=10)))
    assert store.parked_user_state("dora") is None
    assert store.client.zscore(store.keys.parked_users, "dora") is None
    dora = store.get_user("dora")
    assert dora is not None and dora.events == 1 and dora.recent == ["k1"]


def test_user_records_expire_after_the_retention(stack, tmp_path: Path) -> None:
    settings = unique_settings(stack, tmp_path, user_retention_s=120)
    run_main(build_flow(settings, TestingSource(messages(views("emil", ["x"], 0)), 10)))
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    ttl_ms = store.client.pttl(store.keys.user("emil"))
    assert 100_000 < ttl_ms <= 120_000
    # A later write renews it (a new run starts the user over: two events outdo the one).
    store.client.pexpire(store.keys.user("emil"), 5_000)
    later = views("emil", ["y", "z"], 10)
    run_main(build_flow(settings, TestingSource(messages(later), 10)))
    assert store.client.pttl(store.keys.user("emil")) > 100_000
