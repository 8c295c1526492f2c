"""The personalization dataflow: Kafka events in, fresh user and item state out to Redis.

    events topic ─ decode ─┬─ dead letters ──────────────────────────────► events-dlq topic
                           └─ key by user ─ user_model ─┬─ user records ──► Redis
                                                        └─ item updates ─ key by item
                                                            ─ item_model ─ item states ─► Redis

Run it with ``python -m bytewax.run dataflows.personalize:flow`` (settings from the
environment, see ``freshrec.settings``). Step ids key the recovery state: renaming one
discards its state, so treat them as a schema.
"""

from __future__ import annotations

from functools import partial

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source

from dataflows import kafka_io, steps
from dataflows.item_replica import shared_replica
from freshrec.events import Event
from freshrec.settings import Settings, load_settings
from operators.isgd import IsgdParams
from operators.user_state import ItemUpdate


def isgd_params(settings: Settings) -> IsgdParams:
    """Model hyperparameters from the settings."""
    return IsgdParams(
        factors=settings.factors,
        learn_rate=settings.learn_rate,
        regularization=settings.regularization,
        init_std=settings.init_std,
        seed=settings.seed,
    )


def build_flow(settings: Settings, source: Source[object] | None = None) -> Dataflow:
    """Wire the personalization flow; ``source`` replaces Kafka in tests."""
    params = isgd_params(settings)
    flow = Dataflow("freshrec_personalize")
    raw = op.input("kafka_in", flow, source or kafka_io.build_source(settings))
    decoded = op.map(
        "decode",
        raw,
        partial(kafka_io.decode_message, max_future_skew_s=settings.max_future_skew_s),
    )
    split = op.branch("split_dead_letters", decoded, lambda x: isinstance(x, Event))
    if source is None:
        letters = op.map("dead_letter_record", split.falses, kafka_io.dead_letter_message)
        op.output("dlq_out", letters, kafka_io.build_dlq_sink(settings))

    by_user = op.key_on("key_by_user", split.trues, lambda e: e.user_id)
    replica = shared_replica(
        settings.redis_url, settings.redis_prefix, params, settings.item_refresh_ms / 1000
    )
    user_out = op.stateful_batch(
        "user_model",
        by_user,
        partial(
            steps.build_user_logic,
            params=params,
            window=settings.recent_items,
            seen_max=settings.seen_items_max,
            replica=replica,
        ),
    )
    user_split = op.branch("split_item_updates", op.key_rm("unkey_user", user_out), _is_item_update)
    by_item = op.key_on("key_by_item", user_split.trues, lambda u: u.item_id)
    item_out = op.stateful_batch(
        "item_model",
        by_item,
        partial(steps.build_item_logic, params=params, half_life_s=settings.popularity_half_life_s),
    )
    state_out = op.merge("state_out", user_split.falses, op.key_rm("unkey_item", item_out))
    op.output(
        "redis_out",
        state_out,
        steps.RedisSink(settings.redis_url, settings.redis_prefix, settings.factors),
    )
    return flow


def _is_item_update(x: object) -> bool:
    return isinstance(x, ItemUpdate)


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.personalize:flow` looks up `flow`; building it lazily
    # keeps importing this module free of side effects (tests build their own flows).
    if name == "flow":
        return build_flow(load_settings())
    raise AttributeError(name)
