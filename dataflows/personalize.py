"""The personalization dataflow: Kafka events in, fresh user and item state out to Redis.

    events ─ decode ─┬─ dead letters ───────────────────────────────────────► events-dlq
                     └─ enrich ─┬─ archive (Parquet, when FRESHREC_ARCHIVE_DIR is set)
                                └─ key by user ─ user_model ─┬─ user records, parked ─► Redis
                                   (dedup, session, window,  ├─ item updates, co-visits
                                    ISGD user half)          │   ─ key by item ─ item_model
                                                             │     (ISGD item half, popularity,
                                                             │      trend, neighbours) ─► Redis
                                                             └─ segment hits
                                                                 ─ key by segment+item
                                                                 ─ segment_popularity ─► Redis

Run it with ``python -m bytewax.run dataflows.personalize:flow`` (settings from the
environment, see ``freshrec.settings``). Step ids key the recovery state: renaming one
discards its state, so treat them as a schema.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source

from dataflows import kafka_io, steps
from dataflows.archive_sink import ArchiveItem, ArchiveSink
from dataflows.item_replica import shared_replica
from dataflows.live_quality import live_quality
from freshrec.settings import Settings, load_settings
from operators.enrich import enrich, segment_key
from operators.isgd import IsgdParams
from operators.item_state import ItemConfig
from operators.recalibration import UserRecalibrationConfig
from operators.user_state import CoVisit, ItemUpdate, UserConfig
from state.store import RedisStore


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


def enrich_event(arrived: kafka_io.Arrived) -> steps.EnrichedEvent:
    """Attach the event's context and segment."""
    context = enrich(arrived.event)
    return steps.EnrichedEvent(arrived.event, context, segment_key(context), arrived.arrival_s)


def archive_row(e: steps.EnrichedEvent) -> tuple[str, ArchiveItem]:
    """The archive's row for an event, keyed by user (routes it to an archive partition)."""
    ctx = e.context
    enrichment = {
        "device_class": ctx.device_class,
        "tod_bucket": ctx.tod_bucket,
        "weekday": ctx.weekday,
        "local_hour": ctx.local_hour,
        "segment": e.segment,
    }
    return e.event.user_id, (e.event, enrichment)


def _is_arrived(x: object) -> bool:
    return isinstance(x, kafka_io.Arrived)


def _is_item_message(x: object) -> bool:
    return isinstance(x, ItemUpdate | CoVisit)


def _is_segment_hit(x: object) -> bool:
    return isinstance(x, steps.SegmentHit)


def _holdout_item(x: object) -> str | None:
    return x.item_id if isinstance(x, steps.HoldoutSample) else None


def _is_feedback_hit(x: object) -> bool:
    return isinstance(x, steps.FeedbackHit)


def _segment_item_key(hit: steps.SegmentHit) -> str:
    return f"{hit.segment}\x1f{hit.item_id}"


def build_flow(settings: Settings, source: Source[object] | None = None) -> Dataflow:
    """Wire the personalization flow; ``source`` replaces Kafka in tests."""
    params = isgd_params(settings)
    flow = Dataflow("freshrec_personalize")
    raw = op.input("kafka_in", flow, source or kafka_io.build_source(settings))
    decoded = op.map(
        "decode",
        raw,
        partial(kafka_io.decode_arrival, max_future_skew_s=settings.max_future_skew_s),
    )
    valid = op.branch("split_dead_letters", decoded, _is_arrived)
    letters = op.map("dead_letter_record", valid.falses, kafka_io.dead_letter_message)
    if source is None:
        op.output("dlq_out", letters, kafka_io.build_dlq_sink(settings))

    enriched = op.map("enrich", valid.trues, enrich_event)
    if settings.archive_dir:
        archived = op.map("archive_row", enriched, archive_row)
        op.output("archive_out", archived, ArchiveSink(Path(settings.archive_dir)))

    by_user = op.key_on("key_by_user", enriched, lambda e: e.event.user_id)
    replica = shared_replica(
        settings.redis_url, settings.redis_prefix, params, settings.item_refresh_ms / 1000
    )
    user_out = op.key_rm(
        "unkey_user",
        op.stateful_batch(
            "user_model",
            by_user,
            partial(
                steps.build_user_logic,
                params=params,
                config=user_config(settings),
                replica=replica,
                store=RedisStore.from_url(
                    settings.redis_url, settings.redis_prefix, settings.factors
                ),
                idle_ttl_s=settings.user_idle_ttl_s,
                quality=(
                    live_quality(settings.prequential_sample_every)
                    if settings.prequential_sample_every
                    else None
                ),
            ),
        ),
    )
    to_items = op.branch("split_item_messages", user_out, _is_item_message)
    by_item = op.key_on("key_by_item", to_items.trues, lambda m: m.item_id)
    item_out = op.stateful_batch(
        "item_model",
        by_item,
        partial(
            steps.build_item_logic,
            params=params,
            config=item_config(settings),
            top_m=settings.neighbours_per_item,
        ),
    )
    to_feedback = op.branch("split_feedback_hits", to_items.falses, _is_feedback_hit)
    by_model_segment = op.key_on(
        "key_by_model_segment", to_feedback.trues, lambda h: f"{h.model}|{h.segment}"
    )
    feedback_out = op.stateful_batch(
        "feedback",
        by_model_segment,
        lambda resume: steps.FeedbackLogic(
            resume, settings.feedback_window_s, settings.feedback_windows_kept
        ),
    )
    to_segments = op.branch("split_segment_hits", to_feedback.falses, _is_segment_hit)
    sampled_items = op.filter_map("sampled_items", to_segments.falses, _holdout_item)
    popularity_alarms = op.stateful_batch(
        "popularity_shift",
        op.key_on("key_all", sampled_items, lambda _: "all"),
        lambda resume: steps.PopularityShiftLogic(resume, settings.popularity_shift_window),
    )
    by_segment_item = op.key_on("key_by_segment_item", to_segments.trues, _segment_item_key)
    segment_out = op.stateful_batch(
        "segment_popularity",
        by_segment_item,
        lambda resume: steps.SegmentPopularityLogic(resume, settings.popularity_half_life_s),
    )
    state_out = op.merge(
        "state_out",
        to_segments.falses,
        op.key_rm("unkey_item", item_out),
        op.key_rm("unkey_segment", segment_out),
        op.key_rm("unkey_feedback", feedback_out),
        op.key_rm("unkey_popularity_shift", popularity_alarms),
    )
    op.output(
        "redis_out",
        state_out,
        steps.RedisSink(
            settings.redis_url,
            settings.redis_prefix,
            settings.factors,
            settings.parked_state_ttl_s,
            settings.feedback_windows_kept,
        ),
    )
    return flow


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.personalize:flow` looks up `flow`; building it lazily
    # keeps importing this module free of side effects (tests build their own flows).
    if name == "flow":
        return build_flow(load_settings())
    raise AttributeError(name)
