"""Prometheus metrics of the worker and the API, in one place (names: docs/metrics.md).

The worker's metrics live in the default registry, which Bytewax's own dataflow API server
exposes on ``/metrics`` (``BYTEWAX_DATAFLOW_API_ENABLED``), next to Bytewax's metrics such
as ``bytewax_kafka_consumer_lag``. The API exposes the same registry (multi-process aware)
through Litestar's Prometheus plugin.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

EVENTS: Final = Counter(
    "freshrec_events_total",
    "Events seen by the dataflow, by outcome (applied, duplicate, dead_letter).",
    ["outcome"],
)
FRESHNESS: Final = Histogram(
    "freshrec_freshness_seconds",
    "Time from an event's arrival on the broker to its user's record in Redis.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PREQUENTIAL_HR10: Final = Gauge(
    "freshrec_prequential_hr10",
    "Hit rate @10 of the live model on sampled events, before learning from them (sliding).",
)
DRIFT_ALARMS: Final = Counter(
    "freshrec_drift_alarms_total", "Drift detector alarms, by scope (user, global).", ["scope"]
)
RECALIBRATIONS: Final = Counter(
    "freshrec_recalibrations_total", "Model recalibrations, by scope (user, global).", ["scope"]
)
FALLBACKS: Final = Counter(
    "freshrec_fallback_total",
    "Recommendation answers served from the in-process popular list, by reason.",
    ["reason"],
)
INGESTED: Final = Counter(
    "freshrec_ingested_events_total",
    "Events answered by the ingest API, by outcome (accepted, rejected, unavailable).",
    ["outcome"],
)
