"""Model versions on the real stack: a deliberately broken model is promoted, then rolled back.

Worker and API run as processes over the Taobao log. A healthy version is frozen and
promoted; a broken one (random item vectors) is refused by validation, then forced in by the
admin. The lifecycle compares it with its predecessor on the test-then-train interactions
recorded since, rolls it back, and serving follows the registry back to the healthy version.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from confluent_kafka import Producer

from freshrec.events import encode_event
from freshrec.lifecycle import build_lifecycle
from freshrec.processes import running_pipeline
from freshrec.replay import iter_dataset_events
from state.model_registry import ModelVersion
from state.store import RedisStore
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": "lifecycle-test-key"}


def produce(settings, events) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    for e in events:
        producer.produce(settings.events_topic, key=e.user_id.encode(), value=encode_event(e))
    assert producer.flush(30) == 0


def applied(store: RedisStore, events) -> bool:
    last = events[-1]
    expected = sum(1 for e in events if e.user_id == last.user_id)
    record = store.get_user(last.user_id)
    return record is not None and record.events >= expected


def test_broken_model_is_refused_then_rolled_back(make_settings, tmp_path: Path) -> None:
    settings = make_settings(
        admin_api_key=ADMIN["X-API-Key"], model_holdout_min=200, prequential_sample_every=5
    )
    events = list(iter_dataset_events("taobao", limit=9000))
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    lifecycle = build_lifecycle(settings)
    registry = lifecycle.registry
    with (
        running_pipeline(settings, tmp_path) as pipe,
        httpx.Client(base_url=pipe.api_url, timeout=10) as api,
    ):
        produce(settings, events[:4000])
        wait_until(lambda: applied(store, events[:4000]), 60, 0.1)
        # Item states reach Redis a moment after the user records that caused them.
        items = len({e.item_id for e in events[:4000]})
        wait_until(lambda: store.client.hlen(store.keys.item_factors) >= items, 30, 0.1)

        good = api.post("/v1/models/snapshot", headers=ADMIN).json()["detail"].split()[-1]
        assert (
            api.post(f"/v1/models/{good}/promote", headers=ADMIN).status_code == 400
        )  # no held-out data yet
        promoted = api.post(f"/v1/models/{good}/promote", params={"force": True}, headers=ADMIN)
        assert promoted.status_code == 201, promoted.text
        wait_until(lambda: api.get("/health").json()["items_in_index"] > 0, 10)

        ids, matrix = registry.load(good)
        rng = np.random.default_rng(7)
        broken_matrix = (rng.standard_normal(matrix.shape) * 3.0).astype(np.float32)
        broken = ModelVersion(
            "broken-1", time.time(), len(ids), settings.factors, {"note": "random vectors"}
        )
        registry.save(broken, ids, broken_matrix)

        produce(settings, events[4000:6500])
        wait_until(lambda: applied(store, events[:6500]), 60, 0.1)
        # Held-out samples are written right after the user records of the same batch.
        wait_until(lambda: len(lifecycle.held_out_since(broken.created_at)) >= 200, 30, 0.1)
        refused = api.post("/v1/models/broken-1/promote", headers=ADMIN)
        assert refused.status_code == 400, registry.get("broken-1")
        assert "worse than the serving model" in refused.json()["detail"]

        forced = api.post("/v1/models/broken-1/promote", params={"force": True}, headers=ADMIN)
        assert forced.status_code == 201
        assert registry.active_id() == "broken-1"
        wait_until(lambda: api.get("/health").json()["model_version"] == "broken-1", 10)
        promoted_at = registry.get("broken-1").promoted_at
        produce(settings, events[6500:])
        wait_until(lambda: applied(store, events), 60, 0.1)
        wait_until(lambda: len(lifecycle.held_out_since(promoted_at)) >= 200, 30, 0.1)

        actions = lifecycle.step()
        assert any(a.startswith("rolled back broken-1 to " + good) for a in actions), actions
        assert registry.active_id() == good
        assert registry.get("broken-1").status == "rolled_back"
        kinds = [a["kind"] for a in store.alarms(10_000)]
        assert "model rolled back" in kinds and kinds.count("model promoted") >= 2

        wait_until(lambda: api.get("/health").json()["model_version"] == good, 10)
        listing = api.get("/v1/models", headers=ADMIN).json()
        assert listing["active"] == good
        assert api.get("/v1/models").status_code == 401

        user = events[0].user_id
        wait_until(lambda: api.get(f"/v1/users/{user}/recommendations").json()["items"], 10)
