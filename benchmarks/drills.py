"""Outage drills on the real stack: the broker away, Redis away, a worker killed while Redis is away.

Each drill starts a private stack (Tansu broker + embedded Redis), the worker and the API as
real processes, replays the Taobao head and takes one service away for ``--outage-s``
seconds (30 by default, as the runbook's drill; the test suite runs the same code with a few
seconds). It prints what went in and what came out:

- ``broker``: events go through the ingest API with the replay client. Before the stop the
  sender pauses until the worker has applied everything acknowledged so far: Tansu keeps
  topics in memory only, so an event acknowledged but not yet consumed at the instant of a
  crash would be lost with the broker itself, which no client or worker can mend (a
  production broker replicates it). The sender then goes on into the outage: ingest answers
  503 + Retry-After, the client waits and posts the same batch again; after the broker
  returns (topics recreated empty, offsets restarting at 0) the worker reads the new events
  and every event the API acknowledged is applied (per-user event counts in Redis).
- ``redis``: Redis with an append-only file is stopped and started while events arrive on
  Kafka and recommendations are requested; serving answers 200 with ``fallback: true``, the
  worker backs off, then catches up, and its final state equals a run over the same events
  without an outage (``pipeline_checks.assert_same_state``: another prefix and topic).
- ``redis-kill``: the same, with a worker that keeps a recovery store and is killed with
  SIGKILL during the outage and restarted while Redis is still away.

    python benchmarks/drills.py [--outage-s 30] [--rate 500] [--only broker,redis,redis-kill]
                                [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from freshrec import processes
from freshrec.events import Event
from freshrec.replay import ReplayError, iter_dataset_events, send_to_api, send_to_kafka
from freshrec.settings import Settings, load_settings
from freshrec.stack import EXTERNAL_REDIS_ENV, LocalStack, create_topics, free_port
from state.store import RedisStore
from tests.integration.pipeline_checks import assert_same_state, wait_complete

DRILLS = ("broker", "redis", "redis-kill")
SETTLE_TIMEOUT_S = 180.0
"""How long the worker may take, after the service is back, to apply every event."""


@dataclass
class DrillResult:
    """What one drill put in and got out."""

    drill: str
    outage_s: float
    events: int
    accepted: int = 0
    """Events the API acknowledged (202) or the broker acknowledged to the replay producer."""
    applied: int = 0
    """Events counted in the users' records in Redis at the end (sum of ``events``)."""
    unavailable: int = 0
    """Events answered 503 by ingest during the outage (each was posted again)."""
    recommendation_answers: int = 0
    fallback_answers: int = 0
    """Recommendation answers with ``fallback: true`` (Redis away)."""
    non_200_answers: int = 0
    slowest_answer_ms: float = 0.0
    recovery_s: float = 0.0
    """From the service's return until every event sent before it returned is applied."""
    state_matches_no_outage_run: bool | None = None
    worker_restarts: int = 0
    notes: list[str] = field(default_factory=list)


# --- the pipeline ----------------------------------------------------------------------------


def _environ_without_external_redis() -> dict[str, str]:
    # The drills stop and start Redis: always their own embedded one.
    return {k: v for k, v in os.environ.items() if k != EXTERNAL_REDIS_ENV}


def _start_stack(run_dir: Path, *, redis_aof: bool) -> tuple[LocalStack, Settings]:
    stack = LocalStack(
        load_settings(
            environ={},
            run_dir=str(run_dir),
            kafka_bootstrap="127.0.0.1:0",
            redis_url="redis://127.0.0.1:0/0",
        ),
        redis_aof=redis_aof,
    )
    stack.start(environ=_environ_without_external_redis())
    settings = load_settings(
        environ={},
        run_dir=str(run_dir),
        kafka_bootstrap=stack.info.kafka_bootstrap,
        redis_url=stack.info.redis_url,
        user_idle_ttl_s=3600.0,
        worker_metrics_port=0,
        ingest_rate_limit_per_s=0,
    )
    return stack, settings


def _with_topic(settings: Settings, tag: str) -> Settings:
    run = msgspec.structs.replace(
        settings,
        events_topic=f"events-{tag}",
        dlq_topic=f"events-dlq-{tag}",
        redis_prefix=f"{settings.redis_prefix}{tag}",
    )
    create_topics(run.kafka_bootstrap, {run.events_topic: run.events_partitions, run.dlq_topic: 1})
    return run


def _store(settings: Settings) -> RedisStore:
    return RedisStore.from_url(
        settings.redis_url, settings.redis_prefix, settings.factors, timeout_s=2.0
    )


def _start_api(settings: Settings, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    api = processes.spawn(processes.api_argv(), settings, log)
    url = f"http://127.0.0.1:{settings.api_port}"
    processes.wait_http(url + "/health", 60.0, api)
    return api, url


def _api_counter(url: str, name: str, label: str) -> float:
    """A Prometheus counter of the (single-process) API, summed over label ``outcome=label``."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'"{label}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _applied(store: RedisStore, users: Counter) -> int:
    pipe = store.client.pipeline(transaction=False)
    for user_id in users:
        pipe.get(store.keys.user(user_id))
    from state.records import decode_user

    return sum(decode_user(blob).events for blob in pipe.execute() if blob is not None)


def _paced(
    events: list[Event],
    rate: float,
    *,
    progress: dict[str, int],
    hold_at: int | None = None,
    held: threading.Event | None = None,
    release: threading.Event | None = None,
) -> Iterator[Event]:
    """``events`` at ``rate`` per second; optionally hold before ``hold_at`` until released."""
    started = time.monotonic()
    for n, event in enumerate(events):
        if n == hold_at and held is not None and release is not None:
            held.set()
            release.wait()
            started = time.monotonic() - n / rate
        ahead_s = started + n / rate - time.monotonic()
        if ahead_s > 0:
            time.sleep(ahead_s)
        progress["sent"] = n + 1
        yield event


class _Reader(threading.Thread):
    """Asks recommendations for known users every ``interval_s``; counts answers by kind."""

    def __init__(self, url: str, users: list[str], interval_s: float = 0.05) -> None:
        super().__init__(name="drill-reader", daemon=True)
        self.url, self.users, self.interval_s = url, users, interval_s
        self.stop = threading.Event()
        self.counting = threading.Event()
        self.answers = self.fallbacks = self.non_200 = 0
        self.slowest_ms = 0.0

    def run(self) -> None:
        n = 0
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self.stop.wait(self.interval_s):
                user = self.users[n % len(self.users)]
                n += 1
                started = time.monotonic()
                try:
                    response = client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                    status = response.status_code
                    fallback = status == 200 and bool(response.json().get("fallback"))
                except httpx.HTTPError:
                    status, fallback = 0, False
                if not self.counting.is_set():
                    continue
                self.slowest_ms = max(self.slowest_ms, (time.monotonic() - started) * 1000)
                self.answers += 1
                self.fallbacks += int(fallback)
                self.non_200 += int(status != 200)


# --- drills ----------------------------------------------------------------------------------


def broker_drill(
    run_dir: Path,
    *,
    outage_s: float,
    rate: float = 500.0,
    events: int | None = None,
    log: Callable[[str], None] = print,
) -> DrillResult:
    """Stop the broker for ``outage_s`` during a replay through the API; see the module doc."""
    n_events = events or int(rate * (outage_s + 20))
    stream = list(iter_dataset_events("taobao", limit=n_events))
    per_user = Counter(e.user_id for e in stream)
    result = DrillResult("broker", outage_s, len(stream))
    stack, settings = _start_stack(run_dir, redis_aof=False)
    # The stack's own topics: start_broker() recreates exactly those.
    settings = msgspec.structs.replace(settings, api_port=free_port())
    store = _store(settings)
    logs = run_dir / "logs"
    worker = processes.spawn(processes.worker_argv(), settings, logs / "worker.log")
    api = None
    try:
        api, url = _start_api(settings, logs / "api.log")
        progress = {"sent": 0}
        held, release = threading.Event(), threading.Event()
        outcome: dict[str, Any] = {}
        hold_at = (len(stream) // 3) // 100 * 100

        def send() -> None:
            try:
                outcome["stats"] = send_to_api(
                    _paced(
                        stream,
                        rate,
                        progress=progress,
                        hold_at=hold_at,
                        held=held,
                        release=release,
                    ),
                    url,
                    batch_size=100,
                    progress=False,
                    max_attempts=int(outage_s) + 60,
                )
            except ReplayError as exc:  # reported below, with how far it got
                outcome["error"], outcome["stats"] = str(exc), exc.stats

        sender = threading.Thread(target=send, name="drill-sender", daemon=True)
        sender.start()
        held.wait(120)
        before = Counter(e.user_id for e in stream[:hold_at])
        wait_complete(store, before, Counter(), 60)
        stack.stop_broker()
        down_at = time.monotonic()
        log(f"broker: stopped after {hold_at:,} events (all applied); outage {outage_s:g} s")
        release.set()
        time.sleep(max(0.0, down_at + outage_s - time.monotonic()))
        stack.start_broker()
        up_at = time.monotonic()
        sent_by_return = progress["sent"]
        log(
            f"broker: back after {up_at - down_at:.1f} s; the replay had reached {sent_by_return:,}"
        )
        before_return = Counter(e.user_id for e in stream[:sent_by_return])
        wait_complete(store, before_return, Counter(), SETTLE_TIMEOUT_S)
        result.recovery_s = round(time.monotonic() - up_at, 1)
        sender.join(outage_s + 300)
        if "error" in outcome or sender.is_alive():
            raise RuntimeError(f"the replay did not finish: {outcome.get('error', 'running')}")
        result.accepted = outcome["stats"].accepted
        wait_complete(store, per_user, Counter(), SETTLE_TIMEOUT_S)
        result.applied = _applied(store, per_user)
        result.unavailable = int(_api_counter(url, "freshrec_ingested_events_total", "unavailable"))
        if worker.poll() is not None:
            result.notes.append(f"the worker exited with {worker.returncode}")
    finally:
        if api is not None:
            processes.stop(api)
        processes.stop(worker)
        stack.stop()
    return result


def redis_drill(
    run_dir: Path,
    *,
    outage_s: float,
    rate: float = 500.0,
    events: int | None = None,
    kill_worker: bool = False,
    log: Callable[[str], None] = print,
) -> DrillResult:
    """Stop Redis (kept in its append-only file) for ``outage_s`` while events arrive.

    With ``kill_worker`` the worker (recovery store, 1 s snapshots) is SIGKILLed 1 s into the
    outage and restarted at once, while Redis is still away.
    """
    n_events = events or int(rate * (outage_s + 20))
    stream = list(iter_dataset_events("taobao", limit=n_events))
    per_user = Counter(e.user_id for e in stream)
    result = DrillResult("redis-kill" if kill_worker else "redis", outage_s, len(stream))
    stack, settings = _start_stack(run_dir, redis_aof=True)
    logs = run_dir / "logs"
    started: list[subprocess.Popen[bytes]] = []
    try:
        # The no-outage run first, over the same events on a topic and prefix of its own.
        reference = _with_topic(settings, "ref")
        worker = processes.spawn(processes.worker_argv(), reference, logs / "worker-ref.log")
        started.append(worker)
        send_to_kafka(stream, reference, progress=False)
        reference_store = _store(reference)
        wait_complete(reference_store, per_user, Counter(), SETTLE_TIMEOUT_S)
        processes.stop(worker)
        log(f"{result.drill}: no-outage run over {len(stream):,} events done")

        drilled = msgspec.structs.replace(_with_topic(settings, "out"), api_port=free_port())
        argv = processes.worker_argv()
        if kill_worker:
            recovery = run_dir / "recovery"
            processes.init_recovery(str(recovery), 1)
            argv = processes.worker_argv(recovery_dir=str(recovery), snapshot_s=1, backup_s=30)
        worker = processes.spawn(argv, drilled, logs / "worker-out.log")
        started.append(worker)
        api, url = _start_api(drilled, logs / "api.log")
        started.append(api)
        store = _store(drilled)
        progress = {"sent": 0}
        outcome: dict[str, Any] = {}

        def send() -> None:
            try:
                outcome["stats"] = send_to_kafka(
                    _paced(stream, rate, progress=progress), drilled, progress=False
                )
            except ReplayError as exc:
                outcome["error"], outcome["stats"] = str(exc), exc.stats

        sender = threading.Thread(target=send, name="drill-sender", daemon=True)
        reader = _Reader(url, sorted(per_user))
        sender.start()
        reader.start()
        third = len(stream) // 3
        while progress["sent"] < third:
            time.sleep(0.05)
        # Serving has a popular list to fall back on once items have been applied.
        wait_complete(store, Counter(e.user_id for e in stream[: third // 2]), Counter(), 60)
        time.sleep(1.5)
        reader.counting.set()
        stack.stop_redis()
        down_at = time.monotonic()
        log(f"{result.drill}: Redis stopped at event {progress['sent']:,}; outage {outage_s:g} s")
        if kill_worker:
            time.sleep(min(1.0, outage_s / 3))
            processes.kill(worker)
            worker = processes.spawn(argv, drilled, logs / "worker-out-restarted.log")
            started.append(worker)
            result.worker_restarts = 1
            log(f"{result.drill}: worker killed with SIGKILL and restarted, Redis still away")
        time.sleep(max(0.0, down_at + outage_s - time.monotonic()))
        reader.counting.clear()
        stack.start_redis()
        up_at = time.monotonic()
        sent_by_return = progress["sent"]
        before_return = Counter(e.user_id for e in stream[:sent_by_return])
        wait_complete(store, before_return, Counter(), SETTLE_TIMEOUT_S)
        result.recovery_s = round(time.monotonic() - up_at, 1)
        log(
            f"{result.drill}: Redis back after {up_at - down_at:.1f} s; the {sent_by_return:,} "
            f"events sent by then applied {result.recovery_s} s later"
        )
        sender.join(SETTLE_TIMEOUT_S)
        reader.stop.set()
        reader.join(10)
        if "error" in outcome or sender.is_alive():
            raise RuntimeError(f"the replay did not finish: {outcome.get('error', 'running')}")
        result.accepted = outcome["stats"].accepted
        wait_complete(store, per_user, Counter(), SETTLE_TIMEOUT_S)
        result.applied = _applied(store, per_user)
        result.recommendation_answers = reader.answers
        result.fallback_answers = reader.fallbacks
        result.non_200_answers = reader.non_200
        result.slowest_answer_ms = round(reader.slowest_ms, 1)
        if worker.poll() is not None:
            result.notes.append(f"the worker exited with {worker.returncode}")
        try:
            assert_same_state(reference_store, store, per_user)
            result.state_matches_no_outage_run = True
        except AssertionError as exc:
            result.state_matches_no_outage_run = False
            result.notes.append(f"state differs: {exc}"[:500])
    finally:
        for process in reversed(started):
            processes.stop(process)
        stack.stop()
    return result


def run_drill(name: str, run_dir: Path, **kwargs: Any) -> DrillResult:
    """One drill by name (``broker``, ``redis``, ``redis-kill``)."""
    if name == "broker":
        return broker_drill(run_dir, **kwargs)
    if name in ("redis", "redis-kill"):
        return redis_drill(run_dir, kill_worker=name == "redis-kill", **kwargs)
    raise ValueError(f"unknown drill {name!r}; known: {', '.join(DRILLS)}")


def format_result(r: DrillResult) -> str:
    parts = [
        f"{r.drill:<10} outage {r.outage_s:g} s: events {r.events:,}, accepted {r.accepted:,}, "
        f"applied {r.applied:,}, missing {r.accepted - r.applied:,}; caught up "
        f"{r.recovery_s:g} s after the service returned"
    ]
    if r.drill == "broker":
        parts.append(f"  ingest answered 503 for {r.unavailable:,} events (each posted again)")
    else:
        parts.append(
            f"  recommendations during the outage: {r.recommendation_answers:,} answers, "
            f"{r.fallback_answers:,} with fallback: true, {r.non_200_answers} not 200, "
            f"slowest {r.slowest_answer_ms:g} ms; state equals the no-outage run: "
            f"{r.state_matches_no_outage_run}"
            + (f"; worker killed and restarted {r.worker_restarts}×" if r.worker_restarts else "")
        )
    parts.extend(f"  note: {note}" for note in r.notes)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=500.0, help="events per second")
    parser.add_argument("--only", default=",".join(DRILLS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory(prefix=f"freshrec-drill-{name}-") as tmp:
            result = run_drill(
                name,
                Path(tmp),
                outage_s=args.outage_s,
                rate=args.rate,
                log=lambda line: print(line, flush=True),
            )
        print(format_result(result), flush=True)
        results.append(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    ok = all(
        r.accepted == r.applied == r.events and r.state_matches_no_outage_run is not False
        for r in results
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
