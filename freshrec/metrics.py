"""Prometheus metrics of the worker and the API, in one place (names: docs/metrics.md).

The worker's metrics live in the default registry, which Bytewax's own dataflow API server
exposes on ``/metrics`` (``BYTEWAX_DATAFLOW_API_ENABLED``), next to Bytewax's metrics such
as ``bytewax_kafka_consumer_lag``. The API exposes the same registry (multi-process aware)
through Litestar's PrometheusController; its request metrics come from serving/http_metrics.py.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Final

import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

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
REQUESTS_SERVED: Final = Counter(
    "freshrec_recommendation_requests_total",
    "Recommendation and similar-item requests answered by this API process.",
)
USER_STATE_READS: Final = Counter(
    "freshrec_user_state_reads_total",
    "Personal answers by where the user's record and lists came from (copy, redis).",
    ["source"],
)
USER_STATE_PUSHED_KEYS: Final = Counter(
    "freshrec_user_state_pushed_keys_total",
    "User record and co-visitation list keys Redis pushed as changed to the API's copies.",
)
USER_STATE_COPY_BYTES: Final = Gauge(
    "freshrec_user_state_copy_bytes",
    "Bytes the API process's copies of user records and co-visitation lists hold.",
    multiprocess_mode="livesum",
)
ERASURES: Final = Counter(
    "freshrec_erasures_total",
    "Tombstones (DELETE /v1/users/{id}) the dataflow applied: state dropped, keys deleted.",
)
INGESTED: Final = Counter(
    "freshrec_ingested_events_total",
    "Events answered by the ingest API, by outcome (accepted, rejected, unavailable).",
    ["outcome"],
)


def total(metric: MetricWrapperBase, **labels: str) -> float:
    """Current value of a counter/gauge summed over samples matching ``labels``."""
    value = 0.0
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                value += sample.value
    return value


class RecentLatencies:
    """Latency samples of the last ``horizon_s`` seconds, for dashboard percentiles.

    Prometheus histograms are for scraping; the live dashboard wants exact recent p50/p99.
    """

    def __init__(self, horizon_s: float = 10.0, max_samples: int = 50_000) -> None:
        self.horizon_s = horizon_s
        self.samples: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def add(self, seconds: float, now: float | None = None) -> None:
        """Record one latency."""
        with self._lock:
            self.samples.append((time.time() if now is None else now, seconds))

    def percentiles(self, now: float | None = None) -> tuple[int, float | None, float | None]:
        """(count, p50 ms, p99 ms) over the horizon."""
        cutoff = (time.time() if now is None else now) - self.horizon_s
        with self._lock:
            values = [v for t, v in self.samples if t >= cutoff]
        if not values:
            return 0, None, None
        p50, p99 = np.percentile(np.asarray(values) * 1000.0, [50, 99])
        return len(values), float(p50), float(p99)


RECENT_FRESHNESS: Final = RecentLatencies()
RECENT_REQUESTS: Final = RecentLatencies()
