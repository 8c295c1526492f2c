"""Erasure and merge at the API (Litestar TestClient), over real Redis and the real broker.

The flow filled an isolated namespace from the Taobao log; the app erases and merges users
in it and produces tombstones and merge events to the session's broker, read back here.
What the dataflow then does with them: tests/dataflows/test_erasure.py (flow) and
tests/integration/test_erasure.py (the live stack, crashes included).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from litestar.testing import TestClient

from freshrec.events import Erase, Event, decode_message
from freshrec.replay import iter_dataset_events
from freshrec.settings import Settings
from serving.app import create_app
from serving.auth import API_KEY_HEADER
from serving.users import merge_events
from state.records import UserRecord
from state.store import RedisStore
from tests.conftest import run_flow_on, unique_settings

pytestmark = pytest.mark.integration

ADMIN_KEY = "test-admin-key-users-0123"
ADMIN = {API_KEY_HEADER: ADMIN_KEY}


@pytest.fixture(scope="module")
def served(stack, tmp_path_factory) -> Iterator[tuple[Settings, list[Event], TestClient]]:
    settings = unique_settings(stack, tmp_path_factory.mktemp("users"), admin_api_key=ADMIN_KEY)
    events = list(iter_dataset_events("taobao", limit=3000))
    run_flow_on(settings, events, 500)
    with TestClient(app=create_app(settings)) as client:
        deadline = time.monotonic() + 10
        while client.get("/health").json()["items_in_index"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield settings, events, client
    RedisStore.from_url(
        settings.redis_url, settings.redis_prefix, settings.factors
    ).delete_namespace()


def store_of(settings: Settings) -> RedisStore:
    return RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)


def topic_messages(settings: Settings, keys: set[bytes], expected: int) -> list[Any]:
    """The events topic's messages under ``keys``, in each partition's order."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "users"})
    partitions = range(settings.events_partitions)
    consumer.assign(
        [TopicPartition(settings.events_topic, p, OFFSET_BEGINNING) for p in partitions]
    )
    found: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while len(found) < expected and time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=0.5)
            found += [m for m in batch if m.error() is None and m.key() in keys]
    finally:
        consumer.close()
    return found


def users_with_history(events: list[Event], n: int) -> list[str]:
    counts: dict[str, int] = {}
    for e in events:
        counts[e.user_id] = counts.get(e.user_id, 0) + 1
    return [u for u, c in sorted(counts.items(), key=lambda kv: -kv[1])][:n]


def test_delete_erases_at_once_and_puts_a_tombstone_on_the_stream(served) -> None:
    settings, events, client = served
    store = store_of(settings)
    user = users_with_history(events, 1)[0]
    store.park_user_states([(user, b"parked earlier")], ttl_s=600)
    before = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert any(it["reason"].startswith("because you viewed") for it in before["items"])

    response = client.delete(f"/v1/users/{user}", headers=ADMIN)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["user_id"] == user and body["status"] == "pending"
    # What serving reads is gone at once: the answer is the cold start's, nothing personal.
    assert store.get_user(user) is None
    assert store.parked_user_state(user) is None
    assert store.client.zscore(store.keys.parked_users, user) is None
    after = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert not any(it["reason"].startswith("because you viewed") for it in after["items"])
    assert [it["item_id"] for it in after["items"]] != [it["item_id"] for it in before["items"]]
    # The tombstone is on the broker, keyed by the user (their partition, after their events).
    (message,) = topic_messages(settings, {user.encode()}, 1)
    tombstone = decode_message(message.value())
    assert isinstance(tombstone, Erase)
    assert (tombstone.user_id, tombstone.erasure_id) == (user, body["erasure_id"])
    # No dataflow runs here: the erasure stays pending.
    status = client.get(f"/v1/erasures/{body['erasure_id']}", headers=ADMIN).json()
    assert status == {"erasure_id": body["erasure_id"], "status": "pending", "completed_at": None}
    # Erasing again is harmless (a client's retry).
    assert client.delete(f"/v1/users/{user}", headers=ADMIN).status_code == 202


def test_merge_turns_the_anonymous_history_into_the_users_events(served) -> None:
    settings, events, client = served
    store = store_of(settings)
    anonymous, target = users_with_history(events, 3)[1:]
    record = store.get_user(anonymous)
    assert record is not None and record.recent

    response = client.post(
        f"/v1/users/{target}/merge", json={"source_user_id": anonymous}, headers=ADMIN
    )
    assert response.status_code == 202, response.text
    body = response.json()
    expected = len(dict.fromkeys([*record.recent, *record.purchased]))
    assert body["events"] == expected and body["source_user_id"] == anonymous
    assert store.get_user(anonymous) is None
    produced = topic_messages(settings, {target.encode(), anonymous.encode()}, expected + 1)
    merged = [decode_message(m.value()) for m in produced if m.key() == target.encode()]
    assert all(isinstance(e, Event) and e.user_id == target for e in merged)
    assert [e.item_id for e in merged][-len(record.recent) :] == record.recent[::-1]  # type: ignore[union-attr]
    (tombstone,) = [decode_message(m.value()) for m in produced if m.key() == anonymous.encode()]
    assert isinstance(tombstone, Erase) and tombstone.erasure_id == body["erasure_id"]
    # The anonymous id has no record any more: a second merge finds nothing to merge.
    again = client.post(
        f"/v1/users/{target}/merge", json={"source_user_id": anonymous}, headers=ADMIN
    )
    assert again.status_code == 404 and "No record of user" in again.json()["detail"]


def test_merge_events_are_deterministic_and_ordered() -> None:
    record = UserRecord(
        version=5,
        event_ts_s=0.0,
        written_at_s=0.0,
        vector=b"",
        recent=["c", "b", "a"],
        seen=["a", "b", "c", "z"],
        counts={},
        purchased=["b", "old"],
    )
    now = datetime(2026, 12, 1, tzinfo=UTC)
    events = merge_events("user", "anon", record, now)
    assert [(e.item_id, e.type) for e in events] == [
        ("old", "purchase"),
        ("a", "view"),
        ("b", "purchase"),
        ("c", "view"),
    ]
    assert all(e.user_id == "user" and e.ts == now for e in events)
    again = merge_events("user", "anon", record, datetime(2027, 1, 1, tzinfo=UTC))
    assert [e.event_id for e in again] == [e.event_id for e in events]
    assert len({e.event_id for e in events}) == 4
    other = merge_events("user", "anon-2", record, now)
    assert not {e.event_id for e in other} & {e.event_id for e in events}


def test_admin_key_is_needed(served) -> None:
    _, events, client = served
    user = events[0].user_id
    assert client.delete(f"/v1/users/{user}").status_code == 401
    merge = client.post(f"/v1/users/{user}/merge", json={"source_user_id": "anon-1"})
    assert merge.status_code == 401
    assert client.get("/v1/erasures/abc").status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("DELETE", "/v1/users/" + "x" * 129, None, 400, "user_id"),
        ("DELETE", "/v1/users/a%0Ab", None, 400, "user_id"),
        ("DELETE", "/v1/users/a%C2%85b", None, 400, "user_id"),
        ("POST", "/v1/users/u/merge", {}, 400, "source_user_id"),
        ("POST", "/v1/users/u/merge", {"source_user_id": 5}, 400, "source_user_id"),
        ("POST", "/v1/users/u/merge", {"source_user_id": ""}, 400, "source_user_id"),
        ("POST", "/v1/users/u/merge", {"source_user_id": "a\nb"}, 400, "source_user_id"),
        ("POST", "/v1/users/u/merge", {"source_user_id": "a", "x": 1}, 400, "x"),
        ("POST", "/v1/users/u/merge", [], 400, ""),
        ("POST", "/v1/users/u/merge", b"not json", 400, "JSON"),
        ("POST", "/v1/users/u/merge", b'{"source_user_id": "\xff"}', 400, ""),
        ("POST", "/v1/users/u/merge", {"source_user_id": "u"}, 400, "itself"),
        ("POST", "/v1/users/u/merge", {"source_user_id": "never-seen"}, 404, "No record"),
        ("GET", "/v1/erasures/" + "e" * 129, None, 400, "erasure_id"),
    ],
)
def test_bad_input_is_a_4xx_with_a_reason(served, method, path, body, status, says) -> None:
    _, _, client = served
    if isinstance(body, bytes):
        response = client.request(
            method, path, content=body, headers={**ADMIN, "Content-Type": "application/json"}
        )
    else:
        response = client.request(method, path, json=body, headers=ADMIN)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["detail"] and "Traceback" not in response.text
    assert says in response.text


def test_an_unknown_erasure_is_pending(served) -> None:
    _, _, client = served
    body = client.get("/v1/erasures/no-such-erasure", headers=ADMIN).json()
    assert body["status"] == "pending" and body["completed_at"] is None


def test_openapi_documents_the_user_admin_endpoints(served) -> None:
    _, _, client = served
    paths = client.get("/docs/openapi.json").json()["paths"]
    assert "delete" in paths["/v1/users/{user_id}"]
    assert "post" in paths["/v1/users/{user_id}/merge"]
    assert "get" in paths["/v1/erasures/{erasure_id}"]


def test_the_dashboard_shows_no_user_ids(served) -> None:
    settings, events, client = served
    store = store_of(settings)
    user = events[5].user_id
    # An alarm recorded before pseudonyms named the user's id; the dataflow's name a pseudonym.
    store.append_alarm({"kind": "user drift", "scope": "user", "detail": f"user {user}: refit"})
    store.append_alarm(
        {"kind": "user drift", "scope": "user", "detail": "user #0a1b: refit", "user": "0a1b"}
    )
    body = client.get("/v1/monitoring", params={"window_s": 60}).text
    assert f"user {user}:" not in body
    monitoring = client.get("/v1/monitoring", params={"window_s": 60}).json()
    details = [a["detail"] for a in monitoring["alarms"]]
    assert "user #0a1b: refit" in details
    assert any(d.startswith("(withheld") for d in details)
    assert "users_erased" in monitoring["totals"]
