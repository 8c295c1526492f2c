"""Prometheus metrics of the worker (Bytewax's API server) and of the API, on real services."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from freshrec import processes
from freshrec.events import encode_event
from freshrec.replay import iter_dataset_events
from freshrec.stack import free_port
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def sample(text: str, name: str, labels: str = "") -> float | None:
    pattern = (
        re.escape(name) + (r"\{" + labels + r"\}" if labels else r"(\{[^}]*\})?") + r" ([0-9.e+-]+)"
    )
    match = re.search(pattern, text)
    return float(match.group(match.lastindex)) if match else None


def test_worker_and_api_metrics(make_settings, tmp_path: Path) -> None:
    metrics_port = free_port()
    settings = make_settings(worker_metrics_port=metrics_port, api_port=free_port())
    events = list(iter_dataset_events("taobao", limit=500))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for e in events:
        producer.produce(settings.events_topic, key=e.user_id.encode(), value=encode_event(e))
    for _ in range(7):
        producer.produce(settings.events_topic, value=b"not an event")
    producer.produce(
        settings.events_topic, key=events[0].user_id.encode(), value=encode_event(events[0])
    )
    assert producer.flush(10) == 0

    worker = processes.spawn(
        [sys.executable, "-m", "freshrec.cli", "worker"], settings, tmp_path / "w.log"
    )
    api = processes.spawn(processes.api_argv(), settings, tmp_path / "api.log")
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"

        def worker_metrics() -> str | None:
            try:
                text = httpx.get(url, timeout=1).text
            except httpx.HTTPError:
                return None
            # Events are counted in the user step, freshness when the sink has written them
            # (a later step): a scrape between the two saw the count but no freshness yet.
            applied = sample(text, "freshrec_events_total", 'outcome="applied"') == 500
            written = (sample(text, "freshrec_freshness_seconds_count") or 0) > 0
            return text if applied and written else None

        text = wait_until(worker_metrics, 60, 0.2)
        assert sample(text, "freshrec_events_total", 'outcome="dead_letter"') == 7
        assert sample(text, "freshrec_events_total", 'outcome="duplicate"') == 1
        assert (sample(text, "freshrec_freshness_seconds_count") or 0) > 0
        assert "bytewax_kafka_consumer_lag" in text or "bytewax_" in text

        api_url = f"http://127.0.0.1:{settings.api_port}"
        processes.wait_http(api_url + "/health", 30, api)
        httpx.get(api_url + "/v1/users/x/recommendations")
        api_text = httpx.get(api_url + "/metrics").text
        assert "freshrec_http_request_duration_seconds_bucket" in api_text
        assert 'path="/v1/users/{user_id}/recommendations"' in api_text
    finally:
        processes.stop(api)
        processes.stop(worker)
