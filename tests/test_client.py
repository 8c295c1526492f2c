"""``freshrec.client``: batching, ids kept across retries, the async twin, and the real API.

Retries are driven by a scripted HTTP double (the API cannot be made to answer 503 on
demand); what the client sends and reads is checked against the real app, whose producer
writes to the session's broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from litestar.testing import TestClient

from freshrec.client import AsyncClient, Client, DeliveryError
from freshrec.events import decode_event
from freshrec.settings import Settings
from serving.app import create_app
from tests.test_replay import Answer, IngestDouble, accept_all, serve  # noqa: F401 - fixture


@pytest.fixture
def api_double(serve: Callable[..., str]) -> Callable[..., str]:  # noqa: F811
    """Start an :class:`IngestDouble`; return its base URL."""
    return serve


def view(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": f"u{n % 3}",
        "item_id": f"i{n}",
        "type": "view",
        "ts": datetime.now(UTC).isoformat(),
        **extra,
    }


def busy_then_accept(times: int) -> Callable[[list[dict[str, Any]], int], Answer]:
    def script(batch: list[dict[str, Any]], call: int) -> Answer:
        if call <= times:
            return 503, {"Retry-After": "0"}, {"status_code": 503, "detail": "Retry."}
        return accept_all(batch, call)

    return script


def test_track_posts_full_batches_and_flush_the_rest(api_double: Callable[..., str]) -> None:
    double = IngestDouble(accept_all)
    with Client(api_double(double), batch_size=4) as client:
        client.track(*(view(n) for n in range(10)))
        assert [len(b) for b in double.batches] == [4, 4]
        results = client.flush()
    assert [len(b) for b in double.batches] == [4, 4, 2]
    assert [r.accepted for r in results] == [4, 4, 2]
    assert [e["item_id"] for b in double.batches for e in b] == [f"i{n}" for n in range(10)]


def test_missing_ids_are_added_once_and_kept_across_retries(api_double: Callable[..., str]) -> None:
    double = IngestDouble(busy_then_accept(2))
    with Client(api_double(double)) as client:
        client.track(view(1), view(2, event_id="mine"))
        [result] = client.flush()
    assert result.attempts == 3 and result.accepted == 2
    first, second, third = double.batches
    assert first == second == third
    ids = [e["event_id"] for e in first]
    assert ids[1] == "mine" and len(ids[0]) == 32 and ids[0] != ids[1]


def test_rejections_are_reported_per_event_and_whole_batch_refusals_count_all(
    api_double: Callable[..., str],
) -> None:
    def script(batch: list[dict[str, Any]], call: int) -> Answer:
        if call == 1:
            errors = [{"path": "$[1].ts", "message": "Expected `datetime`"}]
            return 422, {}, {"accepted": 1, "rejected": [{"index": 1, "errors": errors}]}
        return 413, {}, {"status_code": 413, "detail": "Batch of 2 events; at most 1"}

    with Client(api_double(IngestDouble(script))) as client:
        partly = client.send([view(1), view(2)])
        refused = client.send([view(3), view(4)])
    assert (partly.status, partly.accepted) == (422, 1)
    assert partly.rejected[0].index == 1 and partly.rejected[0].errors[0].path == "$[1].ts"
    assert (refused.status, refused.accepted, len(refused.rejected)) == (413, 0, 2)
    assert refused.rejected[0].errors[0].message == "Batch of 2 events; at most 1"


def test_server_errors_and_exhausted_retries_raise(api_double: Callable[..., str]) -> None:
    failing = IngestDouble(lambda batch, call: (500, {}, {"detail": "Internal server error"}))
    with Client(api_double(failing)) as client, pytest.raises(DeliveryError, match="answered 500"):
        client.send([view(1)])
    busy = IngestDouble(busy_then_accept(100))
    with (
        Client(api_double(busy), max_attempts=3) as client,
        pytest.raises(DeliveryError, match="after 3 attempts"),
    ):
        client.send([view(1)])
    assert len(busy.batches) == 3


def test_an_empty_batch_is_not_posted(api_double: Callable[..., str]) -> None:
    double = IngestDouble(accept_all)
    with Client(api_double(double)) as client:
        assert client.send([]).accepted == 0
        assert client.flush() == []
    assert double.batches == []


def test_bad_arguments_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Client("http://127.0.0.1:1", batch_size=0)
    with pytest.raises(ValueError, match="max_attempts"):
        AsyncClient("http://127.0.0.1:1", max_attempts=0)


def test_async_client_batches_and_retries_with_the_same_ids(api_double: Callable[..., str]) -> None:
    double = IngestDouble(busy_then_accept(1))

    async def run() -> list[Any]:
        async with AsyncClient(api_double(double), batch_size=3) as client:
            await client.track(*(view(n) for n in range(4)))
            return await client.flush()

    results = asyncio.run(run())
    assert [(r.accepted, r.attempts) for r in results] == [(3, 2), (1, 1)]
    assert double.batches[0] == double.batches[1]
    assert [len(b) for b in double.batches] == [3, 3, 1]


@pytest.mark.integration
def test_events_sent_by_the_client_land_on_the_topic_and_bad_ones_are_explained(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    with (
        TestClient(app=create_app(settings)) as http,
        Client(str(http.base_url), http=http, batch_size=50) as client,
    ):
        client.track(*(view(n) for n in range(120)))
        client.track(view(999, type="teleport"))
        results = client.flush()
        recs = client.recommendations("u1", k=3, device="mobile")
    assert sum(r.accepted for r in results) == 120
    [bad] = [r for r in results if r.rejected]
    assert bad.status == 422 and bad.rejected[0].errors[0].path.endswith(".type")
    assert recs.recommendation_id and recs.items == []  # nothing learnt: no worker runs
    assert recs.variant == "default"  # the client decodes the variant (none configured)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "client"})
    consumer.assign([TopicPartition(settings.events_topic, p, OFFSET_BEGINNING) for p in range(4)])
    try:
        got = []
        for _ in range(40):
            got += [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
            if len(got) >= 120:
                break
    finally:
        consumer.close()
    events = [decode_event(m.value()) for m in got]
    assert sorted(e.item_id for e in events) == sorted(f"i{n}" for n in range(120))
    assert len({e.event_id for e in events}) == 120
