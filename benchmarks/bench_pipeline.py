"""Dataflow throughput, where the full flow's time goes, worker memory per user, dedup bytes.

Everything is measured side by side in one run (the machine is shared and noisy), on the real
stack: an embedded Tansu broker and a private redis-server, started and stopped here.

1. events/s over the Taobao head (84k real events) for a pass-through flow, a keyed counter
   (``key_on`` + ``stateful_map``) and the full ``build_flow``, all fed the same
   ``KafkaSourceMessage`` objects from a ``TestingSource`` (no broker), in interleaved
   rounds; then the pass-through and the full flow as ``python -m bytewax.run`` processes
   reading the same events from a topic (``consumer_tail=False`` ends them at its end).
1b. floors: the per-event cost of each stage the pipeline must run (decode + validate,
   enrichment, the user state, the item side), each alone over the same events with no
   stream engine at all, next to the keyed counter's whole per-event cost in the same run:
   the sum is a lower bound of this implementation's cost per event.
2. cProfile of the full flow: top 25 by tottime (saved to ``benchmarks/out/``) and the time
   per part of the flow (a library's time is charged to our code that called it).
3. resident memory of a worker process (the full flow on a ``TestingSource``) at 10k / 100k /
   1M synthetic users (2–3 events each) over real item rows, and with ``user_idle_ttl_s=1``
   (idle users parked in Redis, compared with the same events without eviction); a run that
   would overrun the time budget (``--budget-s``) is stopped and extrapolated, marked so.
4. ``EventDedup`` bytes per remembered event id and per user at the default horizon.

    python benchmarks/bench_pipeline.py [--rounds 3] [--users 10000,100000,1000000]
        [--sections throughput,floors,broker,profile,dedup,memory] [--budget-s 780] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import ctypes
import functools
import gc
import io
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import msgspec
import numpy as np
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

from dataflows import kafka_io, steps
from dataflows.personalize import build_flow, enrich_event, isgd_params, item_config, user_config
from freshrec import processes
from freshrec.datasets import TAOBAO_WINDOW_END_S, TAOBAO_WINDOW_START_S, load_taobao
from freshrec.events import INTERACTION_TYPES, Event, encode_event
from freshrec.replay import iter_dataset_events, send_to_kafka
from freshrec.settings import Settings, load_settings
from freshrec.stack import LocalStack, create_topics
from operators import popularity
from operators.dedup import EventDedup
from operators.isgd import initial_vector
from operators.item_state import ItemState
from operators.user_state import ItemUpdate, UserState
from state.keys import Keys
from state.store import RedisStore

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = Path(__file__).resolve().parent / "out"
BATCH_SIZE = 1000
PASSTHROUGH_TAG = "BENCH-PASSTHROUGH "
GOAL_FULL_OVER_KEYED = 0.5
SECTIONS = ("throughput", "floors", "broker", "profile", "dedup", "memory")
NO_EVICTION_TTL_S = 1e9


# --- the reference flows ------------------------------------------------------------------------


class _CountingPartition(StatelessSinkPartition[Any]):
    def __init__(self, report: bool) -> None:
        self.report = report
        self.count = 0
        self.first_s = 0.0
        self.last_s = 0.0

    def write_batch(self, items: list[Any]) -> None:
        now = time.time()
        if not self.count:
            self.first_s = now
        self.last_s = now
        self.count += len(items)

    def close(self) -> None:
        if self.report:
            # Read by the parent from the process log (wall-clock times, comparable across
            # processes): how many messages arrived and when the first and last batch did.
            line = json.dumps({"count": self.count, "first": self.first_s, "last": self.last_s})
            print(PASSTHROUGH_TAG + line, flush=True)


class CountingSink(DynamicSink[Any]):
    """Drops every item, counting them: the cheapest output there is."""

    def __init__(self, report: bool = False) -> None:
        self.report = report
        self.partitions: list[_CountingPartition] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        part = _CountingPartition(self.report)
        self.partitions.append(part)
        return part

    @property
    def count(self) -> int:
        return sum(p.count for p in self.partitions)


def _identity(msg: Any) -> Any:
    return msg


def _message_user(msg: KafkaSourceMessage[bytes, bytes]) -> str:
    return msg.key.decode()


def _count(state: int | None, _msg: object) -> tuple[int, int]:
    n = (state or 0) + 1
    return n, n


def passthrough_flow(source: Source[Any], sink: CountingSink) -> Dataflow:
    """input → map(identity) → no-op sink."""
    flow = Dataflow("bench_passthrough")
    raw = op.input("in", flow, source)
    op.output("out", op.map("identity", raw, _identity), sink)
    return flow


def decode_only_flow(source: Source[Any], sink: CountingSink, settings: Settings) -> Dataflow:
    """input → map(decode + validate, as the full flow's first step) → no-op sink.

    The least any flow that looks inside the events does: it bounds the full flow's rate.
    """
    flow = Dataflow("bench_decode_only")
    raw = op.input("in", flow, source)
    decode = functools.partial(
        kafka_io.decode_arrival, max_future_skew_s=settings.max_future_skew_s
    )
    op.output("out", op.map("decode", raw, decode), sink)
    return flow


def keyed_counter_flow(source: Source[Any], sink: CountingSink) -> Dataflow:
    """input → key_on(Kafka key = user id) → stateful_map(count per user) → no-op sink."""
    flow = Dataflow("bench_keyed_counter")
    raw = op.input("in", flow, source)
    by_user = op.key_on("key_by_user", raw, _message_user)
    op.output("out", op.stateful_map("count", by_user, _count), sink)
    return flow


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run benchmarks/bench_pipeline.py:kafka_passthrough`: the pass-through
    # on the events topic of the settings in the environment (built lazily, like the worker).
    if name == "kafka_passthrough":
        return passthrough_flow(kafka_io.build_source(load_settings()), CountingSink(report=True))
    raise AttributeError(name)


# --- shared plumbing ---------------------------------------------------------------------------


def kafka_messages(events: list[Event]) -> list[KafkaSourceMessage[bytes, bytes]]:
    """The events as the Kafka source would deliver them (key = user id, canonical JSON)."""
    return [
        KafkaSourceMessage(
            key=e.user_id.encode(), value=encode_event(e), topic="events", partition=0, offset=i
        )
        for i, e in enumerate(events)
    ]


def isolated(settings: Settings, prefixes: list[str], **overrides: Any) -> Settings:
    """Settings with a Redis key prefix of their own (recorded, deleted at the end)."""
    prefix = f"bp{uuid.uuid4().hex[:10]}"
    prefixes.append(prefix)
    return msgspec.structs.replace(settings, redis_prefix=prefix, **overrides)


def store_of(settings: Settings) -> RedisStore:
    return RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)


def applied_events(settings: Settings, user_ids: list[str]) -> int:
    """Events the full flow accounted for in Redis: the sum of users' events + duplicates."""
    store = store_of(settings)
    try:
        total = 0
        for user_id in user_ids:
            record = store.get_user(user_id)
            if record is not None:
                total += record.events + record.duplicates
        return total
    finally:
        store.client.close()


def log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def proc_status_kib(pid: int | str, field: str) -> int:
    """A ``VmRSS``/``VmHWM``-like field of /proc/PID/status, in KiB (0 if gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rate(n: int, seconds: float) -> float | None:
    """Events per second; None when the time is not positive (noise larger than the signal)."""
    return n / seconds if seconds > 0 else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(value: float | None, spec: str, width: int = 0) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}{spec}}"


# --- 1. throughput --------------------------------------------------------------------------------


def measure_in_process(
    settings: Settings,
    messages: list[KafkaSourceMessage[bytes, bytes]],
    user_ids: list[str],
    rounds: int,
    repeats: int,
    prefixes: list[str],
) -> dict[str, Any]:
    """Interleaved rounds of pass-through, keyed counter and full flow over the same messages."""
    n = len(messages)
    runs: dict[str, list[float]] = {
        "passthrough": [],
        "keyed_counter": [],
        "decode_only": [],
        "full": [],
    }
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        medians: dict[str, float] = {}
        for name in runs:
            this_round = []
            for _ in range(1 if name == "full" else repeats):
                sink = CountingSink()
                full_settings = None
                if name == "passthrough":
                    flow = passthrough_flow(TestingSource(messages, BATCH_SIZE), sink)
                elif name == "keyed_counter":
                    flow = keyed_counter_flow(TestingSource(messages, BATCH_SIZE), sink)
                elif name == "decode_only":
                    flow = decode_only_flow(TestingSource(messages, BATCH_SIZE), sink, settings)
                else:
                    full_settings = isolated(settings, prefixes)
                    flow = build_flow(full_settings, TestingSource(messages, BATCH_SIZE))
                gc.collect()
                started = time.perf_counter()
                run_main(flow)
                seconds = time.perf_counter() - started
                if full_settings is None:
                    if sink.count != n:
                        raise RuntimeError(f"{name} emitted {sink.count} of {n} messages")
                else:
                    seen = applied_events(full_settings, user_ids)
                    if seen != n:
                        raise RuntimeError(f"full flow accounted for {seen} of {n} events")
                    store_of(full_settings).delete_namespace()
                this_round.append(rate(n, seconds))
            runs[name] += this_round
            medians[name] = statistics.median(this_round)
        per_round.append(medians)
    median = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "events": n,
        "rounds": rounds,
        "repeats_of_cheap_flows": repeats,
        "events_per_s_median": median,
        "events_per_s_runs": runs,
        "full_over_passthrough": median["full"] / median["passthrough"],
        "full_over_keyed_counter": median["full"] / median["keyed_counter"],
        "full_over_keyed_counter_per_round": [r["full"] / r["keyed_counter"] for r in per_round],
        "decode_only_over_keyed_counter": median["decode_only"] / median["keyed_counter"],
        "full_over_passthrough_per_round": [r["full"] / r["passthrough"] for r in per_round],
    }


def _best_us_per_event(run: Callable[[], object], n: int, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


def measure_floors(
    settings: Settings, messages: list[KafkaSourceMessage[bytes, bytes]], repeats: int
) -> dict[str, Any]:
    """Per-event µs of each required stage alone (no Bytewax) vs the keyed counter's."""
    n = len(messages)
    params = isgd_params(settings)
    config = user_config(settings)
    item_cfg = item_config(settings)
    decode = functools.partial(
        kafka_io.decode_arrival, max_future_skew_s=settings.max_future_skew_s
    )
    arrived = [decode(m) for m in messages]
    enriched = [enrich_event(a) for a in arrived if isinstance(a, kafka_io.Arrived)]

    def user_side() -> list[Any]:
        # What UserModelLogic does per event, minus Bytewax, Redis and live sampling.
        users: dict[str, UserState] = {}
        item_vectors: dict[str, Any] = {}
        out: list[Any] = []
        for e in enriched:
            event = e.event
            state = users.get(event.user_id)
            if state is None:
                state = users[event.user_id] = UserState(event.user_id, params, config)
            if state.is_duplicate(event.event_id, event.ts_s):
                continue
            if event.type not in INTERACTION_TYPES:
                state.observe(event.item_id, event.type, event.ts_s)
                continue
            vec = item_vectors.get(event.item_id)
            if vec is None:
                vec = item_vectors[event.item_id] = initial_vector(event.item_id, "item", params)
            update, covisits = state.learn(
                event.item_id, vec, event.type, event.ts_s, event.category_id
            )
            state.check_drift(item_vectors.get)
            out.append(update)
            out.extend(covisits)
            out.append(steps.SegmentHit(e.segment, event.item_id, update.weight, event.ts_s))
        return out

    item_messages = user_side()

    def item_side() -> None:
        # What ItemModelLogic and SegmentPopularityLogic do per message, minus Bytewax.
        items: dict[str, ItemState] = {}
        segments: dict[tuple[str, str], float] = {}
        half_life_s = settings.popularity_half_life_s
        for msg in item_messages:
            if isinstance(msg, steps.SegmentHit):
                key = (msg.segment, msg.item_id)
                segments[key] = popularity.add_event(
                    segments.get(key, popularity.NO_POPULARITY), msg.weight, msg.ts_s, half_life_s
                )
                continue
            state = items.get(msg.item_id)
            if state is None:
                state = items[msg.item_id] = ItemState(msg.item_id, params, item_cfg)
            if isinstance(msg, ItemUpdate):
                user_vec = np.frombuffer(msg.user_vector, dtype=np.float32)
                state.learn(user_vec, msg.weight, msg.ts_s, msg.category_id)
            else:
                for other_id, weight in zip(msg.other_ids, msg.weights, strict=True):
                    state.covisit(other_id, weight, msg.ts_s)

    def counter() -> None:
        sink = CountingSink()
        run_main(keyed_counter_flow(TestingSource(messages, BATCH_SIZE), sink))

    floors = {
        "decode + validate (msgspec)": _best_us_per_event(
            lambda: [decode(m) for m in messages], n, repeats
        ),
        "enrichment": _best_us_per_event(lambda: [enrich_event(a) for a in arrived], n, repeats),
        "user state (dedup, session, window, ISGD user half, drift)": _best_us_per_event(
            user_side, n, repeats
        ),
        "item side (ISGD item half, popularity, segments, co-visits)": _best_us_per_event(
            item_side, n, repeats
        ),
    }
    counter_us = _best_us_per_event(counter, n, repeats)
    return {
        "events": n,
        "repeats": repeats,
        "stage_us_per_event": floors,
        "sum_us_per_event": sum(floors.values()),
        "keyed_counter_us_per_event": counter_us,
        "goal_budget_us_per_event": counter_us / GOAL_FULL_OVER_KEYED,
    }


def print_floors(f: dict[str, Any]) -> None:
    print(
        f"1b. floors: µs per event of each required stage alone (no stream engine, best of "
        f"{f['repeats']}), {f['events']:,} events"
    )
    for name, us in f["stage_us_per_event"].items():
        print(f"   {us:8.2f} µs  {name}")
    print(f"   {f['sum_us_per_event']:8.2f} µs  sum: this implementation's floor per event")
    print(f"   {f['keyed_counter_us_per_event']:8.2f} µs  keyed counter flow, whole, same run")
    print(
        f"   {f['goal_budget_us_per_event']:8.2f} µs  budget per event of a full flow at "
        f"{GOAL_FULL_OVER_KEYED}× the counter's rate; the floor is "
        f"{f['sum_us_per_event'] / f['goal_budget_us_per_event']:.1f}× the budget"
    )


def _run_worker_process(
    argv: list[str], settings: Settings, log: Path, timeout_s: float, poll_redis: bool
) -> dict[str, Any]:
    """Run a dataflow process to its end; poll Redis for the first and last item write."""
    store = store_of(settings) if poll_redis else None
    first_write = last_write = 0.0
    last_seq = 0
    started_wall = time.time()
    started = time.perf_counter()
    proc = processes.spawn(argv, settings, log)
    try:
        while proc.poll() is None:
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"{argv} did not end within {timeout_s} s; log {log}")
            if store is not None:
                seq = store.item_change_seq()
                if seq != last_seq:
                    now = time.time()
                    first_write = first_write or now
                    last_write, last_seq = now, seq
                time.sleep(0.002)
            else:
                time.sleep(0.01)
    finally:
        processes.stop(proc)
        if store is not None:
            store.client.close()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited with {proc.returncode}; log {log}:\n{log_tail(log)}")
    return {
        "wall_s": seconds,
        "started_wall": started_wall,
        "first_output_wall": first_write,
        "last_output_wall": last_write,
    }


def measure_broker(
    settings: Settings,
    events: list[Event],
    user_ids: list[str],
    run_dir: Path,
    prefixes: list[str],
    timeout_s: float,
) -> dict[str, Any]:
    """Pass-through and full flow as ``python -m bytewax.run`` processes on a real topic.

    Wall time runs from spawn to exit (start-up, connecting, end-of-partition detection
    included); ``net`` subtracts a run of the same process on an empty topic; ``span`` is
    the time from the first to the last output batch (the pass-through's sink reports it,
    the full flow's item writes are polled in Redis), which leaves start-up and the end out.
    """
    tag = uuid.uuid4().hex[:8]
    topic, empty_topic, dlq = f"bench-{tag}", f"bench-empty-{tag}", f"bench-dlq-{tag}"
    partitions = settings.events_partitions
    create_topics(settings.kafka_bootstrap, {topic: partitions, empty_topic: partitions, dlq: 1})
    produced = send_to_kafka(events, settings, topic=topic, progress=False)
    passthrough_argv = [
        sys.executable,
        "-m",
        "bytewax.run",
        f"{Path(__file__).resolve()}:kafka_passthrough",
        "-w",
        "1",
    ]
    result: dict[str, Any] = {
        "partitions": partitions,
        "produce_events_per_s": produced.events_per_s,
    }
    n = len(events)
    for which, name in (("empty", empty_topic), ("loaded", topic)):
        for flow in ("passthrough", "full"):
            flow_settings = isolated(
                settings, prefixes, events_topic=name, dlq_topic=dlq, consumer_tail=False
            )
            log = run_dir / f"broker-{flow}-{which}.log"
            argv = processes.worker_argv() if flow == "full" else passthrough_argv
            run = _run_worker_process(argv, flow_settings, log, timeout_s, flow == "full")
            if flow == "passthrough":
                lines = [
                    line
                    for line in log.read_text().splitlines()
                    if line.startswith(PASSTHROUGH_TAG)
                ]
                report = json.loads(lines[-1][len(PASSTHROUGH_TAG) :])
                got = report["count"]
                run["first_output_wall"], run["last_output_wall"] = report["first"], report["last"]
            else:
                got = applied_events(flow_settings, user_ids) if which == "loaded" else 0
            expected = n if which == "loaded" else 0
            if got != expected:
                raise RuntimeError(f"{flow} on the {which} topic saw {got} of {expected} events")
            result[f"{flow}_{which}"] = run
    for flow in ("passthrough", "full"):
        loaded, empty = result[f"{flow}_loaded"], result[f"{flow}_empty"]
        span = loaded["last_output_wall"] - loaded["first_output_wall"]
        result[flow] = {
            "wall_events_per_s": rate(n, loaded["wall_s"]),
            "net_events_per_s": rate(n, loaded["wall_s"] - empty["wall_s"]),
            "span_events_per_s": rate(n, span),
            "startup_and_end_s": empty["wall_s"],
        }
    for kind in ("wall", "net", "span"):
        key = f"{kind}_events_per_s"
        result[f"full_over_passthrough_{kind}"] = ratio(
            result["full"][key], result["passthrough"][key]
        )
    return result


# --- 2. profile ------------------------------------------------------------------------------------

ENGINE = "Bytewax engine (Rust: scheduling, exchange, per-key state maps)"
SHIMS = "Bytewax Python shims (map/key_on/branch/stateful wrappers)"
INPUT = "input: TestingSource"
DECODE = "decode (msgspec JSON + checks)"
ENRICH = "enrichment (context, segment)"
KEYS = "our key functions and branch predicates"
USER = "user step (dedup, session, window, ISGD user half, record)"
REPLICA = "user step: item replica refresh (Redis read)"
PARKED = "user step: parked-state lookup (Redis GET per new user)"
ITEM = "item step (ISGD item half, popularity, trend, neighbours)"
SEGMENT = "segment popularity step"
FEEDBACK = "feedback step"
SINK = "Redis sink (encode + Lua writes, incl. waiting for Redis)"
METRICS = "metrics (prometheus)"
UNATTRIBUTED = "other / unattributed"

_OWN_FILES = {
    "dataflows/kafka_io.py": DECODE,
    "freshrec/events.py": DECODE,
    "operators/enrich.py": ENRICH,
    "dataflows/item_replica.py": REPLICA,
    "operators/user_state.py": USER,
    "operators/user_window.py": USER,
    "operators/sessions.py": USER,
    "operators/dedup.py": USER,
    "operators/item_state.py": ITEM,
    "operators/item_neighbours.py": ITEM,
    "operators/feedback.py": FEEDBACK,
    "freshrec/metrics.py": METRICS,
    "dataflows/monitor.py": METRICS,
}
# Shared by several steps: their time goes to whichever step called them.
_SHARED_FILES = {"operators/isgd.py", "operators/popularity.py", "state/records.py"}
_STEP_CLASSES = {
    "UserModelLogic": USER,
    "user_record": USER,
    "build_user_logic": USER,
    "ItemModelLogic": ITEM,
    "build_item_logic": ITEM,
    "SegmentPopularityLogic": SEGMENT,
    "FeedbackLogic": FEEDBACK,
    "_RedisPartition": SINK,
    "RedisSink": SINK,
}


def loaded_qualnames() -> dict[tuple[str, int, str], str]:
    """``co_qualname`` of every code object of our loaded functions, by profiler key.

    Taken from the code that ran, not from the files (others edit them while this runs);
    lambdas and comprehensions are found nested in their function's constants.
    """
    names: dict[tuple[str, int, str], str] = {}

    def visit(code: types.CodeType) -> None:
        key = (code.co_filename, code.co_firstlineno, code.co_name)
        names[key] = code.co_qualname.replace(".<locals>", "")
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                visit(const)

    root = str(PROJECT_ROOT)
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and obj.__code__.co_filename.startswith(root):
            visit(obj.__code__)
    return names


def categorise(func: tuple[str, int, str], qualnames: dict[Any, str]) -> str | None:
    """The part of the flow a profiled function belongs to; None: charge it to its callers."""
    filename, line, name = func
    if filename == "~":
        return ENGINE if "run_main" in name else None
    path = Path(filename)
    try:
        rel = path.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        rel = None
    if rel is None or rel.startswith(".venv/"):
        if "/bytewax/" in filename:
            return INPUT if filename.endswith("testing.py") else SHIMS
        if "/prometheus_client/" in filename:
            return METRICS
        return None
    if rel.startswith("benchmarks/"):
        return "benchmark harness"
    if rel in _OWN_FILES:
        return _OWN_FILES[rel]
    if rel in _SHARED_FILES:
        return None
    parts = qualnames.get(func, name).split(".")
    top = parts[0]
    if rel == "dataflows/personalize.py":
        return ENRICH if top == "enrich_event" else KEYS
    if rel == "dataflows/steps.py":
        if top == "retry_while_unreachable":
            return None
        return _STEP_CLASSES.get(top, f"dataflows/steps.py: {top or name}")
    if rel == "state/store.py":
        method = parts[1] if len(parts) > 1 else parts[0]
        if method.startswith(("write_", "park_", "_write")):
            return SINK
        if method == "read_item_changes":
            return REPLICA
        if method == "parked_user_state":
            return PARKED
        return None
    return f"other own code: {rel}"


def attribute(raw: dict[Any, Any], qualnames: dict[Any, str]) -> dict[str, float]:
    """Seconds of own time per part of the flow.

    A function outside our code (redis-py, numpy, a builtin) is charged to the parts that
    called it, split by the cumulative time of each call edge; that is exact for a library
    function called from one place and proportional otherwise.
    """
    memo: dict[Any, dict[str, float]] = {}

    def shares(func: Any, visiting: frozenset[Any]) -> dict[str, float]:
        if func in memo:
            return memo[func]
        own = categorise(func, qualnames)
        if own is not None:
            result = {own: 1.0}
        else:
            callers = raw.get(func, (0, 0, 0.0, 0.0, {}))[4]
            edges = {c: e for c, e in callers.items() if c not in visiting}
            weights = {c: e[3] for c, e in edges.items()}
            if sum(weights.values()) <= 0:
                weights = {c: float(e[1]) for c, e in edges.items()}
            total = sum(weights.values())
            if total <= 0:
                result = {UNATTRIBUTED: 1.0}
            else:
                acc: dict[str, float] = defaultdict(float)
                for caller, weight in weights.items():
                    for category, share in shares(caller, visiting | {func}).items():
                        acc[category] += share * weight / total
                result = dict(acc)
        if not visiting:
            memo[func] = result
        return result

    seconds: dict[str, float] = defaultdict(float)
    for func, (_cc, _nc, tottime, _ct, _callers) in raw.items():
        if tottime <= 0:
            continue
        for category, share in shares(func, frozenset()).items():
            seconds[category] += tottime * share
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


def _short(func: tuple[str, int, str], qualnames: dict[Any, str]) -> str:
    filename, line, name = func
    if filename.startswith(str(PROJECT_ROOT)) and "/.venv/" not in filename:
        qualified = qualnames.get(func, name)
        return f"{Path(filename).relative_to(PROJECT_ROOT)}:{line}({qualified})"
    text = pstats.func_std_string(func)
    marker = "site-packages/"
    return text[text.index(marker) + len(marker) :] if marker in text else text


def profile_full_flow(
    settings: Settings,
    messages: list[KafkaSourceMessage[bytes, bytes]],
    prefixes: list[str],
    top_n: int = 25,
) -> dict[str, Any]:
    """cProfile one in-process run of the full flow; save the stats and the top functions."""
    flow_settings = isolated(settings, prefixes)
    flow = build_flow(flow_settings, TestingSource(messages, BATCH_SIZE))
    profiler = cProfile.Profile()
    gc.collect()
    started = time.perf_counter()
    profiler.enable()
    run_main(flow)
    profiler.disable()
    seconds = time.perf_counter() - started
    store_of(flow_settings).delete_namespace()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    prof_path = OUT_DIR / "pipeline_full_flow.prof"
    profiler.dump_stats(prof_path)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top_n)
    top_path = OUT_DIR / "pipeline_full_flow_top25.txt"
    top_path.write_text(text.getvalue())
    raw = stats.stats  # type: ignore[attr-defined]
    qualnames = loaded_qualnames()
    total = sum(v[2] for v in raw.values())
    top = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top_n]
    return {
        "profiled_run_s": seconds,
        "profiled_events_per_s": rate(len(messages), seconds),
        "own_time_total_s": total,
        "top_by_tottime": [
            {
                "function": _short(func, qualnames),
                "tottime_s": v[2],
                "calls": v[1],
                "cumtime_s": v[3],
            }
            for func, v in top
        ],
        "seconds_by_part": attribute(raw, qualnames),
        "files": [str(prof_path), str(top_path)],
    }


# --- 3. memory per user (child process) -------------------------------------------------------------


def _count_user_logics(counts: dict[str, int]) -> None:
    """Count per-user logics built and evicted in this child (resident = built - evicted).

    Wraps the adapter's factory and ``on_notify`` in this process only (instrumentation;
    no file is changed); two integers, so it adds no memory per user.
    """
    build = steps.build_user_logic

    def counted_build(*args: Any, **kwargs: Any) -> Any:
        counts["built"] += 1
        return build(*args, **kwargs)

    on_notify = steps.UserModelLogic.on_notify

    def counted_notify(self: Any) -> Any:
        out, discard = on_notify(self)
        if discard:
            counts["evicted"] += 1
        return out, discard

    steps.build_user_logic = counted_build  # type: ignore[assignment]
    steps.UserModelLogic.on_notify = counted_notify  # type: ignore[method-assign]


def _release_free_heap() -> None:
    """Hand glibc's free heap back to the OS, so the baseline holds no start-up garbage."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def write_item_pool(path: Path) -> int:
    """The real Taobao rows (item, category, behaviour) synthetic events are drawn from.

    Written by the parent so the child never loads polars, whose allocator returns freed
    memory lazily and would blur the child's baseline.
    """
    frame = load_taobao()
    rows = {name: frame[name].to_list() for name in ("item_id", "category_id", "behavior")}
    path.write_text(json.dumps(rows))
    return frame.height


def slice_ends(n_events: int, slices: int) -> list[int]:
    """Where each slice of the input ends: on batch boundaries, the last one at the end."""
    ends = {
        min(n_events, round(n_events * k / slices / BATCH_SIZE) * BATCH_SIZE)
        for k in range(1, slices)
    }
    return sorted(e for e in ends if 0 < e < n_events) + [n_events]


def memory_child(params: dict[str, Any]) -> None:
    """Run the full flow on synthetic users; write RSS samples as JSON lines to params['out']."""
    settings = load_settings()
    counts = {"built": 0, "evicted": 0}
    _count_user_logics(counts)
    pool = json.loads(Path(params["pool"]).read_text())
    items, categories, behaviours = pool["item_id"], pool["category_id"], pool["behavior"]
    n_users = int(params["users"])
    rng = np.random.default_rng(int(params["seed"]))
    # Exactly n_users distinct users: each gets floor or ceil of events_per_user events, in a
    # random order (drawn before the baseline: ~8 bytes per event, part of it).
    per_user = float(params["events_per_user"])
    events_each = math.floor(per_user) + (rng.random(n_users) < per_user % 1)
    user_of_event = rng.permutation(np.repeat(np.arange(1, n_users + 1), events_each))
    row_of_event = rng.integers(0, len(items), len(user_of_event))
    n_events = len(user_of_event)
    ends = slice_ends(n_events, int(params["slices"]))
    sample_every_s = float(params["sample_every_s"])
    pause = timedelta(seconds=float(params["pause_s"]))
    drain = timedelta(seconds=float(params["drain_s"]))
    step_s = (TAOBAO_WINDOW_END_S - TAOBAO_WINDOW_START_S) / max(n_events, 1)
    out = open(params["out"], "a")  # noqa: SIM115 - written through the whole run
    started = last_sample_at = time.perf_counter()
    paused_s = 0.0
    sent = 0

    def sample(label: str) -> None:
        nonlocal last_sample_at
        last_sample_at = time.perf_counter()
        record = {
            "label": label,
            "t_s": time.perf_counter() - started,
            "rss_kib": proc_status_kib("self", "VmRSS"),
            "hwm_kib": proc_status_kib("self", "VmHWM"),
            "resident_users": counts["built"] - counts["evicted"],
            "built": counts["built"],
            "evicted": counts["evicted"],
            "events_sent": sent,
        }
        out.write(json.dumps(record) + "\n")
        out.flush()

    def messages() -> Iterator[object]:
        # Samples run inside the worker thread, between batches: the resident count is exact
        # for what the flow has processed (at most the batch being assembled is not).
        nonlocal sent, paused_s
        first = 0
        for end in ends:
            for seq in range(first, end):
                if seq % BATCH_SIZE == 0:
                    if time.perf_counter() - last_sample_at > sample_every_s:
                        sent = seq
                        sample("progress")
                    chunk = slice(seq, seq + BATCH_SIZE)
                    users = user_of_event[chunk].tolist()
                    rows = row_of_event[chunk].tolist()
                user_id = str(users[seq % BATCH_SIZE])
                row = rows[seq % BATCH_SIZE]
                event = Event(
                    event_id=f"synth-{seq}",
                    user_id=user_id,
                    item_id=items[row],
                    type=behaviours[row],
                    ts=datetime.fromtimestamp(TAOBAO_WINDOW_START_S + seq * step_s, UTC),
                    category_id=categories[row],
                )
                yield KafkaSourceMessage(
                    key=user_id.encode(),
                    value=encode_event(event),
                    topic="synthetic",
                    partition=0,
                    offset=seq,
                )
            first = sent = end
            # Runs when the flow asks for the batch after this slice's last full one.
            sample("slice end")
            paused_at = time.perf_counter()
            yield TestingSource.PAUSE(pause if end < n_events else drain)
            paused_s += time.perf_counter() - paused_at
        sample("drained")

    out.write(json.dumps({"label": "plan", "events": n_events}) + "\n")
    flow = build_flow(settings, TestingSource(messages(), BATCH_SIZE))
    gc.collect()
    _release_free_heap()
    sample("baseline")
    run_main(flow)
    run_s = time.perf_counter() - started
    sample("after run")
    done = {"label": "done", "events": n_events, "run_s": run_s, "paused_s": paused_s}
    out.write(json.dumps(done) + "\n")
    out.close()


def run_memory(
    settings: Settings,
    run_dir: Path,
    prefixes: list[str],
    users: int,
    ttl_s: float,
    args: argparse.Namespace,
    timeout_s: float,
    pool: Path,
) -> dict[str, Any]:
    """One memory child: the parent samples its VmRSS; the child reports its own samples."""
    run_settings = isolated(settings, prefixes, user_idle_ttl_s=ttl_s)
    name = f"memory-{users}-ttl{ttl_s:g}"
    out = run_dir / f"{name}.jsonl"
    log = run_dir / f"{name}.log"
    params = {
        "users": users,
        "events_per_user": args.events_per_user,
        "slices": args.slices,
        "pause_s": args.pause_s,
        "drain_s": max(args.pause_s, 2.0),
        "seed": 7,
        "sample_every_s": 3.0,
        "out": str(out),
        "pool": str(pool),
    }
    argv = [sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(params)]
    started = time.perf_counter()
    proc = processes.spawn(argv, run_settings, log)
    series: list[tuple[float, int]] = []
    timed_out = False
    try:
        while proc.poll() is None:
            elapsed = time.perf_counter() - started
            series.append((round(elapsed, 2), proc_status_kib(proc.pid, "VmRSS")))
            if elapsed > timeout_s:
                timed_out = True
                break
            time.sleep(0.25)
    finally:
        # A stopped child has nothing worth a graceful end (and freeing millions of objects
        # takes a while): kill it.
        if timed_out:
            processes.kill(proc)
        else:
            processes.stop(proc)
    wall_s = time.perf_counter() - started
    if proc.returncode not in (0, None) and not timed_out:
        raise RuntimeError(f"memory child exited {proc.returncode}; log {log}:\n{log_tail(log)}")
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    samples = [r for r in records if r["label"] not in ("done", "plan")]
    plan = next((r for r in records if r["label"] == "plan"), None)
    done = next((r for r in records if r["label"] == "done"), None)
    keys = Keys(run_settings.redis_prefix)
    client = store_of(run_settings).client
    parked = sum(1 for _ in client.scan_iter(match=keys.user_state("*"), count=10_000))
    client.close()
    n_events = plan["events"] if plan else round(users * args.events_per_user)
    result: dict[str, Any] = {
        "users": users,
        "events": n_events,
        "user_idle_ttl_s": ttl_s,
        "wall_s": wall_s,
        "timed_out": timed_out,
        "samples": samples,
        "parent_rss_series_kib": series,
        "parent_peak_rss_kib": max((rss for _, rss in series), default=0),
        "child_hwm_kib": max((s["hwm_kib"] for s in samples), default=0),
        "parked_states_in_redis": parked,
    }
    if done is not None:
        result["events_per_s_excl_pauses"] = rate(done["events"], done["run_s"] - done["paused_s"])
    baseline = next((s for s in samples if s["label"] == "baseline"), None)
    during = [s for s in samples if s["label"] in ("progress", "slice end", "drained")]
    # Stopped only while exiting after the drain: every event was processed.
    result["complete"] = any(s["label"] == "drained" for s in samples)
    if baseline is None or not during:
        return result
    result["baseline_rss_kib"] = baseline["rss_kib"]
    if ttl_s >= NO_EVICTION_TTL_S:
        # Every user stays: after the drain all of them are resident and processed.
        point = during[-1]
        xs = np.array([s["resident_users"] for s in during], dtype=float)
        ys = np.array([s["rss_kib"] * 1024 for s in during], dtype=float)
        if len(xs) >= 3 and np.ptp(xs) > 0:
            result["slope_bytes_per_user_over_run"] = float(np.polyfit(xs, ys, 1)[0])
    else:
        point = max(during, key=lambda s: s["resident_users"])
        result["max_rss_kib_during"] = max(s["rss_kib"] for s in during)
    result["measured_at"] = f"{point['label']} after {point['events_sent']:,} events"
    result["events_done"] = max(s["events_sent"] for s in during)
    result["resident_users"] = point["resident_users"]
    result["users_seen"] = point["built"] - (point["evicted"] if ttl_s >= NO_EVICTION_TTL_S else 0)
    result["rss_kib"] = point["rss_kib"]
    result["bytes_per_resident_user"] = (
        (point["rss_kib"] - baseline["rss_kib"]) * 1024 / max(point["resident_users"], 1)
    )
    if not result["complete"]:
        last = during[-1]
        pauses = sum(1 for s in during if s["label"] == "slice end" and s["t_s"] < last["t_s"])
        active_s = last["t_s"] - baseline["t_s"] - pauses * args.pause_s
        result["events_per_s_seen"] = rate(last["events_sent"], active_s)
    return result


# --- 4. dedup memory ------------------------------------------------------------------------------


def traced_bytes(build: Callable[[], object]) -> tuple[int, object]:
    """Bytes allocated (and still held) by ``build()``, by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    built = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, built


def _deep_getsizeof(dedup: EventDedup) -> int:
    size = sys.getsizeof(dedup) + sys.getsizeof(dedup.__dict__) + sys.getsizeof(dedup.ids)
    return size + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in dedup.ids.items())


def measure_dedup(settings: Settings, events: list[Event]) -> dict[str, Any]:
    """Bytes per remembered id (realistic id styles) and per user at the default horizon."""
    horizon_s, max_ids = settings.dedup_horizon_s, settings.dedup_max_ids
    base_ts = float(TAOBAO_WINDOW_START_S)
    id_styles: dict[str, Callable[[int], list[str]]] = {
        # Line numbers of a 100M-row log: distinct, 8-9 digits.
        "taobao-<seq>": lambda n: [f"taobao-{s}" for s in range(50_000_000, 50_000_000 + n)],
        "uuid4": lambda n: [str(uuid.uuid4()) for _ in range(n)],
    }
    per_id: dict[str, dict[str, Any]] = {}
    for style, make in id_styles.items():
        for n in (64, 1_000, max_ids):
            copies = max(1, 30_000 // n)  # ≥ 30k ids per measurement: small n is not noise

            def fill(ids: list[str], n: int = n) -> list[EventDedup]:
                dedups = []
                for start in range(0, len(ids), n):
                    dedup = EventDedup(horizon_s, max_ids)
                    for i, event_id in enumerate(ids[start : start + n]):
                        dedup.is_duplicate(event_id, base_ts + i)  # all within the horizon
                    dedups.append(dedup)
                return dedups

            total_ids = copies * n
            with_strings, built = traced_bytes(lambda make=make, k=total_ids: fill(make(k)))
            assert isinstance(built, list) and sum(map(len, built)) == total_ids
            sizes = sum(_deep_getsizeof(d) for d in built)
            del built
            prebuilt = make(total_ids)
            structure_only, _ = traced_bytes(lambda ids=prebuilt: fill(ids))
            per_id[f"{style}, {n:,} per user"] = {
                "ids_per_user": n,
                "users": copies,
                "bytes_per_id_with_string": with_strings / total_ids,
                "bytes_per_id_excl_string": structure_only / total_ids,
                "getsizeof_bytes_per_id": sizes / total_ids,
            }

    # Real users: every Taobao event through its user's dedup, ids copied as a decoder would.
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_user[event.user_id].append(event)

    def replay_users() -> dict[str, EventDedup]:
        dedups = {}
        for user_id, user_events in by_user.items():
            dedup = dedups[user_id] = EventDedup(horizon_s, max_ids)
            for event in user_events:
                dedup.is_duplicate(event.event_id.encode().decode(), event.ts_s)
        return dedups

    real_bytes, built = traced_bytes(replay_users)
    dedups = built if isinstance(built, dict) else {}
    remembered = [len(d) for d in dedups.values()]
    events_per_user = [len(v) for v in by_user.values()]

    # Synthetic users of the memory runs: ~2.5 ids each.
    def synthetic_users(n_users: int = 10_000) -> list[EventDedup]:
        users = []
        for u in range(n_users):
            dedup = EventDedup(horizon_s, max_ids)
            for k in range(2 + (u % 2)):
                dedup.is_duplicate(f"synth-{u * 3 + k}", base_ts + k)
            users.append(dedup)
        return users

    synthetic_bytes, _ = traced_bytes(synthetic_users)
    bytes_per_id_max = per_id[f"uuid4, {max_ids:,} per user"]["bytes_per_id_with_string"]
    return {
        "horizon_s": horizon_s,
        "max_ids": max_ids,
        "per_id": per_id,
        "taobao_users": len(dedups),
        "taobao_events_per_user_mean": statistics.mean(events_per_user),
        "taobao_ids_remembered_mean": statistics.mean(remembered),
        "taobao_ids_remembered_median": statistics.median(remembered),
        "taobao_ids_remembered_max": max(remembered),
        "taobao_bytes_per_user": real_bytes / len(dedups),
        "taobao_bytes_per_remembered_id": real_bytes / max(sum(remembered), 1),
        "synthetic_2_to_3_ids_bytes_per_user": synthetic_bytes / 10_000,
        "worst_case_bytes_per_user_at_max_ids": bytes_per_id_max * max_ids,
    }


def measure_user_state(
    settings: Settings, events: list[Event], max_users: int = 200
) -> dict[str, Any]:
    """Whole ``UserState`` bytes per real Taobao user (window, seen, dedup, session, vector)."""
    params, config = isgd_params(settings), user_config(settings)
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.user_id in by_user or len(by_user) < max_users:
            by_user[event.user_id].append(event)

    def replay() -> dict[str, UserState]:
        states = {}
        for user_id, user_events in by_user.items():
            state = states[user_id] = UserState(user_id, params, config)
            for event in user_events:
                if state.is_duplicate(event.event_id.encode().decode(), event.ts_s):
                    continue
                item_id = event.item_id.encode().decode()  # its own string, as decoded
                if event.type in INTERACTION_TYPES:
                    vector = initial_vector(item_id, "item", params)
                    state.learn(item_id, vector, event.type, event.ts_s, event.category_id)
                else:
                    state.observe(item_id, event.type, event.ts_s)
        return states

    total, states = traced_bytes(replay)
    users = len(states) if isinstance(states, dict) else 1
    return {"taobao_users": users, "bytes_per_user": total / users}


# --- report -------------------------------------------------------------------------------------


def _git_state() -> dict[str, Any]:
    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", *argv], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_files": dirty}


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def print_throughput(t: dict[str, Any]) -> None:
    m = t["events_per_s_median"]
    print(
        f"1. throughput, {t['events']:,} Taobao events as KafkaSourceMessages → TestingSource "
        f"(batch {BATCH_SIZE}) → run_main; {t['rounds']} interleaved rounds, median"
    )
    print(f"   pass-through  (map → no-op sink)           {m['passthrough']:>12,.0f} ev/s")
    print(f"   keyed counter (key_on + stateful_map)      {m['keyed_counter']:>12,.0f} ev/s")
    print(f"   decode only   (map(decode) → no-op sink)   {m['decode_only']:>12,.0f} ev/s")
    print(f"   full build_flow (real Redis)               {m['full']:>12,.0f} ev/s")
    rounds = " ".join(f"{r:.4f}" for r in t["full_over_keyed_counter_per_round"])
    print(f"   full / pass-through   {t['full_over_passthrough']:.4f}")
    print(f"   full / keyed counter  {t['full_over_keyed_counter']:.4f}  (per round: {rounds})")
    ratio = t["full_over_keyed_counter"]
    verdict = "MET" if ratio >= GOAL_FULL_OVER_KEYED else "MISSED"
    need = GOAL_FULL_OVER_KEYED * m["keyed_counter"]
    print(
        f"   goal full ≥ {GOAL_FULL_OVER_KEYED}× keyed counter: {verdict} — needs "
        f"≥ {need:,.0f} ev/s, is {m['full']:,.0f} ({need / m['full']:.0f}× short)"
        if verdict == "MISSED"
        else f"   goal full ≥ {GOAL_FULL_OVER_KEYED}× keyed counter: MET"
    )
    print(
        f"   decoding alone / keyed counter  {t['decode_only_over_keyed_counter']:.3f}  "
        "(an upper bound of full / keyed counter for any flow that reads the events)"
    )


def print_broker(b: dict[str, Any]) -> None:
    print(
        f"   from the broker: python -m bytewax.run, {b['partitions']} partitions, tail off "
        f"(events produced at {b['produce_events_per_s']:,.0f} ev/s)"
    )
    print(
        "                   wall = spawn→exit; net = wall − empty-topic run; "
        "span = first→last output batch"
    )
    for flow in ("passthrough", "full"):
        r = b[flow]
        print(
            f"   {flow:<12} wall {fmt(r['wall_events_per_s'], ',.0f', 9)}"
            f"  net {fmt(r['net_events_per_s'], ',.0f', 9)}"
            f"  span {fmt(r['span_events_per_s'], ',.0f', 9)} ev/s"
            f"  (empty-topic run: {r['startup_and_end_s']:.1f} s)"
        )
    print(
        "   full / pass-through from the broker: "
        f"wall {fmt(b['full_over_passthrough_wall'], '.3f')}, "
        f"net {fmt(b['full_over_passthrough_net'], '.3f')}, "
        f"span {fmt(b['full_over_passthrough_span'], '.3f')}"
    )
    if any(b[flow]["net_events_per_s"] is None for flow in ("passthrough", "full")):
        print("   n/a: the loaded run took no longer than the empty one (start-up noise)")


def print_profile(p: dict[str, Any]) -> None:
    total = p["own_time_total_s"]
    print(
        f"2. profile of the full flow (cProfile, in-process, {p['profiled_events_per_s']:,.0f} ev/s "
        f"under the profiler; {total:.1f} s own time) → {p['files'][0]}"
    )
    print("   time by part of the flow (library time charged to the caller in our code):")
    for part, seconds in p["seconds_by_part"].items():
        if seconds / total >= 0.005:
            print(f"   {seconds:7.2f} s {seconds / total:6.1%}  {part}")
    print("   top 25 by tottime:     tottime      calls  function")
    for row in p["top_by_tottime"]:
        print(
            f"   {row['tottime_s']:7.3f} s {row['tottime_s'] / total:6.1%} {row['calls']:>10,}  "
            f"{row['function'][:100]}"
        )


def print_memory(memory: list[dict[str, Any]], skipped: list[str], events_per_user: float) -> None:
    print(
        "3. worker RSS: full flow on a TestingSource in a child process; exactly N synthetic "
        f"users with {math.floor(events_per_user)}–{math.ceil(events_per_user)} events each "
        f"(mean {events_per_user:g}) in random order over real Taobao item rows, event times "
        "spread over the 9-day window; bytes per user = (RSS − baseline: flow built, nothing "
        "run) / resident users"
    )
    print(
        "        users     events  ttl   baseline  RSS at point  resident users  "
        "B/resident user  peak RSS   ev/s*  point"
    )
    for r in memory:
        if "bytes_per_resident_user" not in r:
            print(f"   {r['users']:>10,}  no samples (timed out: {r['timed_out']})")
            continue
        no_eviction = r["user_idle_ttl_s"] >= NO_EVICTION_TTL_S
        ttl = "∞" if no_eviction else f"{r['user_idle_ttl_s']:g} s"
        speed = r.get("events_per_s_excl_pauses") or r.get("events_per_s_seen")
        point = r["measured_at"] + ("" if r["complete"] else " (STOPPED: time cap)")
        # With eviction RSS keeps the freed memory of evicted users (allocator arenas), so
        # dividing it by the users resident at one moment would mean nothing.
        per_user = f"{r['bytes_per_resident_user']:,.0f}" if no_eviction else "—"
        if not no_eviction:
            point = "most resident, " + point
        print(
            f"   {r['users']:>10,} {r['events']:>10,}  {ttl:<4} {_mib(r['baseline_rss_kib']):>9}"
            f"  {_mib(r['rss_kib']):>12}  {r['resident_users']:>14,}  "
            f"{per_user:>15}  {_mib(max(r['parent_peak_rss_kib'], r['child_hwm_kib'])):>8}"
            f"  {f'{speed:,.0f}' if speed else '—':>6}  {point}"
        )
    print("   * events/s of the whole run with the pauses between slices taken out")
    full = [
        r
        for r in memory
        if r["user_idle_ttl_s"] >= NO_EVICTION_TTL_S and "bytes_per_resident_user" in r
    ]
    complete = [r for r in full if r["complete"]]
    marginal = None
    for a, b in zip(complete, complete[1:], strict=False):
        extra = b["resident_users"] - a["resident_users"]
        if extra > 0:
            marginal = (b["rss_kib"] - a["rss_kib"]) * 1024 / extra
            print(
                f"   marginal {a['resident_users']:,} → {b['resident_users']:,} users: "
                f"{marginal:,.0f} B per extra user (item state is shared and saturates)"
            )
    for r in full:
        if "slope_bytes_per_user_over_run" in r:
            print(
                f"   within the {r['users']:,}-user run: RSS grows "
                f"{r['slope_bytes_per_user_over_run']:,.0f} B per resident user "
                "(least squares over its samples)"
            )
        if r["complete"]:
            continue
        missing = r["users"] - r["resident_users"]
        slopes = [r.get("slope_bytes_per_user_over_run", r["bytes_per_resident_user"])]
        if marginal is not None:
            slopes.append(marginal)
        low, high = (r["rss_kib"] * 1024 + x * missing for x in (min(slopes), max(slopes)))
        needs_s = r["events"] / (r.get("events_per_s_seen") or 1)
        print(
            f"   EXTRAPOLATION, not measured: {r['users']:,} users ≈ {low / 2**30:.2f}–"
            f"{high / 2**30:.2f} GiB RSS = measured {_mib(r['rss_kib'])} at "
            f"{r['resident_users']:,} users + {missing:,} users × "
            + " to ".join(f"{x:,.0f}" for x in sorted(slopes))
            + " B (this run's slope; the marginal of the complete runs). The whole run would "
            f"need ~{needs_s:,.0f} s at its {r.get('events_per_s_seen') or 0:,.0f} ev/s; the users "
            f"reached had {r['events_done'] / max(r['resident_users'], 1):.2f} events each, "
            f"{r['events'] / r['users']:.2f} at the end."
        )
    for r in memory:
        if r["user_idle_ttl_s"] >= NO_EVICTION_TTL_S or "baseline_rss_kib" not in r:
            continue
        stopped = "" if r["complete"] else f" (stopped at its {r['wall_s']:.0f} s cap)"
        print(
            f"   ttl {r['user_idle_ttl_s']:g} s, {r['users']:,} users{stopped}: over "
            f"{r['events_done']:,} events at most {r['resident_users']:,} users resident at once, "
            f"RSS at most {_mib(r['max_rss_kib_during'])} (baseline {_mib(r['baseline_rss_kib'])}); "
            f"{r['parked_states_in_redis']:,} users parked in Redis"
        )
        same = next((f for f in full if f["users"] == r["users"]), None)
        if same is None:
            continue
        # Same seed and user count: the run without eviction saw the very same events.
        ref = max(
            (
                x
                for x in same["samples"]
                if x["label"] in ("progress", "slice end", "drained")
                and x["events_sent"] <= r["events_done"]
            ),
            key=lambda x: x["events_sent"],
            default=None,
        )
        if ref is not None:
            print(
                f"   the same events without eviction, after {ref['events_sent']:,}: "
                f"{ref['resident_users']:,} users resident, RSS {_mib(ref['rss_kib'])}"
            )
    for text in skipped:
        print(f"   skipped: {text}")


def print_dedup(d: dict[str, Any], user_state: dict[str, Any] | None) -> None:
    print(
        f"4. EventDedup memory (tracemalloc; horizon {d['horizon_s']:,.0f} s, max {d['max_ids']:,} ids)"
    )
    for name, row in d["per_id"].items():
        print(
            f"   {name:<28} {row['bytes_per_id_with_string']:6.0f} B/id incl. the id string, "
            f"{row['bytes_per_id_excl_string']:5.0f} B/id excl. (getsizeof: {row['getsizeof_bytes_per_id']:.0f})"
        )
    print(
        f"   Taobao users ({d['taobao_users']}, {d['taobao_events_per_user_mean']:.0f} events each "
        f"over 9 days): {d['taobao_ids_remembered_mean']:.0f} ids remembered on average (median "
        f"{d['taobao_ids_remembered_median']:.0f}, max {d['taobao_ids_remembered_max']}) → "
        f"{d['taobao_bytes_per_user']:,.0f} B per user, {d['taobao_bytes_per_remembered_id']:.0f} B per id"
    )
    print(
        f"   synthetic users with 2–3 ids: {d['synthetic_2_to_3_ids_bytes_per_user']:,.0f} B per user; "
        f"worst case (max_ids of uuid4 ids): {d['worst_case_bytes_per_user_at_max_ids'] / 2**20:.1f} MiB per user"
    )
    if user_state is not None:
        print(
            f"   whole UserState of a Taobao user (window, seen, dedup, session, vector; "
            f"{user_state['taobao_users']} users): "
            f"{user_state['bytes_per_user']:,.0f} B"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="runs per round of cheap flows")
    parser.add_argument("--users", default="10000,100000,1000000")
    parser.add_argument("--ttl-users", type=int, default=100_000, help="0: no ttl=1 run")
    parser.add_argument("--events-per-user", type=float, default=2.5)
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--pause-s", type=float, default=1.5)
    parser.add_argument("--budget-s", type=float, default=780.0, help="whole benchmark")
    parser.add_argument("--ttl-max-s", type=float, default=100.0, help="cap of the ttl run")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--json")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    sections = set(args.sections.split(","))
    if not sections <= set(SECTIONS):
        parser.error(f"--sections: unknown {sorted(sections - set(SECTIONS))}")

    began = time.perf_counter()
    deadline = began + args.budget_s
    run_dir = Path(tempfile.mkdtemp(prefix="freshrec-bench-pipeline-"))
    settings = load_settings(
        environ={},
        run_dir=str(run_dir),
        kafka_bootstrap="127.0.0.1:0",
        redis_url="redis://127.0.0.1:0/0",
    )
    events = list(iter_dataset_events("taobao"))
    messages = kafka_messages(events)
    user_ids = list(dict.fromkeys(e.user_id for e in events))
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "bytewax": _bytewax_version(),
        },
        "git": _git_state(),
    }
    git = result["git"]
    print(
        f"freshrec pipeline benchmark: {len(events):,} Taobao events, {len(user_ids):,} users; "
        f"commit {git['commit']}"
        + (
            f" + {len(git['uncommitted_files'])} uncommitted files"
            if git["uncommitted_files"]
            else ""
        )
        + f"; {os.cpu_count()} cpus"
    )
    prefixes: list[str] = []
    phases: dict[str, float] = {}
    result["phases_s"] = phases
    mark = time.perf_counter()

    def phase_done(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = now - mark
        mark = now

    environ = {k: v for k, v in os.environ.items() if k != "FRESHREC_REDIS_URL"}
    stack = LocalStack(settings)
    stack.start(environ=environ)
    ok = False
    try:
        settings = msgspec.structs.replace(
            settings,
            kafka_bootstrap=stack.info.kafka_bootstrap,
            redis_url=stack.info.redis_url,
        )
        if "throughput" in sections:
            result["throughput"] = measure_in_process(
                settings, messages, user_ids, args.rounds, args.repeats, prefixes
            )
            print_throughput(result["throughput"])
            phase_done("throughput")
        if "floors" in sections:
            result["floors"] = measure_floors(settings, messages, repeats=args.repeats)
            print_floors(result["floors"])
            phase_done("floors")
        if "broker" in sections:
            result["broker"] = measure_broker(
                settings, events, user_ids, run_dir, prefixes, timeout_s=300
            )
            print_broker(result["broker"])
            phase_done("broker")
        if "profile" in sections:
            result["profile"] = profile_full_flow(settings, messages, prefixes)
            print_profile(result["profile"])
            phase_done("profile")
        if "dedup" in sections:
            result["dedup"] = measure_dedup(settings, events)
            try:
                result["user_state"] = measure_user_state(settings, events)
            except Exception as exc:  # noqa: BLE001 - an optional extra; report, go on
                print(f"   (UserState size not measured: {type(exc).__name__}: {exc})")
                result["user_state"] = None
            phase_done("dedup")
        if "memory" in sections:
            memory: list[dict[str, Any]] = []
            skipped: list[str] = []
            pool = run_dir / "item_pool.json"
            write_item_pool(pool)
            plan = [(int(u), NO_EVICTION_TTL_S) for u in args.users.split(",") if u]
            if args.ttl_users:
                plan.insert(min(2, len(plan)), (args.ttl_users, 1.0))
            for users, ttl_s in plan:
                remaining = deadline - time.perf_counter()
                if ttl_s < NO_EVICTION_TTL_S:
                    remaining = min(remaining, args.ttl_max_s)
                if remaining < 20:
                    ttl = "no eviction" if ttl_s >= NO_EVICTION_TTL_S else f"ttl {ttl_s:g} s"
                    skipped.append(f"{users:,} users, {ttl} (time budget spent)")
                    continue
                memory.append(
                    run_memory(settings, run_dir, prefixes, users, ttl_s, args, remaining, pool)
                )
            result["memory"] = memory
            result["memory_skipped"] = skipped
            print_memory(memory, skipped, args.events_per_user)
            phase_done("memory")
        if "dedup" in sections:
            print_dedup(result["dedup"], result["user_state"])
        ok = True
    finally:
        for prefix in prefixes:
            store = store_of(msgspec.structs.replace(settings, redis_prefix=prefix))
            store.delete_namespace()
            store.client.close()
        stack.stop()
        phase_done("cleanup")
        if ok:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"logs kept in {run_dir}", file=sys.stderr)
    result["benchmark_s"] = time.perf_counter() - began
    print(
        f"benchmark took {result['benchmark_s']:.0f} s ("
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items())
        + ")"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def _bytewax_version() -> str:
    from importlib.metadata import version

    return version("bytewax")


if __name__ == "__main__":
    main()
