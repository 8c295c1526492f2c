"""The worker's once-a-second monitoring sample, written to Redis for the live dashboard.

Prometheus is for scraping by an operator's stack; the dashboard served by the API needs the
same numbers without one, so each worker process appends a small sample per second: its
cumulative event counters, the consumer lag Bytewax measures, recent freshness percentiles
and the prequential hit rate.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from bytewax.connectors.kafka import BYTEWAX_CONSUMER_LAG_GAUGE

from freshrec import metrics
from state.store import RedisStore

log = logging.getLogger(__name__)

_started: set[tuple[str, str]] = set()
_lock = threading.Lock()


def worker_sample() -> dict[str, float]:
    """The numbers of this process, right now."""
    count, p50, p99 = metrics.RECENT_FRESHNESS.percentiles()
    sample = {
        "pid": float(os.getpid()),
        "applied": metrics.total(metrics.EVENTS, outcome="applied"),
        "duplicates": metrics.total(metrics.EVENTS, outcome="duplicate"),
        "dead_letters": metrics.total(metrics.EVENTS, outcome="dead_letter"),
        "lag": metrics.total(BYTEWAX_CONSUMER_LAG_GAUGE),
        "hr10": metrics.total(metrics.PREQUENTIAL_HR10),
        "drift_alarms": metrics.total(metrics.DRIFT_ALARMS),
        "recalibrations": metrics.total(metrics.RECALIBRATIONS),
        "fresh_n": float(count),
    }
    if p50 is not None and p99 is not None:
        sample["fresh_p50_ms"] = p50
        sample["fresh_p99_ms"] = p99
    return sample


def start_worker_monitor(store: RedisStore, interval_s: float = 1.0) -> None:
    """Start this process' monitor thread once per Redis namespace."""
    key = (str(store.client.connection_pool.connection_kwargs), store.keys.prefix)
    with _lock:
        if key in _started:
            return
        _started.add(key)

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            try:
                store.append_monitor("worker", worker_sample())
            except Exception as exc:  # Redis away: the sample is lost, the worker is not
                log.debug("monitor sample not written: %s", exc)

    threading.Thread(target=loop, name="freshrec-monitor", daemon=True).start()
