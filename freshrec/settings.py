"""One typed settings object for every freshrec process (ingest/serving API, worker, CLI).

Values come from ``FRESHREC_*`` environment variables; anything unset falls back to the
addresses recorded by ``freshrec stack up`` in the run dir, then to the documented defaults
below, so a plain ``freshrec demo`` runs on the embedded stack with no configuration.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import msgspec

from freshrec.variants import Variant, check_variants, parse_variants
from state.keys import check_namespace

LISTING_OVERFLOW_ODDS = 1e-12
"""Chance allowed that some item shard holds more of the popularity head than it lists."""

ENV_PREFIX = "FRESHREC_"
STACK_FILE_NAME = "stack.json"
DEFAULT_RUN_DIR = ".freshrec"
KAFKA_RESERVED_KEYS = frozenset({"bootstrap.servers", "metadata.broker.list"})
"""Set from ``kafka_bootstrap``, never from ``kafka_config``."""


def listed_per_shard(head: int, shards: int, overflow_odds: float = LISTING_OVERFLOW_ODDS) -> int:
    """The fewest items each of ``shards`` item shards must list to hold the popularity head.

    The union of the shards' lists holds the whole head of ``head`` items but for
    ``overflow_odds``. Items are hashed to shards, so a shard's share of the head is
    Binomial(head, 1/shards); this is the smallest ``c`` with
    ``shards * P(share > c) < overflow_odds`` (a union bound over the shards).

    A tight bound matters: with forward-decayed popularity every new item outscores the
    oldest listed ones, so each listed place is written to Redis (ZADD, later ZREM) as items
    churn through it. The old rule (8x the fair share) listed 128 per shard for the default
    head of 1,000 over 64 shards, where 53 suffice: on the Taobao head 48 instead of 128 cut
    Redis' time by ~12% and raised the flow's throughput ~12% (side by side). The old rule
    also listed too few as the shards approach the head's size (8 where 16 are needed for
    1,000 over 1,000 shards).
    """
    if shards <= 1 or head <= 0:
        return max(head, 0)
    p = 1.0 / shards
    # The binomial pmf in log space (no overflow for any head size), then its upper tail.
    log_pmf = [
        math.lgamma(head + 1)
        - math.lgamma(k + 1)
        - math.lgamma(head - k + 1)
        + k * math.log(p)
        + (head - k) * math.log1p(-p)
        for k in range(head + 1)
    ]
    tail = 0.0  # P(share > c), built from the top down
    for c in range(head, -1, -1):
        if shards * tail >= overflow_odds:
            return min(head, c + 1)
        tail += math.exp(log_pmf[c])
    return 0


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of freshrec, with its environment variable ``FRESHREC_<NAME upper>``."""

    # --- where things run -------------------------------------------------------------
    run_dir: str = DEFAULT_RUN_DIR
    """Directory for the local stack's pid/data files and the recovery store."""
    kafka_bootstrap: str = "127.0.0.1:9092"
    """``host:port[,host:port]`` of any Kafka-protocol broker (Tansu, Kafka, Redpanda)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis used for all online state; keys are namespaced by ``redis_prefix``."""
    redis_prefix: str = "fr"
    """Namespace of every Redis key (lets several deployments/tests share one Redis); keys
    start with it as a Redis Cluster hash tag, ``{fr}:`` (state/keys.py), so no braces."""

    # --- production connections (docs/deploy.md) -------------------------------------
    kafka_config: dict[str, str] = {}
    """librdkafka properties added to every Kafka client freshrec builds (the dataflow's
    source and dead-letter sink, the ingest and replay producers, the topic admin): the
    SASL/TLS settings of a managed cluster. Env: a JSON object, e.g.
    ``{"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", ...}``; numbers and
    booleans become librdkafka's strings. ``bootstrap.servers`` is ``kafka_bootstrap``'s."""

    # --- topics -----------------------------------------------------------------------
    events_topic: str = "events"
    dlq_topic: str = "events-dlq"
    events_partitions: int = 4
    """Partitions created by ``stack up``: the unit of dataflow parallelism."""

    # --- Kafka client tuning ------------------------------------------------------------
    consumer_fetch_wait_max_ms: int = 10
    """librdkafka ``fetch.wait.max.ms``: Tansu answers a waiting fetch only at this deadline,
    so it bounds click-to-state freshness (500 ms default gave p99 255 ms; 10 ms gives ~8 ms)."""
    consumer_batch_size: int = 1000
    consumer_tail: bool = True
    """Keep waiting for new events at the end of the topic; false ends the flow at the end
    (bounded replays, benchmarks)."""
    producer_linger_ms: int = 2
    produce_timeout_s: float = 5.0
    """How long ingest waits for the broker's ack before answering 503."""

    # --- event validation ---------------------------------------------------------------
    max_future_skew_s: int = 3600
    """Events stamped further in the future than this are rejected."""
    max_batch_events: int = 1000
    max_body_bytes: int = 1_048_576

    # --- model ---------------------------------------------------------------------------
    factors: int = 32
    """Latent dimension of user and item vectors."""
    learn_rate: float = 0.05
    regularization: float = 0.01
    init_std: float = 0.1
    seed: int = 42
    recent_items: int = 50
    """Length of each user's rolling window of recent interactions."""
    seen_items_max: int = 500
    """How many distinct consumed items per user are remembered for exclusion."""
    popularity_half_life_s: float = 86_400.0
    trend_half_life_s: float = 3_600.0
    """Short half-life of the trending score (compared with ``popularity_half_life_s``)."""
    covisit_half_life_s: float = 7 * 86_400.0
    covisit_span: int = 5
    """A session item pairs with at most this many previous items of the same session."""
    neighbours_per_item: int = 20
    """Top-M co-visited neighbours stored per item."""
    item_shards: int = 64
    """Keys of the dataflow's item state: items are hashed into this many shards, each one
    keyed step (one call per shard and batch instead of one per item). Fixed when a recovery
    store is created, like ``recovery_partitions``: another count re-keys the item state."""
    popular_list_size: int = 1000
    """Head of the global popularity ranking that serving reads. Each item shard lists in it
    only its ``popular_listed_per_shard`` most popular items, not every item it has seen."""
    dedup_horizon_s: float = 86_400.0
    """Repeated event ids within this much event time have one effect."""
    dedup_max_ids: int = 10_000
    """Hard bound of remembered event ids per user (a flood of distinct ids)."""
    session_gap_s: float = 1800.0
    user_idle_ttl_s: float = 600.0
    """Users idle (wall clock) this long leave worker memory; their state is parked in Redis."""
    user_retention_s: int = 30 * 86_400
    """A user's keys (record, parked state) expire this long after their last write: Redis
    TTLs the dataflow sets on every write. A shopper who comes back later starts anew."""
    feedback_window_s: float = 300.0
    """Tumbling window of recommendation feedback (CTR, conversion), in event time."""
    feedback_windows_kept: int = 288
    """Feedback windows kept per (model, segment): 288 × 5 min = 24 h."""
    drift_detection: bool = True
    """Per-user Page-Hinkley on the prequential loss, with refit and learning-rate boost."""
    prequential_sample_every: int = 10
    """Evaluate one event in N (by event id) test-then-train for the live HR@10; 0: off."""
    model_snapshot_every_s: float = 300.0
    """How often ``freshrec lifecycle`` freezes the live item factors as a candidate."""
    model_holdout_min: int = 300
    """Held-out interactions needed to validate a candidate or judge a promotion."""
    model_promotion_margin: float = 0.05
    model_rollback_margin: float = 0.2
    popularity_shift_window: int = 2000
    """Sampled interactions per window of the popularity-distribution drift detector."""
    recovery_partitions: int = 4
    """Recovery partitions created by ``freshrec worker -r DIR`` on first use: the most worker
    processes the deployment will ever run (Bytewax cannot add partitions later)."""
    archive_dir: str = ""
    """Root of the Parquet event archive; empty disables archiving."""
    item_refresh_ms: int = 100
    """How often the worker's and the API's item-factor replicas pull changed items."""

    worker_metrics_port: int = 3030
    """Port of the worker's /metrics (Bytewax dataflow API server); process i uses port + i.
    0 disables it."""

    # --- API -----------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = 1
    max_k: int = 100
    ingest_rate_limit_per_s: float = 500
    """Sustained ingest requests per second per client address; 0: no limit. Each
    API process counts for itself (in memory), so the limit is per process."""
    ingest_rate_burst: int = 0
    """Most ingest requests a client may send at once; 0: one second's worth of the rate."""
    admin_api_key: str = ""
    """Key for admin endpoints; empty disables them."""
    new_item_share: float = 0.2
    """Exploration: the share of a personal answer's positions (rounded down: 2 of 10, 1 of
    5, none of 4) that catalogue items without events yet may take, matched to the user's
    recent categories ("new in <category>"); an item leaves this pool with its first event.
    0 turns exploration off; at most 0.5."""
    max_rules: int = 10_000
    """Most merchandising rules ``/v1/rules`` stores (each API process compiles them all
    whenever one changes)."""
    serving_replica_mb: int = 256
    """Memory each API process may give its copies of user records and co-visitation lists,
    kept fresh by Redis's push (``state/replica.py``), so that a recommendation reads no
    Redis. Past it the copies written longest ago are dropped and their users are read from
    Redis again; 0 turns the copies off (every request reads Redis)."""
    bench_endpoints: bool = False
    """Mount ``/v1/bench/*`` reference endpoints (benchmarks/bench_serving.py only)."""

    # --- browser SDK and storefront (/sdk.js, /shop) -------------------------------------
    shop_origins: str = ""
    """Comma-separated origins whose pages may call the API from the browser (CORS), e.g.
    ``https://shop.example,https://www.shop.example``; ``*`` allows any; empty: none (the
    API's own ``/shop`` page needs no CORS)."""
    sdk_cache_s: int = 300
    """How long browsers and CDNs may cache ``/sdk.js`` (``Cache-Control: max-age``)."""

    # --- A/B variants (freshrec/variants.py) ---------------------------------------------
    variants: dict[str, Variant] = {}
    """Ranking variants users are split between by a stable hash of their id; empty: everyone
    in ``default``. Env: a JSON object, name -> ``{"weight": w, <knob>: value}``, knobs
    ``evidence_half``, ``covisit_weight``, ``trending_share``, ``max_per_category``."""

    def __post_init__(self) -> None:
        reserved = sorted(KAFKA_RESERVED_KEYS & set(self.kafka_config))
        if reserved:
            raise ValueError(
                f"kafka_config must not set {', '.join(reserved)}: use kafka_bootstrap"
            )
        if not all(isinstance(k, str) and k for k in self.kafka_config):
            raise ValueError("kafka_config keys must be non-empty librdkafka property names")
        check_namespace(self.redis_prefix)
        if not 0.0 <= self.new_item_share <= 0.5:
            raise ValueError(f"new_item_share must be in [0, 0.5], got {self.new_item_share}")
        if self.serving_replica_mb < 0:
            raise ValueError(f"serving_replica_mb must be >= 0, got {self.serving_replica_mb}")
        if self.user_retention_s < 1:
            raise ValueError(f"user_retention_s must be >= 1 s, got {self.user_retention_s}")
        check_variants(self.variants)

    @property
    def popular_listed_per_shard(self) -> int:
        """Items an item shard lists in the popularity ranking.

        The head is exact while no shard holds more than this many of it: see
        :func:`listed_per_shard`.
        """
        return listed_per_shard(self.popular_list_size, self.item_shards)

    @property
    def stack_file(self) -> Path:
        """Where ``freshrec stack up`` records the addresses of what it started."""
        return Path(self.run_dir) / STACK_FILE_NAME

    @property
    def shop_origin_list(self) -> list[str]:
        """:attr:`shop_origins` as a list, blanks dropped."""
        return [o.strip().rstrip("/") for o in self.shop_origins.split(",") if o.strip()]

    def redis_key_prefix(self) -> str:
        """Prefix with its separator, e.g. ``{fr}:`` (the namespace as a hash tag)."""
        return "{" + self.redis_prefix + "}:"


def _librdkafka_properties(name: str, text: str) -> dict[str, str]:
    """A JSON object of librdkafka properties from the environment, values as strings."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ValueError(
            f"{name} is not JSON ({exc}): expected an object like "
            '{"security.protocol": "SASL_SSL"}'
        ) from exc
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object of librdkafka properties")
    properties: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            properties[key] = "true" if item else "false"
        elif isinstance(item, str | int | float):
            properties[key] = str(item)
        else:
            raise ValueError(f"{name}: {key!r} must be a string, number or boolean")
    return properties


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for field in msgspec.structs.fields(Settings):
        env_name = ENV_PREFIX + field.name.upper()
        value = environ.get(env_name)
        if value is None:
            continue
        if field.name == "kafka_config":
            overrides[field.name] = _librdkafka_properties(env_name, value)
        elif field.name == "variants":
            overrides[field.name] = parse_variants(env_name, value)
        else:
            overrides[field.name] = value
    return overrides


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from the environment, the stack file and keyword overrides.

    Precedence (highest first): keyword overrides, ``FRESHREC_*`` variables, addresses in the
    run dir's ``stack.json`` (written by ``freshrec stack up``), built-in defaults.
    """
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    run_dir = overrides.get("run_dir") or env.get(ENV_PREFIX + "RUN_DIR") or DEFAULT_RUN_DIR
    stack_file = Path(run_dir) / STACK_FILE_NAME
    if stack_file.exists():
        try:
            recorded = json.loads(stack_file.read_text())
        except (OSError, ValueError):
            recorded = {}
        for name in ("kafka_bootstrap", "redis_url"):
            if isinstance(recorded.get(name), str):
                values[name] = recorded[name]
    values.update(_env_overrides(env))
    values.update(overrides)
    try:
        # strict=False lets "8000" from the environment become the int 8000.
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid freshrec setting: {exc}") from exc


def settings_env(settings: Settings) -> dict[str, str]:
    """``FRESHREC_*`` variables reproducing ``settings`` in a child process."""
    env: dict[str, str] = {}
    for field in msgspec.structs.fields(Settings):
        value = getattr(settings, field.name)
        text = msgspec.json.encode(value).decode() if isinstance(value, dict) else str(value)
        env[ENV_PREFIX + field.name.upper()] = text
    return env
