"""Live monitoring for the dashboard: per-second series from the worker and API samples.

Workers and API processes each append one sample per second to Redis (cumulative counters
plus recent percentiles); this module turns them into rates per second, summed over
processes, together with recommendation feedback and drift alarms. No raw user id reaches
the dashboard: per-user alarms name a pseudonym, and users appear otherwise only as counts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from freshrec import metrics
from freshrec.variants import feedback_by_variant, split_model_key
from state.store import RedisStore

log = logging.getLogger(__name__)

DASHBOARD_HTML = Path(__file__).parent / "static" / "dashboard.html"
RATE_FIELDS = {
    "applied": "events_per_s",
    "dead_letters": "dead_letters_per_s",
    "duplicates": "duplicates_per_s",
    "requests": "requests_per_s",
    "fallbacks": "fallbacks_per_s",
}
LEVEL_FIELDS_SUM = ("lag",)
LEVEL_FIELDS_MAX = ("fresh_p50_ms", "fresh_p99_ms", "p50_ms", "p99_ms", "hr10")


class Monitoring(msgspec.Struct, frozen=True):
    """Everything the dashboard draws."""

    now_ms: int
    worker: list[dict[str, float]]
    api: list[dict[str, float]]
    feedback: list[dict[str, Any]]
    alarms: list[dict[str, str]]
    totals: dict[str, float]
    variants: list[dict[str, Any]] = []
    """CTR and conversion per (model, A/B variant) over the kept feedback windows."""


def series(samples: list[dict[str, float]]) -> list[dict[str, float]]:
    """Per-second points: counter rates summed over processes, levels summed or maxed."""
    by_pid: dict[float, list[dict[str, float]]] = defaultdict(list)
    for s in samples:
        by_pid[s.get("pid", 0.0)].append(s)
    points: dict[int, dict[str, float]] = defaultdict(dict)
    for rows in by_pid.values():
        rows.sort(key=lambda r: r["id_ms"])
        for prev, cur in zip(rows, rows[1:], strict=False):
            dt = (cur["id_ms"] - prev["id_ms"]) / 1000.0
            if dt <= 0:
                continue
            second = int(cur["id_ms"] // 1000)
            point = points[second]
            for field, name in RATE_FIELDS.items():
                if field in cur and field in prev:
                    rate = max(0.0, cur[field] - prev[field]) / dt
                    point[name] = point.get(name, 0.0) + rate
            for field in LEVEL_FIELDS_SUM:
                if field in cur:
                    point[field] = point.get(field, 0.0) + cur[field]
            for field in LEVEL_FIELDS_MAX:
                if field in cur:
                    point[field] = max(point.get(field, float("-inf")), cur[field])
    return [{"t": float(sec * 1000), **points[sec]} for sec in sorted(points)]


def collect(store: RedisStore, window_s: int = 600) -> Monitoring:
    """The dashboard's data for the last ``window_s`` seconds."""
    now_ms = int(time.time() * 1000)
    since = now_ms - window_s * 1000
    worker = series(store.monitor_samples("worker", since, count=20_000))
    api = series(store.monitor_samples("api", since, count=20_000))
    feedback: list[dict[str, Any]] = []
    per_model: dict[tuple[str, float], list[int]] = defaultdict(lambda: [0, 0, 0])
    for model, segment in store.feedback_keys()[:500]:
        for w in store.feedback(model, segment):
            acc = per_model[(model, w.start_s)]
            acc[0] += w.impressions
            acc[1] += w.clicks
            acc[2] += w.conversions
    per_variant: dict[str, tuple[int, int, int]] = {}
    for (model, start), (imp, clicks, conv) in sorted(per_model.items(), key=lambda kv: kv[0][1]):
        i, c, v = per_variant.get(model, (0, 0, 0))
        per_variant[model] = (i + imp, c + clicks, v + conv)
        model_name, variant = split_model_key(model)
        feedback.append(
            {
                "model": model_name,
                "variant": variant,
                "t": start * 1000,
                "impressions": imp,
                "ctr": clicks / imp if imp else None,
                "conversion": conv / clicks if clicks else None,
            }
        )
    latest = store.monitor_samples("worker", now_ms - 5000)
    totals = {
        "events_applied": sum({s["pid"]: s.get("applied", 0.0) for s in latest}.values()),
        "dead_letters": sum({s["pid"]: s.get("dead_letters", 0.0) for s in latest}.values()),
        "items_in_model": float(store.client.hlen(store.keys.item_factors)),
        "users_erased": float(store.erasures_done()),
    }
    alarms = [without_user_ids(a) for a in store.alarms(50)]
    return Monitoring(
        now_ms,
        worker,
        api,
        feedback[-200:],
        alarms,
        totals,
        feedback_by_variant(per_variant),
    )


def without_user_ids(alarm: dict[str, str]) -> dict[str, str]:
    """An alarm as the dashboard may show it: users by pseudonym only.

    The dataflow names the user of a per-user alarm by pseudonym (and says which in its
    ``user`` field); a per-user alarm without one was recorded before that and may name the
    user's id: its detail is withheld.
    """
    if alarm.get("scope") == "user" and "user" not in alarm:
        return {**alarm, "detail": "(withheld: recorded before user pseudonyms)"}
    return alarm


class MonitoringController(Controller):
    """The live dashboard and its data."""

    tags = ["monitoring"]

    @get("/dashboard", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
    def dashboard(self) -> Response[bytes]:
        return Response(DASHBOARD_HTML.read_bytes(), media_type=MediaType.HTML)

    @get(
        "/v1/monitoring",
        summary="Live series for the dashboard",
        description="Events/s, dead letters, consumer lag, freshness, serving latency, "
        "prequential HR@10, recommendation CTR/conversion per model and A/B variant, drift alarms.",
        sync_to_thread=False,
    )
    def monitoring(
        self,
        store: NamedDependency[RedisStore],
        window_s: Annotated[int, QueryParameter(ge=10, le=3600)] = 600,
    ) -> Monitoring:
        return collect(store, window_s)


def api_sample() -> dict[str, float]:
    """The numbers of this API process, right now."""
    count, p50, p99 = metrics.RECENT_REQUESTS.percentiles()
    sample = {
        "pid": float(os.getpid()),
        "requests": metrics.total(metrics.REQUESTS_SERVED),
        "fallbacks": metrics.total(metrics.FALLBACKS),
        "recent_n": float(count),
    }
    if p50 is not None and p99 is not None:
        sample["p50_ms"] = p50
        sample["p99_ms"] = p99
    return sample


def start_api_monitor(store: RedisStore, stop: threading.Event, interval_s: float = 1.0) -> None:
    """Append this process' sample every second until ``stop`` is set."""

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                store.append_monitor("api", api_sample())
            except Exception as exc:  # Redis away: the dashboard misses a point, nothing else
                log.debug("api monitor sample not written: %s", exc)

    threading.Thread(target=loop, name="freshrec-api-monitor", daemon=True).start()
