"""The personalization dataflow: Kafka events in, fresh user and item state out to Redis.

    events ─ key_by_user ─ user_model ─┬─ dead_letters ───────────────────────────► events-dlq
             (Kafka key =   (decode,     ├─ archive_rows ─ Parquet archive (FRESHREC_ARCHIVE_DIR)
              user id)       validate,   ├─ item_batches ─ item_model ─────────────┐
                             enrich,     │  (one message per   (per item shard:     │
                             dedup,      │   shard and batch)   ISGD item half,      │
                             session,    │                      popularity, trend,   │
                             window,     │                      neighbours, segment  │
                                         │                      popularity)          │
                             ISGD user   ├─ feedback_batches ─ feedback (CTR, drift) ─┤
                             half, drift,├─ popularity_samples ─ popularity_shift ───┤
                             HR@10)      └───────────────────────────────────────────┴─► Redis

Every step is one native call per batch (``operators/src/``; the message types are in
``operators/src/messages.rs``); ``dataflows/steps.py`` adapts the keyed models. Run it with
``python -m bytewax.run dataflows.personalize:flow`` (settings from the environment, see
``freshrec.settings``). Step ids key the recovery state: renaming one discards its state, so
treat them as a schema.
"""

from __future__ import annotations

from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source

from dataflows import kafka_io, steps
from dataflows.archive_sink import ArchiveSink, archive_rows
from dataflows.item_replica import shared_replica
from dataflows.redis_sink import RedisSink, WorkerIdentity, to_own_writer
from freshrec.settings import Settings, load_settings
from operators import (
    FeedbackModelFactory,
    IsgdParams,
    ItemConfig,
    ItemModelFactory,
    ItemRouter,
    PopularityShiftModelFactory,
    UserConfig,
    UserRecalibrationConfig,
    dead_letters,
    feedback_batches,
    key_by_user,
    popularity_samples,
)


def isgd_params(settings: Settings) -> IsgdParams:
    """Model hyperparameters from the settings."""
    return IsgdParams(
        factors=settings.factors,
        learn_rate=settings.learn_rate,
        regularization=settings.regularization,
        init_std=settings.init_std,
        seed=settings.seed,
    )


def user_config(settings: Settings) -> UserConfig:
    """Per-user bounds from the settings."""
    return UserConfig(
        window=settings.recent_items,
        seen_max=settings.seen_items_max,
        dedup_horizon_s=settings.dedup_horizon_s,
        dedup_max_ids=settings.dedup_max_ids,
        session_gap_s=settings.session_gap_s,
        covisit_span=settings.covisit_span,
        recalibration=UserRecalibrationConfig() if settings.drift_detection else None,
    )


def item_config(settings: Settings) -> ItemConfig:
    """Per-item half-lives from the settings."""
    return ItemConfig(
        half_life_s=settings.popularity_half_life_s,
        trend_half_life_s=settings.trend_half_life_s,
        covisit_half_life_s=settings.covisit_half_life_s,
    )


def build_flow(settings: Settings, source: Source[object] | None = None) -> Dataflow:
    """Wire the personalization flow; ``source`` replaces Kafka in tests."""
    params = isgd_params(settings)
    flow = Dataflow("freshrec_personalize")
    raw = op.input("kafka_in", flow, source or kafka_io.build_source(settings))
    by_user = op.flat_map_batch("key_by_user", raw, key_by_user)
    users = op.stateful_batch(
        "user_model", by_user, steps.build_user_model(settings, params, user_config(settings))
    )
    letters = op.flat_map_batch("dead_letters", users, dead_letters)
    # Before the Redis sink: it learns the worker's index, which names its sink partition.
    op.output("worker_identity", letters, WorkerIdentity())
    if source is None:
        records = op.map("dead_letter_record", letters, kafka_io.dead_letter_message)
        op.output("dlq_out", records, kafka_io.build_dlq_sink(settings))
    if settings.archive_dir:
        rows = op.flat_map_batch("archive_rows", users, archive_rows)
        op.output("archive_out", rows, ArchiveSink(Path(settings.archive_dir)))
    items = op.stateful_batch(
        "item_model",
        op.flat_map_batch("item_batches", users, ItemRouter(settings.item_shards)),
        ItemModelFactory(
            params,
            item_config(settings),
            settings.neighbours_per_item,
            replica=shared_replica(settings.redis_url, settings.redis_prefix, params).vectors,
            popular_listed=settings.popular_listed_per_shard,
        ),
    )
    feedback = op.stateful_batch(
        "feedback",
        op.flat_map_batch("feedback_batches", users, feedback_batches),
        FeedbackModelFactory(settings.feedback_window_s, settings.feedback_windows_kept),
    )
    shift = op.stateful_batch(
        "popularity_shift",
        op.flat_map_batch("popularity_samples", users, popularity_samples),
        PopularityShiftModelFactory(settings.popularity_shift_window),
    )
    state_out = op.merge("state_out", users, items, feedback, shift)
    own_writer = op.flat_map_batch("to_own_writer", state_out, to_own_writer)
    op.output("redis_out", own_writer, RedisSink(settings))
    return flow


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.personalize:flow` looks up `flow`; building it lazily
    # keeps importing this module free of side effects (tests build their own flows).
    if name == "flow":
        return build_flow(load_settings())
    raise AttributeError(name)
