"""Soak: real events through the whole stack at a fixed rate for a long time; memory must stay flat.

The Taobao head (84k events, 814 users) is replayed in a loop through the ingest API at a fixed
rate. Each loop re-keys event ids, users and sessions (``<id>~L<loop>``) and moves event time
forward by the log's span, so every loop brings new synthetic users while the catalogue stays
the same. A light read load asks recommendations for users of the current loop. Every
``--sample-s`` seconds the harness records the resident memory of the worker and of the API
(``VmRSS`` of the process and its children, e.g. granian's workers), Redis ``used_memory``,
and the backlog (events accepted by the API but not yet applied by the worker, from the
worker's monitoring samples) next to Bytewax's consumer-lag gauge.

With ``user_idle_ttl_s`` lowered (``--idle-ttl-s``, 120 s) idle users leave worker memory and
are parked in Redis: the worker and the API should be flat after warm-up (growth = mean of the
last 20 % of samples over the mean of the 20–40 % window), while Redis grows with the number
of distinct users ever seen — expected, and reported separately.

    python benchmarks/soak.py --minutes 30 --rate 2000 [--json OUT] [--png benchmarks/out/soak.png]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import redis

from freshrec import processes
from freshrec.events import Event
from freshrec.replay import ReplayError, iter_dataset_events, send_to_api
from freshrec.settings import Settings, load_settings
from freshrec.stack import LocalStack, free_port
from state.store import RedisStore

OUT_DIR = Path(__file__).resolve().parent / "out"
GROWTH_GOAL = 0.10
"""Worker and API memory may grow at most this much between the warm-up window and the end."""


@dataclass(frozen=True)
class Sample:
    """One point of the soak, ``elapsed_s`` after the replay started."""

    elapsed_s: float
    worker_rss_mb: float
    api_rss_mb: float
    redis_used_mb: float
    redis_rss_mb: float
    redis_keys: int
    sent: int
    applied: int
    backlog: int
    """Events handed to the API but not yet applied by the worker (≤ one batch too high)."""
    lag_gauge: float
    """Bytewax's consumer-lag gauge summed over the worker's partitions (from its samples)."""
    loops: int


@dataclass
class SoakReport:
    """Samples and the figures computed from them."""

    minutes: float
    rate: float
    idle_ttl_s: float
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0
    accepted: int = 0
    applied: int = 0
    reads: int = 0
    read_errors: int = 0
    distinct_users: int = 0
    growth: dict[str, float] = field(default_factory=dict)
    backlog_max_after_warmup: int = 0
    backlog_final: int = 0
    lag_gauge_max_after_warmup: float = 0.0
    achieved_rate: float = 0.0
    error: str = ""


# --- process memory ------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB (shared pages counted once
    per process, as ``VmRSS`` does)."""
    total_kb = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
                break
        stack.extend(_children(current))
    return total_kb / 1024


# --- the load --------------------------------------------------------------------------------


def looped_events(base: list[Event], rate: float, stop: threading.Event, state: dict[str, int]):
    """``base`` re-keyed per loop, yielded at ``rate`` events/s until ``stop`` is set."""
    span = base[-1].ts - base[0].ts + timedelta(days=1)
    started = time.monotonic()
    n = 0
    loop = 0
    while not stop.is_set():
        shift = span * loop
        suffix = f"~L{loop}"
        state["loop"] = loop
        for event in base:
            if n % 50 == 0:
                if stop.is_set():
                    return
                ahead_s = started + n / rate - time.monotonic()
                if ahead_s > 0:
                    time.sleep(ahead_s)
            yield msgspec.structs.replace(
                event,
                event_id=event.event_id + suffix,
                user_id=event.user_id + suffix,
                session_id=None if event.session_id is None else event.session_id + suffix,
                ts=event.ts + shift,
            )
            n += 1
            state["sent"] = n
        loop += 1


def _read_load(
    url: str, users: list[str], state: dict[str, int], stop: threading.Event, per_s: float
) -> None:
    rng = random.Random(7)
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.wait(1 / per_s):
            user = f"{rng.choice(users)}~L{max(0, state.get('loop', 0))}"
            try:
                ok = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).is_success
            except httpx.HTTPError:
                ok = False
            state["reads"] = state.get("reads", 0) + 1
            state["read_errors"] = state.get("read_errors", 0) + (0 if ok else 1)


def _worker_counters(store: RedisStore, since_ms: int) -> tuple[float, float]:
    """(applied, lag) summed over worker processes, from their latest monitoring samples."""
    latest: dict[float, dict[str, float]] = {}
    for sample in store.monitor_samples("worker", since_ms, count=100_000):
        latest[sample.get("pid", 0.0)] = sample
    return (
        sum(s.get("applied", 0.0) for s in latest.values()),
        sum(s.get("lag", 0.0) for s in latest.values()),
    )


# --- figures ---------------------------------------------------------------------------------


def growth(values: list[float]) -> float:
    """Mean of the last 20 % of ``values`` over the mean of their 20–40 % window, minus 1."""
    n = len(values)
    if n < 5:
        return float("nan")
    early = values[n // 5 : max(n // 5 + 1, 2 * n // 5)]
    late = values[n - max(1, n // 5) :]
    return statistics.fmean(late) / statistics.fmean(early) - 1


def summarise(report: SoakReport) -> None:
    """Fill the growth and backlog figures of ``report`` from its samples."""
    samples = report.samples
    for name in ("worker_rss_mb", "api_rss_mb", "redis_used_mb", "redis_rss_mb"):
        report.growth[name] = growth([getattr(s, name) for s in samples])
    after = samples[len(samples) // 5 :] or samples
    report.backlog_max_after_warmup = max((s.backlog for s in after), default=0)
    report.lag_gauge_max_after_warmup = max((s.lag_gauge for s in after), default=0.0)


def plot(report: SoakReport, path: Path) -> None:
    """Memory and backlog over time, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.elapsed_s / 60 for s in report.samples]
    fig, (ax_rss, ax_redis, ax_lag) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax_rss.plot(minutes, [s.worker_rss_mb for s in report.samples], label="worker RSS")
    ax_rss.plot(minutes, [s.api_rss_mb for s in report.samples], label="API RSS (+children)")
    n = len(minutes)
    if n >= 5:
        for lo, hi in ((n // 5, 2 * n // 5), (n - n // 5, n)):
            ax_rss.axvspan(minutes[lo], minutes[min(hi, n) - 1], alpha=0.08, color="grey")
    ax_rss.set_ylabel("MB")
    ax_rss.set_ylim(bottom=0)
    ax_rss.legend(loc="lower right")
    g = report.growth
    ax_rss.set_title(
        f"soak {report.minutes:g} min at {report.rate:g} ev/s — growth after warm-up: "
        f"worker {g.get('worker_rss_mb', float('nan')):+.1%}, "
        f"API {g.get('api_rss_mb', float('nan')):+.1%}"
    )
    ax_redis.plot(minutes, [s.redis_used_mb for s in report.samples], label="Redis used_memory")
    ax_redis.set_ylabel("MB")
    ax_redis.set_ylim(bottom=0)
    twin = ax_redis.twinx()
    twin.plot(
        minutes,
        [s.loops * 814 for s in report.samples],
        color="tab:orange",
        linestyle="--",
        label="distinct users (approx.)",
    )
    twin.set_ylabel("users")
    ax_redis.legend(loc="upper left")
    twin.legend(loc="lower right")
    ax_lag.plot(minutes, [s.backlog for s in report.samples], label="accepted − applied")
    ax_lag.plot(minutes, [s.lag_gauge for s in report.samples], label="Bytewax lag gauge")
    ax_lag.set_ylabel("events")
    ax_lag.set_xlabel("minutes")
    ax_lag.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the run ---------------------------------------------------------------------------------


def run_soak(
    *,
    minutes: float,
    rate: float,
    sample_s: float = 10.0,
    idle_ttl_s: float = 120.0,
    reads_per_s: float = 20.0,
    batch_size: int = 100,
    run_dir: Path | None = None,
    log=print,
) -> SoakReport:
    """Start a private stack, worker and API; replay at ``rate`` for ``minutes``; sample."""
    report = SoakReport(minutes=minutes, rate=rate, idle_ttl_s=idle_ttl_s)
    owned_tmp = None
    if run_dir is None:
        owned_tmp = tempfile.TemporaryDirectory(prefix="freshrec-soak-")
        run_dir = Path(owned_tmp.name)
    base_settings = load_settings(
        environ={},
        run_dir=str(run_dir),
        kafka_bootstrap="127.0.0.1:0",
        redis_url="redis://127.0.0.1:0/0",
    )
    base = list(iter_dataset_events("taobao"))
    base_users = sorted({e.user_id for e in base})
    with LocalStack(base_settings) as stack:
        settings: Settings = load_settings(
            environ={},
            run_dir=str(run_dir),
            kafka_bootstrap=stack.info.kafka_bootstrap,
            redis_url=stack.info.redis_url,
            user_idle_ttl_s=idle_ttl_s,
            api_port=free_port(),
            worker_metrics_port=0,
        )
        url = f"http://127.0.0.1:{settings.api_port}"
        logs = run_dir / "logs"
        worker = processes.spawn(processes.worker_argv(), settings, logs / "soak-worker.log")
        api = processes.spawn(processes.api_argv(), settings, logs / "soak-api.log")
        store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
        raw = redis.Redis.from_url(settings.redis_url)
        redis_pid = stack.info.pids["redis"]
        stop = threading.Event()
        state: dict[str, int] = {"sent": 0, "loop": 0}
        outcome: dict[str, Any] = {}

        def send() -> None:
            try:
                stats = send_to_api(
                    looped_events(base, rate, stop, state),
                    url,
                    batch_size=batch_size,
                    progress=False,
                )
                outcome["stats"] = stats
            except ReplayError as exc:
                outcome["error"] = str(exc)
                outcome["stats"] = exc.stats

        try:
            processes.wait_http(url + "/health", 60.0, api)
            since_ms = int(time.time() * 1000) - 1
            sender = threading.Thread(target=send, name="soak-sender", daemon=True)
            reader = threading.Thread(
                target=_read_load,
                args=(url, base_users, state, stop, reads_per_s),
                name="soak-reader",
                daemon=True,
            )
            started = time.monotonic()
            sender.start()
            reader.start()
            deadline = started + minutes * 60
            next_sample = started + sample_s
            while True:
                time.sleep(max(0.0, next_sample - time.monotonic()))
                next_sample += sample_s
                if worker.poll() is not None or api.poll() is not None:
                    raise RuntimeError(
                        f"a process died: worker {worker.poll()}, api {api.poll()} (logs {logs})"
                    )
                if "error" in outcome:
                    raise RuntimeError(f"the replay failed: {outcome['error']}")
                applied, lag = _worker_counters(store, since_ms)
                memory = raw.info("memory")
                sent = state["sent"]
                sample = Sample(
                    elapsed_s=round(time.monotonic() - started, 1),
                    worker_rss_mb=round(tree_rss_mb(worker.pid), 1),
                    api_rss_mb=round(tree_rss_mb(api.pid), 1),
                    redis_used_mb=round(memory["used_memory"] / 2**20, 1),
                    redis_rss_mb=round(tree_rss_mb(redis_pid), 1),
                    redis_keys=int(raw.dbsize()),
                    sent=sent,
                    applied=int(applied),
                    backlog=max(0, sent - int(applied)),
                    lag_gauge=lag,
                    loops=state["loop"] + 1,
                )
                report.samples.append(sample)
                log(
                    f"[{sample.elapsed_s / 60:5.1f} min] worker {sample.worker_rss_mb:7.1f} MB"
                    f"  api {sample.api_rss_mb:6.1f} MB  redis {sample.redis_used_mb:7.1f} MB"
                    f"  sent {sent:>9,}  backlog {sample.backlog:>6,}  lag {lag:>6.0f}"
                    f"  loop {sample.loops}"
                )
                if time.monotonic() >= deadline:
                    break
            stop.set()
            sender.join(60)
            reader.join(10)
            stats = outcome.get("stats")
            if stats is not None:
                report.sent, report.accepted = stats.sent, stats.accepted
                report.achieved_rate = stats.sent / max(stats.seconds, 1e-9)
            # Drain: the backlog must go to zero once the load stops.
            drain_deadline = time.monotonic() + 120
            while time.monotonic() < drain_deadline:
                applied, _ = _worker_counters(store, since_ms)
                if applied >= report.accepted:
                    break
                time.sleep(1)
            report.applied = int(applied)
            report.backlog_final = max(0, report.accepted - report.applied)
            report.reads = state.get("reads", 0)
            report.read_errors = state.get("read_errors", 0)
            report.distinct_users = len(base_users) * (state["loop"] + 1)
        except Exception as exc:
            report.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            stop.set()
            processes.stop(api)
            processes.stop(worker)
            raw.close()
            if owned_tmp is not None:
                owned_tmp.cleanup()
    summarise(report)
    return report


def format_report(report: SoakReport) -> str:
    g = report.growth
    return "\n".join(
        [
            f"soak: {report.minutes:g} min at {report.rate:g} ev/s "
            f"(achieved {report.achieved_rate:,.0f} ev/s), idle TTL {report.idle_ttl_s:g} s",
            f"  events sent {report.sent:,}, accepted {report.accepted:,}, applied "
            f"{report.applied:,}; distinct users ~{report.distinct_users:,}; reads "
            f"{report.reads:,} ({report.read_errors} errors)",
            f"  growth after warm-up (last 20 % vs 20-40 %): worker RSS "
            f"{g['worker_rss_mb']:+.1%}, API RSS {g['api_rss_mb']:+.1%} (goal < "
            f"{GROWTH_GOAL:.0%}); Redis used_memory {g['redis_used_mb']:+.1%} "
            "(grows with distinct users: parked state, expected)",
            f"  backlog (accepted - applied) max after warm-up {report.backlog_max_after_warmup:,}"
            f", after drain {report.backlog_final:,}; Bytewax lag gauge max "
            f"{report.lag_gauge_max_after_warmup:,.0f}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--idle-ttl-s", type=float, default=120.0)
    parser.add_argument("--reads-per-s", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="write the report (with samples) here")
    parser.add_argument("--png", type=Path, default=OUT_DIR / "soak.png")
    args = parser.parse_args(argv)
    report = run_soak(
        minutes=args.minutes,
        rate=args.rate,
        sample_s=args.sample_s,
        idle_ttl_s=args.idle_ttl_s,
        reads_per_s=args.reads_per_s,
        log=lambda line: print(line, flush=True),
    )
    print(format_report(report), flush=True)
    if args.png:
        plot(report, args.png)
        print(f"plot: {args.png}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=1) + "\n")
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
