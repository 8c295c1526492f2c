"""Redis goes away while the API serves: answers stay 200, flagged ``fallback``, never a 500.

A stack of its own (stopping Redis must not disturb the other tests), the worker and the API
as real processes, the first 2,000 Taobao events. Redis is stopped mid-run, then brought
back; the worker waits for it and catches up.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from freshrec.processes import running_pipeline
from freshrec.replay import iter_dataset_events, send_to_api
from freshrec.settings import load_settings
from freshrec.stack import LocalStack, create_topics
from state.store import RedisStore
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def test_redis_outage_serves_fallback_then_recovers(tmp_path: Path) -> None:
    settings = load_settings(
        environ={},
        run_dir=str(tmp_path),
        kafka_bootstrap="127.0.0.1:0",
        redis_url="redis://127.0.0.1:0/0",
    )
    with LocalStack(settings) as stack:
        settings = load_settings(
            environ={},
            run_dir=str(tmp_path),
            kafka_bootstrap=stack.info.kafka_bootstrap,
            redis_url=stack.info.redis_url,
        )
        create_topics(settings.kafka_bootstrap, {settings.events_topic: 4, settings.dlq_topic: 1})
        store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
        events = list(iter_dataset_events("taobao", limit=2000))
        with (
            running_pipeline(settings, tmp_path) as pipe,
            httpx.Client(base_url=pipe.api_url, timeout=5) as api,
        ):
            send_to_api(events[:1500], pipe.api_url, progress=False)
            user_id = events[0].user_id
            expected = sum(1 for e in events[:1500] if e.user_id == user_id)
            wait_until(
                lambda: (r := store.get_user(user_id)) is not None and r.events >= expected, 30
            )
            wait_until(lambda: api.get("/health").json()["items_in_index"] > 100, 10)
            time.sleep(1.2)  # the popular list refreshes every second
            normal = api.get(f"/v1/users/{user_id}/recommendations").json()
            assert normal["fallback"] is False

            stack.stop_redis()
            try:
                for path in (
                    f"/v1/users/{user_id}/recommendations",
                    "/v1/users/nobody/recommendations",
                ):
                    started = time.monotonic()
                    response = api.get(path, params={"k": 10})
                    assert response.status_code == 200, response.text
                    body = response.json()
                    assert body["fallback"] is True
                    assert len(body["items"]) == 10, "the last good popular list is served"
                    assert all(it["reason"] == "popular" for it in body["items"])
                    assert time.monotonic() - started < 1.0, "fallback must be fast"
                wait_until(lambda: api.get("/health").json()["redis"] is False, 5)
                # Ingest does not need Redis: events are still accepted while it is away.
                accepted = send_to_api(events[1500:], pipe.api_url, progress=False)
                assert accepted.accepted == 500
                time.sleep(2)  # the worker keeps retrying its writes meanwhile
            finally:
                stack.start_redis()

            # The restarted Redis is empty (memory only); the worker wrote what it held back.
            last = events[-1]
            expected_last = sum(1 for e in events if e.user_id == last.user_id)
            wait_until(
                lambda: (
                    (r := store.get_user(last.user_id)) is not None and r.events >= expected_last
                ),
                60,
            )
            wait_until(lambda: api.get("/health").json()["redis"] is True, 10)
            after = api.get(f"/v1/users/{last.user_id}/recommendations").json()
            assert after["fallback"] is False
