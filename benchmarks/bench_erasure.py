"""Erasure latency on the live stack: ``DELETE /v1/users/{id}`` → the shopper gone everywhere.

Starts its own broker, Redis, worker and API (embedded stack in a temp dir), fills the state
with the head of the Taobao log (straight to Kafka) and keeps a background load of events
flowing, then for N users with a history: DELETE, and time

- the answer: the tombstone acknowledged by the broker, the user's keys deleted by the API;
- Redis: until nothing of the user is left there (record, parked state, parked-index entry;
  their holdout and alarm samples go in the same script, checked once per user afterwards);
- the worker: until it applied the tombstone (state dropped, keys deleted again, the erasure
  recorded: what ``GET /v1/erasures/{id}`` reads).

"Gone everywhere" is the later of the last two. Reference, same run and same users: one
event's way through the same path (``POST /v1/events`` → the user's record shows it). Also
the erasure script's own cost in Redis with full holdout and alarm streams.

    python benchmarks/bench_erasure.py [--events 20000] [--users 100] [--load-rate 1000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import numpy as np
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_freshness import percentiles  # noqa: E402
from freshrec import processes  # noqa: E402
from freshrec.datasets import load_taobao  # noqa: E402
from freshrec.events import Event, encode_event  # noqa: E402
from freshrec.replay import iter_events  # noqa: E402
from freshrec.settings import Settings  # noqa: E402
from operators import user_pseudonym  # noqa: E402
from serving.auth import API_KEY_HEADER  # noqa: E402
from state.store import RedisStore  # noqa: E402

ADMIN_KEY = "bench-erasure-admin-key"
POLL_S = 0.002


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="Taobao events for the state")
    parser.add_argument("--users", type=int, default=100, help="users to erase")
    parser.add_argument("--load-rate", type=float, default=1000.0, help="background events/s")
    parser.add_argument("--json")
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="freshrec-bench-erasure-"))
    events = list(iter_events(load_taobao(limit=args.events), id_prefix="taobao-"))
    with processes.embedded_pipeline(run_dir, admin_api_key=ADMIN_KEY) as pipeline:
        settings, url = pipeline.settings, pipeline.api_url
        store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
        stop = threading.Event()
        try:
            fill_s = fill(settings, store, events)
            users = [u for u, _ in busiest(events)][: args.users]
            # The load spares the erased users: their later events would start them anew.
            spared = set(users)
            others = [e for e in events if e.user_id not in spared]
            load = threading.Thread(
                target=background_load, args=(settings, others, args.load_rate, stop)
            )
            load.start()
            timings = erase_users(url, store, users)
            stop.set()
            load.join()
        finally:
            stop.set()
        script = script_cost(store)

    result = {
        "users_erased": len(users),
        "background_events_per_s": args.load_rate,
        "state_fill_s": fill_s,
        "delete_answer": percentiles(timings["answer"]),
        "gone_from_redis": percentiles(timings["redis"]),
        "applied_by_worker": percentiles(timings["worker"]),
        "gone_everywhere": percentiles(timings["everywhere"]),
        "reference_event_to_record": percentiles(timings["event"]),
        "erase_script_full_streams": script,
    }
    g, r = result["gone_everywhere"], result["reference_event_to_record"]
    result["gone_everywhere_p50_over_event_p50"] = g["p50_ms"] / r["p50_ms"]
    for name in ("delete_answer", "gone_from_redis", "applied_by_worker", "gone_everywhere"):
        p = result[name]
        print(
            f"{name:<18}: p50 {p['p50_ms']:7.1f} ms  p90 {p['p90_ms']:7.1f}  "
            f"p99 {p['p99_ms']:7.1f}  max {p['max_ms']:7.1f}  ({p['n']} users)"
        )
    print(
        f"reference (POST /v1/events → record shows it): p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms; erasure/reference p50 ratio "
        f"{result['gone_everywhere_p50_over_event_p50']:.2f}"
    )
    print(
        f"erase script with {script['holdout_entries']:,} holdout + {script['alarm_entries']:,} "
        f"alarm entries: p50 {script['p50_ms']:.1f} ms, max {script['max_ms']:.1f} ms"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def busiest(events: list[Event]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for e in events:
        counts[e.user_id] = counts.get(e.user_id, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def fill(settings: Settings, store: RedisStore, events: list[Event]) -> float:
    """Produce the events straight to Kafka; seconds until the worker has applied them all."""
    t0 = time.monotonic()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    for e in events:
        while True:
            try:
                producer.produce(
                    settings.events_topic, key=e.user_id.encode(), value=encode_event(e)
                )
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(30)
    last = events[-1].user_id
    expected = sum(1 for e in events if e.user_id == last)
    while (r := store.get_user(last)) is None or r.events < expected:
        time.sleep(0.05)
    return time.monotonic() - t0


def background_load(
    settings: Settings, events: list[Event], rate: float, stop: threading.Event
) -> None:
    """The log again, with new ids and times, at ``rate`` events/s until ``stop``."""
    if rate <= 0:
        return
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    chunk = max(1, int(rate / 20))
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        now = datetime.now(UTC)
        for _ in range(chunk):
            e = events[n % len(events)]
            fresh = msgspec.structs.replace(e, event_id=f"load-{n}", ts=now)
            producer.produce(
                settings.events_topic, key=e.user_id.encode(), value=encode_event(fresh)
            )
            n += 1
        producer.poll(0)
        time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))
    producer.flush(10)


def traces(store: RedisStore, user: str) -> bool:
    """Whether anything of the user is left in their keys (one round trip)."""
    k = store.keys
    pipe = store.client.pipeline(transaction=False)
    pipe.exists(k.user(user), k.user_state(user), k.user_samples(user_pseudonym(user)))
    pipe.zscore(k.parked_users, user)
    present, indexed = pipe.execute()
    return bool(present) or indexed is not None


def in_streams(store: RedisStore, user: str) -> bool:
    pseudonym = user_pseudonym(user).encode()
    k = store.keys
    return any(
        f.get(b"user") == pseudonym
        for stream in (k.holdout, k.alarms)
        for _, f in store.client.xrange(stream)
    )


def wait(predicate: object, t0: float, timeout_s: float = 30.0) -> float:
    """Milliseconds from ``t0`` until ``predicate()`` holds."""
    while not predicate():  # type: ignore[operator]
        if time.perf_counter() - t0 > timeout_s:
            raise RuntimeError(f"not done within {timeout_s} s")
        time.sleep(POLL_S)
    return 1000 * (time.perf_counter() - t0)


def erase_users(url: str, store: RedisStore, users: list[str]) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {
        k: [] for k in ("answer", "redis", "worker", "everywhere", "event")
    }
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for user in users:
            erase_one(client, store, user, timings)
    return timings


def erase_one(
    client: httpx.Client, store: RedisStore, user: str, timings: dict[str, list[float]]
) -> None:
    """The reference (one event of the user), then the user's erasure, timed."""
    before = store.get_user(user)
    seen = 0 if before is None else before.events
    event = {
        "event_id": f"bench-{uuid.uuid4().hex}",
        "user_id": user,
        "item_id": "bench-item",
        "type": "view",
        "ts": datetime.now(UTC).isoformat(),
    }
    t0 = time.perf_counter()
    client.post("/v1/events", json=event).raise_for_status()
    timings["event"].append(
        wait(lambda: (r := store.get_user(user)) is not None and r.events > seen, t0)
    )

    t0 = time.perf_counter()
    response = client.delete(f"/v1/users/{user}", headers={API_KEY_HEADER: ADMIN_KEY})
    response.raise_for_status()
    timings["answer"].append(1000 * (time.perf_counter() - t0))
    erasure_id = response.json()["erasure_id"]
    redis_ms = wait(lambda: not traces(store, user), t0)
    worker_ms = wait(lambda: store.erasure_done_at(erasure_id) is not None, t0)
    timings["redis"].append(redis_ms)
    timings["worker"].append(worker_ms)
    # The worker's own deletion came after the API's: nothing may have come back.
    if traces(store, user) or in_streams(store, user):
        raise RuntimeError(f"{user} is still in Redis after the worker's erasure")
    timings["everywhere"].append(max(redis_ms, worker_ms))


def script_cost(store: RedisStore, repeats: int = 20) -> dict[str, float]:
    """The erasure script's time with the holdout and alarm streams at their bounds."""
    k = store.keys
    store.client.delete(k.holdout, k.alarms)
    vector = bytes(4 * store.factors)
    holdout = [
        (f"e{n}", vector, f"i{n % 500}", user_pseudonym(f"u{n % 2000}")) for n in range(20_000)
    ]
    for start in range(0, len(holdout), 2000):
        store.append_holdout(holdout[start : start + 2000])
    pipe = store.client.pipeline(transaction=False)
    for _ in range(10_000):
        pipe.xadd(k.alarms, {"kind": "popularity drift", "scope": "global", "detail": "d"})
    pipe.execute()
    sizes = (store.client.xlen(k.holdout), store.client.xlen(k.alarms))
    samples = []
    for n in range(repeats):
        t0 = time.perf_counter()
        store.erase_users([f"u{n}"])
        samples.append(1000 * (time.perf_counter() - t0))
    return {
        "holdout_entries": sizes[0],
        "alarm_entries": sizes[1],
        "p50_ms": float(np.percentile(samples, 50)),
        "max_ms": float(max(samples)),
    }


if __name__ == "__main__":
    main()
