"""Click → changed recommendations latency and ingest throughput, on the real stack.

Starts its own broker, Redis, worker and API (embedded stack in a temp dir), replays the head
of the Taobao log through the API (ingest throughput, next to raw Kafka produce of the same
events in the same run as the reference), then for N clicks: GET a user's recommendations,
POST one view event, poll GET until the answer changes (items or scores). Prints p50/p99.

    python benchmarks/bench_freshness.py [--events 20000] [--clicks 200] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from confluent_kafka import Producer

from freshrec import processes
from freshrec.datasets import load_taobao
from freshrec.events import encode_event
from freshrec.replay import iter_events, send_to_api
from freshrec.stack import create_topics, embedded_stack
from state.store import RedisStore


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_ms)
    return {
        "n": len(arr),
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "max_ms": float(arr.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--clicks", type=int, default=200)
    parser.add_argument("--json")
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="freshrec-bench-"))
    frame = load_taobao(limit=args.events)
    events = list(iter_events(frame, id_prefix="taobao-"))
    with embedded_stack(run_dir) as settings:
        # Reference: the same events produced straight to Kafka (another topic), same run,
        # before the worker and the API start.
        create_topics(settings.kafka_bootstrap, {"reference": settings.events_partitions})
        ref_events_per_s = raw_produce_rate(settings.kafka_bootstrap, events)
        with processes.running_pipeline(settings, run_dir) as pipeline:
            url = pipeline.api_url
            ingest = send_to_api(events, url, progress=False)
            store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
            last = events[-1].user_id
            expected = sum(1 for e in events if e.user_id == last)
            caught_up_from = time.monotonic()
            while (r := store.get_user(last)) is None or r.events < expected:
                time.sleep(0.01)
            catch_up_s = time.monotonic() - caught_up_from
            latencies, acks = run_clicks(url, events, args.clicks)
            worker_samples = store.monitor_samples("worker", 0, count=100_000)

    result = {
        "ingest_api_events_per_s": ingest.events_per_s,
        "kafka_produce_events_per_s": ref_events_per_s,
        "ingest_over_raw_produce": ingest.events_per_s / ref_events_per_s,
        "catch_up_after_replay_s": catch_up_s,
        "click_to_changed_recommendations": percentiles(latencies),
        "post_ack": percentiles(acks),
        "click_latencies_ms": latencies,
        "worker_samples": worker_samples,
    }
    print(
        f"ingest via API   : {ingest.events_per_s:10,.0f} events/s ({args.events:,} events, batches of 500)"
    )
    print(
        f"raw Kafka produce: {ref_events_per_s:10,.0f} events/s (same events pre-encoded, same run)"
    )
    print(f"ratio API/raw    : {result['ingest_over_raw_produce']:.2f}")
    print(f"dataflow caught up {catch_up_s:.2f} s after the API acknowledged the last batch")
    c = result["click_to_changed_recommendations"]
    a = result["post_ack"]
    print(
        f"click → changed recommendations over {c['n']} clicks: "
        f"p50 {c['p50_ms']:.1f} ms, p90 {c['p90_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, max {c['max_ms']:.1f} ms"
    )
    print(f"POST /v1/events ack: p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def raw_produce_rate(bootstrap: str, events: list) -> float:
    """Events/s of a bare idempotent acks=all producer: the ceiling ingest is compared to."""
    payloads = [(e.user_id.encode(), encode_event(e)) for e in events]
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    t0 = time.perf_counter()
    for key, value in payloads:
        while True:
            try:
                producer.produce("reference", value=value, key=key)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(30)
    return len(payloads) / (time.perf_counter() - t0)


def run_clicks(url: str, events: list, clicks: int) -> tuple[list[float], list[float]]:
    users = list(dict.fromkeys(e.user_id for e in reversed(events)))[:clicks]
    items = [e.item_id for e in events]
    rng = np.random.default_rng(7)
    latencies: list[float] = []
    acks: list[float] = []
    with httpx.Client(base_url=url, timeout=5.0) as client:
        for n in range(clicks):
            user = users[n % len(users)]
            path = f"/v1/users/{user}/recommendations"
            before = client.get(path, params={"k": 10}).json()["items"]
            shown = {it["item_id"] for it in before}
            item = next(
                i for i in (items[j] for j in rng.integers(0, len(items), 50)) if i not in shown
            )
            event = {
                "event_id": f"bench-{uuid.uuid4().hex}",
                "user_id": user,
                "item_id": item,
                "type": "view",
                "ts": datetime.now(UTC).isoformat(),
            }
            t0 = time.perf_counter()
            client.post("/v1/events", json=event).raise_for_status()
            acks.append(1000 * (time.perf_counter() - t0))
            while True:
                now = client.get(path, params={"k": 10}).json()["items"]
                if now != before:
                    break
                if time.perf_counter() - t0 > 5:
                    raise RuntimeError(f"recommendations of {user} unchanged after 5 s")
            latencies.append(1000 * (time.perf_counter() - t0))
    return latencies, acks


if __name__ == "__main__":
    main()
