"""Thin Bytewax adapters over the native operators: the keyed models and their builders.

The keyed steps' logics ARE the native models (``operators/src/user_model.rs``,
``item_model.rs``, ``feedback_model.rs``, ``popularity_shift.rs``): they answer Bytewax's
``StatefulBatchLogic`` calls by name, so registering them with its ABC is all the adapting
they need (a Python subclass would put an interpreted frame in front of every call, and an
object per key in front of every state). What the models must not do themselves — read
Redis, the process-wide replica and indexes — is handed to them here as callbacks.
"""

from __future__ import annotations

import threading

from bytewax.operators import StatefulBatchLogic

from dataflows.item_replica import shared_replica
from dataflows.retry import retry_while_unreachable
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
