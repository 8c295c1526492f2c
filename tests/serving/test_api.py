"""The HTTP API in-process (Litestar TestClient) over state the real flow wrote to real Redis.

The flow runs on the first 3,000 Taobao events (TestingSource → run_main) into an isolated
Redis namespace; the app then serves from it with its real item index refresh thread and a
real producer on the session's broker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
import pytest
from litestar.testing import TestClient

from freshrec import metrics
from freshrec.events import Event
from freshrec.replay import iter_dataset_events
from freshrec.settings import Settings
from serving.app import create_app
from state.store import RedisStore
from tests.conftest import run_flow_on, unique_settings

pytestmark = pytest.mark.integration

ADMIN_KEY = "test-admin-key-0123456789"


@pytest.fixture(scope="module")
def served(stack, tmp_path_factory) -> Iterator[tuple[Settings, list[Event], TestClient]]:
    settings = unique_settings(stack, tmp_path_factory.mktemp("api"), admin_api_key=ADMIN_KEY)
    events = list(iter_dataset_events("taobao", limit=3000))
    run_flow_on(settings, events, 500)
    with TestClient(app=create_app(settings)) as client:
        deadline = time.monotonic() + 10
        while client.get("/health").json()["items_in_index"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # one more refresh for the popular lists
        yield settings, events, client
    RedisStore.from_url(
        settings.redis_url, settings.redis_prefix, settings.factors
    ).delete_namespace()


def test_personal_recommendations_exclude_seen_and_explain(served) -> None:
    _, events, client = served
    user_id = events[0].user_id
    seen = {e.item_id for e in events if e.user_id == user_id}
    body = client.get(f"/v1/users/{user_id}/recommendations", params={"k": 20}).json()
    assert body["fallback"] is False and body["recommendation_id"].startswith("isgd.")
    # The answer says how many of the user's events it follows from: all of them here.
    assert body["user_events"] == sum(e.user_id == user_id for e in events)
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 20 == len(set(ids))
    assert not set(ids) & seen
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    for it in body["items"]:
        if it["reason"].startswith("because you viewed "):
            assert it["reason"].removeprefix("because you viewed ") in seen

    with_seen = client.get(
        f"/v1/users/{user_id}/recommendations", params={"k": 50, "exclude": "none"}
    ).json()
    assert len(with_seen["items"]) == 50


def test_category_filters_and_diversity(served) -> None:
    _, events, client = served
    user_id = events[0].user_id
    categories = {e.item_id: e.category_id for e in events}
    base = client.get(f"/v1/users/{user_id}/recommendations", params={"k": 30}).json()["items"]
    top_category = categories.get(base[0]["item_id"])
    assert top_category is not None

    only = client.get(
        f"/v1/users/{user_id}/recommendations", params={"k": 5, "category": top_category}
    ).json()["items"]
    assert only and all(categories.get(it["item_id"]) == top_category for it in only)

    without = client.get(
        f"/v1/users/{user_id}/recommendations",
        params={"k": 30, "exclude_category": top_category},
    ).json()["items"]
    assert all(categories.get(it["item_id"]) != top_category for it in without)

    diverse = client.get(
        f"/v1/users/{user_id}/recommendations", params={"k": 20, "max_per_category": 1}
    ).json()["items"]
    cats = [categories.get(it["item_id"]) for it in diverse]
    known = [c for c in cats if c is not None]
    assert len(known) == len(set(known)), "at most one item per category"


def test_catalogue_needs_the_admin_key_and_hides_unavailable_items(served) -> None:
    settings, events, client = served
    user_id = events[0].user_id
    first = client.get(f"/v1/users/{user_id}/recommendations", params={"k": 3}).json()["items"]
    hidden = first[0]["item_id"]
    entry = [{"item_id": hidden, "available": False, "title": "sold out", "price": 9.5}]

    assert client.put("/v1/items", json=entry).status_code == 401
    assert client.put("/v1/items", json=entry, headers={"X-API-Key": "wrong"}).status_code == 401
    ok = client.put("/v1/items", json=entry, headers={"X-API-Key": ADMIN_KEY})
    assert ok.status_code == 200 and ok.json() == {"written": 1}

    deadline = time.monotonic() + 5
    while True:
        items = client.get(f"/v1/users/{user_id}/recommendations", params={"k": 3}).json()["items"]
        if hidden not in {it["item_id"] for it in items}:
            break
        assert time.monotonic() < deadline, "unavailable item still recommended"
        time.sleep(0.05)
    shown = client.get(
        f"/v1/users/{user_id}/recommendations", params={"k": 3, "available_only": False}
    ).json()["items"]
    assert hidden in {it["item_id"] for it in shown}


def test_admin_disabled_without_a_key(stack, tmp_path) -> None:
    settings = unique_settings(stack, tmp_path)
    with TestClient(app=create_app(settings)) as client:
        response = client.put("/v1/items", json=[], headers={"X-API-Key": ""})
        assert response.status_code == 403
        assert "disabled" in response.json()["detail"]


def test_cold_start_uses_the_context_segment(served) -> None:
    settings, _, client = served
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    segments = [
        k.decode().rsplit(":", 1)[-1] for k in store.client.keys(store.keys.segment_popularity("*"))
    ]
    assert segments, "the flow wrote per-segment popularity"
    body = client.get(
        "/v1/users/never-seen-before/recommendations", params={"k": 10, "country": "CN"}
    ).json()
    assert body["fallback"] is False and len(body["items"]) == 10
    assert body["user_events"] == 0
    reasons = {it["reason"] for it in body["items"]}
    assert reasons <= {"trending", "popular in your region", "popular"}
    assert len({it["item_id"] for it in body["items"]}) == 10


def test_similar_items(served) -> None:
    settings, events, client = served
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    item = next(e.item_id for e in events if (n := store.neighbours(e.item_id)) and n.item_ids)
    body = client.get(f"/v1/items/{item}/similar", params={"k": 5}).json()
    assert body["item_id"] == item
    assert 0 < len(body["items"]) <= 5
    assert item not in {it["item_id"] for it in body["items"]}
    assert {it["reason"] for it in body["items"]} <= {"viewed together", "similar"}
    assert store.neighbours(item).item_ids[0] in {it["item_id"] for it in body["items"]}


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/users/u/recommendations", {"k": 0}, 400),
        ("/v1/users/u/recommendations", {"k": 101}, 400),
        ("/v1/users/u/recommendations", {"exclude": "everything"}, 400),
        ("/v1/users/u/recommendations", {"max_per_category": 0}, 400),
        ("/v1/users/" + "x" * 129 + "/recommendations", {}, 400),
        ("/v1/users/a%0Ab/recommendations", {}, 400),
        ("/v1/items/i/similar", {"k": -1}, 400),
    ],
)
def test_bad_parameters_get_a_4xx_with_a_reason(served, path, params, status) -> None:
    _, _, client = served
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["detail"] and "Traceback" not in response.text


def test_openapi_documents_every_endpoint(served) -> None:
    _, _, client = served
    spec = client.get("/docs/openapi.json").json()
    assert {
        "/v1/events",
        "/v1/users/{user_id}/recommendations",
        "/v1/items",
        "/v1/items/{item_id}/similar",
        "/health",
    } <= set(spec["paths"])
    msgspec.json.encode(spec)


def test_an_unreachable_store_is_a_503_to_retry(stack, tmp_path) -> None:
    """Redis down (or answering too late) is a temporary state of the service: 503 with
    Retry-After, never a 500."""
    live = unique_settings(stack, tmp_path, admin_api_key=ADMIN_KEY)
    settings = msgspec.structs.replace(live, redis_url="redis://127.0.0.1:1/0")
    with TestClient(app=create_app(settings)) as client:
        response = client.put(
            "/v1/items", json=[{"item_id": "i1"}], headers={"X-API-Key": ADMIN_KEY}
        )
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"]
        assert "Retry" in response.json()["detail"]


def test_recommendations_read_no_redis_once_the_process_holds_the_users(served) -> None:
    settings, events, client = served
    recommender = client.app.dependencies["recommender"].dependency()
    assert recommender.replica is not None and recommender.replica.loaded.wait(10)
    users = sorted({e.user_id for e in events})[:40]
    redis = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)

    def round_trips() -> int:
        # The record-and-lists script is the only Redis call of a personal answer.
        return int(redis.client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    before = round_trips()
    copied = metrics.total(metrics.USER_STATE_READS, source="copy")
    held = [
        client.get(f"/v1/users/{u}/recommendations", params={"k": 10}).json()["items"]
        for u in users
    ]
    assert round_trips() == before
    assert metrics.total(metrics.USER_STATE_READS, source="copy") == copied + len(users)
    assert metrics.total(metrics.USER_STATE_COPY_BYTES) > 0
    # The answers are the ones the same process gives when it reads every user from Redis.
    without = msgspec.structs.replace(settings, serving_replica_mb=0)
    with TestClient(app=create_app(without)) as reading:
        deadline = time.monotonic() + 10
        while reading.get("/health").json()["items_in_index"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        read = [
            reading.get(f"/v1/users/{u}/recommendations", params={"k": 10}).json()["items"]
            for u in users
        ]
        assert round_trips() >= before + len(users)
    assert read == held
