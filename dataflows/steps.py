"""Thin Bytewax adapters over the native operators: keyed models, their builders, the sink.

The keyed steps' logics ARE the native models (``operators/src/user_model.rs``,
``item_model.rs``, ``feedback_model.rs``, ``popularity_shift.rs``): they answer Bytewax's
``StatefulBatchLogic`` calls by name, so registering them with its ABC is all the adapting
they need (a Python subclass would put an interpreted frame in front of every call, and an
object per key in front of every state). What the models must not do themselves — read
Redis, the process-wide replica and indexes — is handed to them here as callbacks.
"""

from __future__ import annotations

import threading
import time

from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.item_replica import shared_replica
from dataflows.monitor import start_worker_monitor
from dataflows.retry import retry_while_unreachable
from freshrec import metrics
from freshrec.settings import Settings
from operators import (
    FeedbackModel,
    IsgdParams,
    ItemModel,
    LiveQuality,
    ParkedUsers,
    PopularityShiftModel,
    UserConfig,
    UserModel,
    UserModelFactory,
    collect_writes,
)
from state.store import RedisStore

for _model in (UserModel, ItemModel, FeedbackModel, PopularityShiftModel):
    StatefulBatchLogic.register(_model)

_shared: dict[tuple[object, ...], object] = {}
_shared_lock = threading.Lock()


def _per_process(key: tuple[object, ...], build: type | object) -> object:
    with _shared_lock:
        if key not in _shared:
            _shared[key] = build() if callable(build) else build
        return _shared[key]


def parked_users(store: RedisStore) -> ParkedUsers:
    """The index of parked users of this process, loaded from the store once."""

    def load() -> ParkedUsers:
        parked = ParkedUsers()
        for ids in retry_while_unreachable(lambda: list(store.parked_user_ids())):
            parked.add(ids)
        return parked

    key = ("parked", str(store.client.connection_pool.connection_kwargs), store.keys.prefix)
    return _per_process(key, load)  # type: ignore[return-value]


def live_quality(settings: Settings) -> LiveQuality:
    """The sampled test-then-train HR@10 and global drift policy of this process' namespace.

    Keyed by Redis and prefix too: two flows in one process (the quality harness's served
    model next to another, tests) must not share a drift window.
    """
    sample_every = settings.prequential_sample_every
    key = ("quality", sample_every, settings.redis_url, settings.redis_prefix)
    quality = _per_process(key, lambda: LiveQuality(sample_every))
    return quality  # type: ignore[return-value]


def build_user_model(
    settings: Settings, params: IsgdParams, config: UserConfig
) -> UserModelFactory:
    """The user model's builder, wired to this process' replica, indexes and Redis."""
    feed = shared_replica(settings.redis_url, settings.redis_prefix, params)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    return UserModelFactory(
        params,
        config,
        replica=feed.vectors,
        quality=live_quality(settings) if settings.prequential_sample_every else None,
        parked=parked_users(store),
        refresh_items=feed.refresh,
        refresh_interval_s=settings.item_refresh_ms / 1000,
        fetch_parked=lambda user_id: retry_while_unreachable(
            lambda: store.parked_user_state(user_id)
        ),
        idle_ttl_s=settings.user_idle_ttl_s,
        max_future_skew_s=settings.max_future_skew_s,
        archive=bool(settings.archive_dir),
    )


class _RedisPartition(StatelessSinkPartition[object]):
    def __init__(
        self, store: RedisStore, retention_s: int, feedback_keep: int, quality: LiveQuality | None
    ) -> None:
        self.store = store
        self.retention_s = retention_s
        self.feedback_keep = feedback_keep
        self.quality = quality

    def write_batch(self, items: list[object]) -> None:
        writes = collect_writes(items)
        # While Redis is away the flow waits here (backpressure) instead of crashing; every
        # write is idempotent, so the repeat after an outage is safe.
        retry_while_unreachable(
            lambda: self.store.write_batch(writes, self.retention_s, self.feedback_keep)
        )
        written = time.time()
        for arrival_s in writes.arrivals:
            freshness = max(0.0, written - arrival_s)
            metrics.FRESHNESS.observe(freshness)
            metrics.RECENT_FRESHNESS.add(freshness, written)
        metrics.EVENTS.labels("applied").inc(writes.applied)
        metrics.EVENTS.labels("duplicate").inc(writes.duplicates)
        metrics.EVENTS.labels("dead_letter").inc(writes.dead_letters)
        metrics.ERASURES.inc(len(writes.erasure_ids))
        for scope, count in (("user", writes.user_alarms), ("global", writes.global_alarms)):
            metrics.DRIFT_ALARMS.labels(scope).inc(count)
            metrics.RECALIBRATIONS.labels(scope).inc(count)
        metrics.DRIFT_ALARMS.labels("global").inc(writes.ctr_alarms + writes.shift_alarms)
        if self.quality is not None:
            metrics.PREQUENTIAL_HR10.set(self.quality.window_recall)

    def close(self) -> None:
        self.store.client.close()


class RedisSink(DynamicSink[object]):
    """Writes every state output of a batch to Redis in one pipeline (versioned, idempotent)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        s = self.settings
        store = RedisStore.from_url(s.redis_url, s.redis_prefix, s.factors)
        start_worker_monitor(RedisStore.from_url(s.redis_url, s.redis_prefix, s.factors))
        quality = live_quality(s) if s.prequential_sample_every else None
        return _RedisPartition(store, s.user_retention_s, s.feedback_windows_kept, quality)
