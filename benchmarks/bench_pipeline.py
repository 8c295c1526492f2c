"""Dataflow throughput of the native flow, its floors, where its time goes, worker memory.

Everything is measured side by side in one run (the machine is shared and noisy), on the real
stack: an embedded Tansu broker and a private redis-server, started and stopped here.

1. throughput (issue 13): events/s over the Taobao head (84k real events) for reference flows
   and the full ``build_flow``, all fed the same ``KafkaSourceMessage`` objects (keyed by user
   id) from a ``TestingSource`` (batch 1000, no broker), in interleaved rounds:
   - pass-through: ``map(identity)`` → no-op sink;
   - keyed counter: ``key_on`` + ``stateful_map`` (count per user) → no-op sink;
   - decode only: ``flat_map_batch`` over the native decoder (``operators.invalid_reasons``:
     one native call per batch, the same ``events::decode`` as the user model) → no-op sink;
   - skeleton: the full flow's keyed shape with trivial Python bodies and no work at all — a
     decode step (``flat_map_batch`` keying each message by user, the item id looked up by
     offset), a user-keyed ``stateful_batch`` emitting one item message per event, an item-
     keyed ``stateful_batch`` (one output per item and batch): the design's own ceiling;
   - skeleton, user step only: the same without the item exchange (what one keyed exchange
     fewer per event would allow);
   - full ``build_flow`` into a private Redis namespace; every event must be accounted for.
2. floors: the native per-event cost of each stage alone, no stream engine, timed in Rust
   loops (``operators.stage_costs``) over the same events, next to the keyed counter's whole
   per-event cost in the same run: the sum bounds this implementation's cost per event.
3. broker: the events produced once to a topic (≥ 4 partitions), then the full flow as
   ``python -m bytewax.run dataflows.personalize:flow`` with one worker process and with two
   (``-i/-a``), ``consumer_tail=false`` so each ends at the topic's end; events/s from the first
   to the last Redis write (polled), every event applied.
4. profile: where the full flow's wall time goes (in-process run): native parts
   (``operators.enable_timing``/``native_time``), Redis (the sink's ``store.write_batch`` and
   the item replica's refresh, timed by wrapping them here), Python glue of the sink, and the
   Bytewax engine (the rest); keyed calls and messages per event.
5. memory: resident memory of a worker process (the full flow on a ``TestingSource``) at 10k /
   100k / 1M synthetic users (2–3 events each) over real item rows, and with
   ``user_idle_ttl_s=1`` (idle users parked in Redis); a run that would overrun the time
   budget (``--budget-s``) is stopped and extrapolated, marked so. Snapshot bytes per user:
   ``len(UserState.to_state())`` (the bytes ``UserModel.snapshot()`` and parking write) of
   users rebuilt with the same events through ``operators.UserState``, and the parked states'
   sizes in Redis in the ttl run.

    python benchmarks/bench_pipeline.py [--rounds 3] [--users 10000,100000,1000000]
        [--sections throughput,floors,broker,profile,memory] [--budget-s 1000] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import hiredis
import msgspec
import numpy as np
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

import operators
from dataflows import item_replica, personalize, redis_sink, steps
from dataflows.personalize import build_flow, isgd_params, item_config, user_config
from freshrec import processes
from freshrec.datasets import TAOBAO_WINDOW_END_S, TAOBAO_WINDOW_START_S, load_taobao
from freshrec.events import INTERACTION_TYPES, Event, encode_event
from freshrec.replay import iter_dataset_events, send_to_kafka
from freshrec.settings import Settings, load_settings
from freshrec.stack import LocalStack, create_topics, free_port
from state.keys import Keys
from state.store import RedisStore

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZE = 1000
GOAL_FULL_OVER_KEYED = 0.15
STRETCH_FULL_OVER_KEYED = 0.5
GOAL_FULL_OVER_SKELETON = 0.7
GOAL_FLOOR_SUM_US = 3.0
GOAL_BYTES_PER_USER = 1000
SECTIONS = ("throughput", "floors", "broker", "profile", "memory")
FLOWS = ("passthrough", "keyed_counter", "decode_only", "skeleton", "skeleton_user_only", "full")
NO_EVICTION_TTL_S = 1e9
CLEANUP_RESERVE_S = 45.0


# --- the reference flows ------------------------------------------------------------------------


class _CountingPartition(StatelessSinkPartition[Any]):
    def __init__(self, values: bool) -> None:
        self.values = values
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        # values=True: the items are (key, n) pairs, each standing for n events.
        self.count += sum(n for _, n in items) if self.values else len(items)


class CountingSink(DynamicSink[Any]):
    """Drops every item, counting them (or summing their counts): the cheapest output."""

    def __init__(self, values: bool = False) -> None:
        self.values = values
        self.partitions: list[_CountingPartition] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        part = _CountingPartition(self.values)
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
    """input → flat_map_batch(native decode + validate of the batch) → no-op sink.

    The least any flow that looks inside the events does (one native call per batch, one
    small string out per event): it bounds the full flow's rate.
    """
    flow = Dataflow("bench_decode_only")
    raw = op.input("in", flow, source)
    skew_s = settings.max_future_skew_s

    def decode(batch: list[Any]) -> list[str | None]:
        return operators.invalid_reasons(batch, time.time(), skew_s)

    op.output("out", op.flat_map_batch("decode", raw, decode), sink)
    return flow


def keyed_counter_flow(source: Source[Any], sink: CountingSink) -> Dataflow:
    """input → key_on(Kafka key = user id) → stateful_map(count per user) → no-op sink."""
    flow = Dataflow("bench_keyed_counter")
    raw = op.input("in", flow, source)
    by_user = op.key_on("key_by_user", raw, _message_user)
    op.output("out", op.stateful_map("count", by_user, _count), sink)
    return flow


class _SkeletonUser(op.StatefulBatchLogic[str, str, None]):
    """No work: one item message per event (the item ids the decode step looked up)."""

    def on_batch(self, values: list[str]) -> tuple[list[str], bool]:
        return values, False

    def snapshot(self) -> None:
        return None


class _SkeletonItem(op.StatefulBatchLogic[int, int, None]):
    """No work: one output per item and batch (how many messages it got)."""

    def on_batch(self, values: list[int]) -> tuple[list[int], bool]:
        return [len(values)], False

    def snapshot(self) -> None:
        return None


def _skeleton_user(_resume: object) -> _SkeletonUser:
    return _SkeletonUser()


def _skeleton_item(_resume: object) -> _SkeletonItem:
    return _SkeletonItem()


def _item_messages(batch: list[tuple[str, str]]) -> list[tuple[str, int]]:
    return [(item, 1) for _user, item in batch]


def _user_outputs(batch: list[tuple[str, str]]) -> list[tuple[str, int]]:
    return [(user, 1) for user, _item in batch]


def skeleton_flow(
    source: Source[Any], sink: CountingSink, item_of_offset: list[str], item_exchange: bool = True
) -> Dataflow:
    """The full flow's keyed shape, trivial Python bodies, no work (issue 13's reference).

    decode step (``flat_map_batch``: key = the message key, value = the event's item id,
    looked up by offset: no parsing) → user-keyed ``stateful_batch`` emitting one item
    message per event → re-key by item (``flat_map_batch``, as ``item_batches``) → item-keyed
    ``stateful_batch`` (one output per item and batch) → no-op sink summing the counts.
    ``item_exchange=False`` stops after the user step (one keyed exchange per event fewer).
    """

    def decode(batch: list[KafkaSourceMessage[bytes, bytes]]) -> list[tuple[str, str]]:
        return [(m.key.decode(), item_of_offset[m.offset]) for m in batch]

    flow = Dataflow("bench_skeleton" if item_exchange else "bench_skeleton_user_only")
    raw = op.input("in", flow, source)
    users = op.stateful_batch("user", op.flat_map_batch("decode", raw, decode), _skeleton_user)
    if item_exchange:
        by_item = op.flat_map_batch("item_messages", users, _item_messages)
        out = op.stateful_batch("item", by_item, _skeleton_item)
    else:
        out = op.flat_map_batch("user_outputs", users, _user_outputs)
    op.output("out", out, sink)
    return flow


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


def drop_namespace(settings: Settings) -> None:
    store = store_of(settings)
    try:
        store.delete_namespace()
    finally:
        store.client.close()


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


def _run_flow(
    name: str,
    settings: Settings,
    messages: list[KafkaSourceMessage[bytes, bytes]],
    item_of_offset: list[str],
    user_ids: list[str],
    prefixes: list[str],
) -> float:
    """One in-process run of a flow over the messages; its seconds (checked: nothing lost)."""
    n = len(messages)
    source = TestingSource(messages, BATCH_SIZE)
    sink = CountingSink(values=name == "skeleton")
    full_settings = None
    if name == "passthrough":
        flow = passthrough_flow(source, sink)
    elif name == "keyed_counter":
        flow = keyed_counter_flow(source, sink)
    elif name == "decode_only":
        flow = decode_only_flow(source, sink, settings)
    elif name in ("skeleton", "skeleton_user_only"):
        flow = skeleton_flow(source, sink, item_of_offset, item_exchange=name == "skeleton")
    else:
        full_settings = isolated(settings, prefixes)
        flow = build_flow(full_settings, source)
    gc.collect()
    started = time.perf_counter()
    run_main(flow)
    seconds = time.perf_counter() - started
    if full_settings is None:
        if sink.count != n:
            raise RuntimeError(f"{name} accounted for {sink.count} of {n} events")
    else:
        seen = applied_events(full_settings, user_ids)
        if seen != n:
            raise RuntimeError(f"full flow accounted for {seen} of {n} events")
        drop_namespace(full_settings)
    return seconds


def measure_in_process(
    settings: Settings,
    messages: list[KafkaSourceMessage[bytes, bytes]],
    item_of_offset: list[str],
    user_ids: list[str],
    rounds: int,
    repeats: int,
    prefixes: list[str],
) -> dict[str, Any]:
    """Interleaved rounds of every flow over the same messages (the full flow once a round)."""
    n = len(messages)
    runs: dict[str, list[float]] = {name: [] for name in FLOWS}
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        medians: dict[str, float] = {}
        for name in FLOWS:
            this_round = []
            for _ in range(1 if name == "full" else repeats):
                seconds = _run_flow(name, settings, messages, item_of_offset, user_ids, prefixes)
                this_round.append(n / seconds)
            runs[name] += this_round
            medians[name] = statistics.median(this_round)
        per_round.append(medians)
    median = {name: statistics.median(values) for name, values in runs.items()}
    out: dict[str, Any] = {
        "events": n,
        "users": len(user_ids),
        "batch_size": BATCH_SIZE,
        "rounds": rounds,
        "repeats_of_cheap_flows": repeats,
        "decode_only_is": "flat_map_batch over operators.invalid_reasons (native, one call per batch)",
        "events_per_s_median": median,
        "events_per_s_runs": runs,
        "full_over_keyed_counter": median["full"] / median["keyed_counter"],
        "full_over_skeleton": median["full"] / median["skeleton"],
        "full_over_passthrough": median["full"] / median["passthrough"],
        "full_over_decode_only": median["full"] / median["decode_only"],
        "skeleton_over_keyed_counter": median["skeleton"] / median["keyed_counter"],
        "skeleton_user_only_over_keyed_counter": (
            median["skeleton_user_only"] / median["keyed_counter"]
        ),
        "decode_only_over_keyed_counter": median["decode_only"] / median["keyed_counter"],
    }
    for a, b in (("full", "keyed_counter"), ("full", "skeleton"), ("skeleton", "keyed_counter")):
        out[f"{a}_over_{b}_per_round"] = [r[a] / r[b] for r in per_round]
    return out


# --- 2. floors ------------------------------------------------------------------------------------


def measure_floors(
    settings: Settings, messages: list[KafkaSourceMessage[bytes, bytes]], repeats: int
) -> dict[str, Any]:
    """Per-event µs of each stage alone (native loops, no Bytewax) vs the keyed counter's."""
    n = len(messages)
    costs = operators.stage_costs(
        [m.value for m in messages],
        isgd_params(settings),
        user_config(settings),
        item_config(settings),
        settings.neighbours_per_item,
        repeats=repeats,
        batch_size=BATCH_SIZE,
        sample_every=settings.prequential_sample_every,
        max_future_skew_s=settings.max_future_skew_s,
        item_shards=settings.item_shards,
    )
    best = math.inf
    for _ in range(repeats):
        sink = CountingSink()
        flow = keyed_counter_flow(TestingSource(messages, BATCH_SIZE), sink)
        gc.collect()
        started = time.perf_counter()
        run_main(flow)
        best = min(best, time.perf_counter() - started)
    counter_us = best / n * 1e6
    stages = costs["stage_us_per_event"]
    total = sum(stages.values())
    return {
        "events": n,
        "repeats": repeats,
        "timed_by": "operators.stage_costs: Rust loops over the crate's own functions, best of repeats",
        "stage_us_per_event": stages,
        "detail_us_per_event": costs["detail_us_per_event"],
        "sum_us_per_event": total,
        "keyed_counter_us_per_event": counter_us,
        "goal_sum_us_per_event": GOAL_FLOOR_SUM_US,
        "sum_over_keyed_counter": total / counter_us,
    }


# --- 3. from the broker ------------------------------------------------------------------------------


def _run_worker_processes(
    argvs: list[list[str]], settings: Settings, logs: list[Path], timeout_s: float
) -> dict[str, Any]:
    """Run dataflow processes to their end; poll Redis for the first and last item write."""
    store = store_of(settings)
    first_write = last_write = 0.0
    last_seq = 0
    started = time.perf_counter()
    procs = [processes.spawn(argv, settings, log) for argv, log in zip(argvs, logs, strict=True)]
    try:
        while any(p.poll() is None for p in procs):
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"{argvs[0]} did not end within {timeout_s} s; logs {logs}")
            seq = store.item_change_seq()
            if seq != last_seq:
                now = time.perf_counter()
                first_write = first_write or now
                last_write, last_seq = now, seq
            time.sleep(0.002)
    finally:
        for p in procs:
            processes.stop(p)
        store.client.close()
    seconds = time.perf_counter() - started
    for p, log in zip(procs, logs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"worker exited with {p.returncode}; log {log}:\n{log_tail(log)}")
    return {
        "wall_s": seconds,
        "first_write_after_s": first_write - started if first_write else None,
        "write_span_s": last_write - first_write if first_write else None,
    }


def measure_broker(
    settings: Settings,
    events: list[Event],
    user_ids: list[str],
    run_dir: Path,
    prefixes: list[str],
    timeout_s: float,
) -> dict[str, Any]:
    """The full flow as ``python -m bytewax.run`` processes on a real topic, 1 and 2 processes.

    Events/s over the span from the first to the last item write in Redis (polled every
    2 ms): start-up, connecting and end-of-partition detection are left out; wall (spawn →
    exit) is given too.
    """
    tag = uuid.uuid4().hex[:8]
    topic, dlq = f"bench-{tag}", f"bench-dlq-{tag}"
    partitions = max(4, settings.events_partitions)
    create_topics(settings.kafka_bootstrap, {topic: partitions, dlq: 1})
    produced = send_to_kafka(events, settings, topic=topic, progress=False)
    n = len(events)
    result: dict[str, Any] = {
        "partitions": partitions,
        "events": n,
        "produce_events_per_s": produced.events_per_s,
        "measured_by": "first → last item write in Redis (polled); workers -w 1 each",
    }
    per_s: dict[str, float | None] = {}
    for name, count in (("one_process", 1), ("two_processes", 2)):
        flow_settings = isolated(
            settings, prefixes, events_topic=topic, dlq_topic=dlq, consumer_tail=False
        )
        if count == 1:
            argvs = [processes.worker_argv()]
        else:
            addresses = [f"127.0.0.1:{free_port()}" for _ in range(count)]
            argvs = [processes.worker_argv(process_id=i, addresses=addresses) for i in range(count)]
        logs = [run_dir / f"broker-{name}-{i}.log" for i in range(count)]
        run = _run_worker_processes(argvs, flow_settings, logs, timeout_s)
        got = applied_events(flow_settings, user_ids)
        if got != n:
            raise RuntimeError(f"{name} from the broker applied {got} of {n} events; logs {logs}")
        drop_namespace(flow_settings)
        run["events_per_s"] = rate(n, run["write_span_s"] or 0.0)
        run["wall_events_per_s"] = rate(n, run["wall_s"])
        result[name] = run
        per_s[name] = run["events_per_s"]
    result["events_per_s"] = per_s
    result["two_over_one"] = ratio(per_s["two_processes"], per_s["one_process"])
    return result


# --- 4. profile -------------------------------------------------------------------------------------


class _Stopwatch:
    """Seconds and calls of a wrapped callable (instrumentation of this process only)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.items = 0

    def wrap(self, fn: Callable[..., Any], count: Callable[[Any, tuple], int] | None = None):
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1
            if count is not None:
                self.items += count(out, args)
            return out

        return timed


@contextlib.contextmanager
def patched(target: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


PROFILE_PARTS = {
    "bytewax_engine": "the rest of the wall time: scheduling, exchanges, per-key logic calls "
    "(on_batch, notify_at), Python shims",
    "native": "operators.native_time() of every native step (the user model's replica "
    "refresh callback taken out)",
    "redis": "what the worker's thread waits for Redis: the sink's writer full (submit) or "
    "confirming an epoch's writes (snapshot), and the item replica's refresh (reads). The "
    "writes themselves run on the sink's writer thread, overlapped with the worker (see "
    "redis_seconds)",
    "python_glue": "the sink partition's own Python (flattening the batch, handing it over)",
}


def redis_part(command: tuple[Any, ...], keys: Keys) -> str:
    """Which kind of state a command of ``RedisStore.write_batch`` writes or reads."""
    name = str(command[0]).upper()
    # A script's first key says what it is about: EVAL script numkeys key ...
    at = 3 if name == "EVAL" else 1
    key = str(command[at]) if len(command) > at else ""
    if key.startswith((keys.item_factors, keys.popularity, keys.trending,
                       keys.item_categories)):  # fmt: skip
        return "items (factors, versions, change log, popularity, trend, category)"
    if key == keys.neighbour_versions or key.startswith(keys.neighbours("")):
        return "neighbour lists (versions, records)"
    if key.startswith(keys.segment_popularity("")):
        return "segment popularity (ZADD + trim)"
    if key.startswith(keys.user("")):
        return "user records (versions, records)"
    if key == keys.holdout:
        return "holdouts (XADD)"
    return "other (parked users, alarms, feedback)"


def redis_breakdown(
    settings: Settings, captured: list[list[tuple[Any, ...]]], prefixes: list[str]
) -> dict[str, Any]:
    """Replay the profiled run's Redis commands into a fresh namespace, part by part.

    ``captured`` holds, per round trip of ``RedisStore.write_batch``, the commands it sent;
    each round trip's commands are replayed one pipeline per part (in the same order, so the
    keys grow as in the run): what each part costs of the Redis time.
    """
    store = store_of(isolated(settings, prefixes))
    source = Keys(captured_prefix(captured)) if captured else store.keys
    seconds: dict[str, float] = defaultdict(float)
    sizes: dict[str, int] = defaultdict(int)
    try:
        for commands in captured:
            by_part: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
            for command in commands:
                by_part[redis_part(command, source)].append(
                    rename_keys(command, source.prefix, store.keys.prefix)
                )
            for part_name, part_commands in by_part.items():
                sizes[part_name] += sum(len(c) for c in part_commands)
                started = time.perf_counter()
                store._execute(part_commands)
                seconds[part_name] += time.perf_counter() - started
    finally:
        store.delete_namespace()
        store.client.close()
    total = sum(seconds.values())
    per_batch = {
        name: (s / len(captured) * 1e3 if captured else 0.0) for name, s in seconds.items()
    }
    return {
        "batches": len(captured),  # round trips of the sink (two per batch: read, then write)
        "seconds": dict(seconds),
        "share": {name: s / total for name, s in seconds.items()} if total else {},
        "ms_per_batch": per_batch,
        "arguments": dict(sizes),
    }


def decoded_commands(encoded: bytes) -> list[tuple[Any, ...]]:
    """The commands of a RESP-encoded batch, text arguments as str (binary ones as bytes)."""
    reader = hiredis.Reader()
    reader.feed(encoded)
    commands = []
    while (command := reader.gets()) is not False:
        args = []
        for arg in command:
            try:
                args.append(arg.decode())
            except UnicodeDecodeError:
                args.append(arg)
        commands.append(tuple(args))
    return commands


def captured_prefix(captured: list[list[tuple[Any, ...]]]) -> str:
    """The key prefix of the profiled run (every command's second argument is a key)."""
    for commands in captured:
        for command in commands:
            if len(command) > 1 and ":" in str(command[1]):
                return str(command[1]).split(":", 1)[0].strip("{}")
    return ""


def rename_keys(command: tuple[Any, ...], old: str, new: str) -> tuple[Any, ...]:
    """The command with the run's key prefix replaced (keys are the str arguments starting
    with it; ids and values are left as they are)."""
    head = old + ":"
    return tuple(
        new + ":" + a[len(head) :] if isinstance(a, str) and a.startswith(head) else a
        for a in command
    )


def profile_full_flow(
    settings: Settings,
    messages: list[KafkaSourceMessage[bytes, bytes]],
    user_ids: list[str],
    prefixes: list[str],
) -> dict[str, Any]:
    """One in-process run of the full flow with the native timers on and Redis timed."""
    n = len(messages)
    flow_settings = isolated(settings, prefixes)
    redis_write, refresh, sink = _Stopwatch(), _Stopwatch(), _Stopwatch()
    submit_wait, confirm_wait = _Stopwatch(), _Stopwatch()
    captured: list[Any] = []  # each round trip's Redis commands, replayed part by part afterwards
    routed = {
        name: _Stopwatch()
        for name in (
            "key_by_user",
            "item_batches",
            "feedback_batches",
            "popularity_samples",
            "dead_letters",
        )
    }
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            patched(
                RedisStore,
                "write_batch",
                redis_write.wrap(RedisStore.write_batch),
            )
        )
        real_execute = RedisStore._execute_encoded

        def capturing(store: RedisStore, batch: Any) -> Any:
            if batch:
                captured.append(decoded_commands(batch.encoded()))
            return real_execute(store, batch)

        stack.enter_context(patched(RedisStore, "_execute_encoded", capturing))
        stack.enter_context(
            patched(
                item_replica.ItemReplicaFeed,
                "refresh",
                refresh.wrap(item_replica.ItemReplicaFeed.refresh),
            )
        )
        stack.enter_context(
            patched(
                redis_sink._RedisPartition,
                "write_batch",
                sink.wrap(redis_sink._RedisPartition.write_batch, lambda _out, args: len(args[1])),
            )
        )
        for method, watch in (("submit", submit_wait), ("confirm", confirm_wait)):
            wrapped = watch.wrap(getattr(redis_sink.StateWriter, method))
            stack.enter_context(patched(redis_sink.StateWriter, method, wrapped))
        for name, watch in routed.items():
            if name == "item_batches":  # the item router is built with the shard count
                router_class = personalize.ItemRouter

                def counted_router(
                    shards: int, watch: _Stopwatch = watch, router_class: Any = router_class
                ) -> Any:
                    return watch.wrap(router_class(shards), lambda out, _args: len(out))

                stack.enter_context(patched(personalize, "ItemRouter", counted_router))
                continue
            fn = getattr(personalize, name)
            stack.enter_context(
                patched(personalize, name, watch.wrap(fn, lambda out, _args: len(out)))
            )
        flow = build_flow(flow_settings, TestingSource(messages, BATCH_SIZE))
        gc.collect()
        operators.enable_timing(True)
        started = time.perf_counter()
        try:
            run_main(flow)
        finally:
            wall = time.perf_counter() - started
            operators.enable_timing(False)
        native = {
            name: {"seconds": s, "calls": c} for name, (s, c) in operators.native_time().items()
        }
    seen = applied_events(flow_settings, user_ids)
    if seen != n:
        raise RuntimeError(f"profiled full flow accounted for {seen} of {n} events")
    drop_namespace(flow_settings)
    # The user model's native time includes its Python callback that refreshes the item
    # replica from Redis: that time is Redis's.
    user_native = native["user_model"]["seconds"] - refresh.seconds
    # The native write plan runs on the sink's writer thread, holding the GIL: it is counted
    # as native time the worker's thread could not use.
    native_total = sum(v["seconds"] for v in native.values()) - refresh.seconds
    redis_total = submit_wait.seconds + confirm_wait.seconds + refresh.seconds
    # The sink partition's own Python: around collect_writes (native) and the hand-over.
    sink_glue = max(0.0, sink.seconds - native["collect_writes"]["seconds"] - submit_wait.seconds)
    wrapper_s = sum(w.calls for w in routed.values()) * 1e-6  # the wrappers' own frames, ~1 µs
    engine = wall - native_total - redis_total - sink_glue
    seconds = {
        "wall": wall,
        "bytewax_engine": engine,
        "native": native_total,
        "redis": redis_total,
        "python_glue": sink_glue,
    }
    native_parts = {name: v["seconds"] for name, v in native.items()}
    native_parts["user_model"] = user_native
    share = {k: v / wall for k, v in seconds.items() if k != "wall"}
    keyed_messages = n + routed["item_batches"].items + routed["feedback_batches"].items
    keyed_messages += routed["popularity_samples"].items
    calls_per_event = {
        "user_model_calls": native["user_model"]["calls"] / n,
        "item_model_calls": native["item_model"]["calls"] / n,
        "feedback_model_calls": native["feedback_model"]["calls"] / n,
        "popularity_shift_calls": native["popularity_shift"]["calls"] / n,
        "keyed_calls": sum(
            native[k]["calls"]
            for k in ("user_model", "item_model", "feedback_model", "popularity_shift")
        )
        / n,
        "item_messages": routed["item_batches"].items / n,
        "keyed_messages (into the stateful steps)": keyed_messages / n,
        "sink_messages": sink.items / n,
        "messages (keyed + sink + dead letters)": (
            keyed_messages + sink.items + routed["dead_letters"].items
        )
        / n,
    }
    redis_parts = redis_breakdown(settings, captured, prefixes)
    return {
        "events": n,
        "events_per_s": n / wall,
        "redis_parts_replayed": redis_parts,
        "seconds": seconds,
        "share": share,
        "parts_are": PROFILE_PARTS,
        "native_seconds": native_parts,
        "native_calls": {name: v["calls"] for name, v in native.items()},
        "native_us_per_event": {name: s / n * 1e6 for name, s in native_parts.items()},
        "redis_seconds": {
            "store.write_batch": redis_write.seconds,
            "store.write_batch_calls": redis_write.calls,
            "writer_full_wait": submit_wait.seconds,
            "epoch_confirm_wait": confirm_wait.seconds,
            "epoch_confirm_calls": confirm_wait.calls,
            "item replica refresh": refresh.seconds,
            "item replica refresh calls": refresh.calls,
        },
        "sink_partition_seconds": sink.seconds,
        "instrumentation_overhead_s_estimate": wrapper_s,
        "calls_per_event": calls_per_event,
    }


# --- 5. memory per user (child process) -------------------------------------------------------------


def _count_user_models(counts: dict[str, int]) -> None:
    """Count user models built and parked in this child (resident = built - parked).

    Wraps the user step's builder (a Python frame per new key in front of the native
    factory) and the sink's ``collect_writes`` (how many users a batch parks), in this
    process only; two integers, so it adds no memory per user.
    """
    build = steps.build_user_model

    def counted_build(*args: Any, **kwargs: Any) -> Any:
        factory = build(*args, **kwargs)

        def builder(resume: object = None) -> Any:
            counts["built"] += 1
            return factory(resume)

        return builder

    collect = redis_sink.collect_writes

    def counted_collect(items: list[object]) -> Any:
        writes = collect(items)
        counts["evicted"] += len(writes.parked)
        return writes

    steps.build_user_model = counted_build  # type: ignore[assignment]
    redis_sink.collect_writes = counted_collect  # type: ignore[assignment]


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


def synthetic_plan(
    n_users: int, events_per_user: float, seed: int, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exactly n_users distinct users (ids 1..n), each with floor or ceil of events_per_user
    events, in a random order: the user and the item row of each event (deterministic)."""
    rng = np.random.default_rng(seed)
    events_each = math.floor(events_per_user) + (rng.random(n_users) < events_per_user % 1)
    user_of_event = rng.permutation(np.repeat(np.arange(1, n_users + 1), events_each))
    row_of_event = rng.integers(0, n_rows, len(user_of_event))
    return user_of_event, row_of_event


def make_event(
    pool: dict[str, list[Any]], seq: int, user_id: str, row: int, step_s: float
) -> Event:
    """The seq-th synthetic event: a real Taobao row's item, category and behaviour."""
    return Event(
        event_id=f"synth-{seq}",
        user_id=user_id,
        item_id=pool["item_id"][row],
        type=pool["behavior"][row],
        ts=datetime.fromtimestamp(TAOBAO_WINDOW_START_S + seq * step_s, UTC),
        category_id=pool["category_id"][row],
    )


def size_stats(sizes: list[int]) -> dict[str, float]:
    ordered = sorted(sizes)
    return {
        "users": len(ordered),
        "mean": statistics.fmean(ordered),
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
    }


def snapshot_sizes(by_user: dict[str, list[Event]], settings: Settings) -> dict[str, float]:
    """``len(UserState.to_state())`` of each user after their events (size statistics).

    The user model's snapshot and parked state are ``UserState::to_bytes`` of the same
    state; it is rebuilt here through the ``operators.UserState`` face with the flow's
    per-event calls (dedup, learn or observe, drift check). That face leaves the context
    segment empty, so the last applied event's segment (from ``operators.Enricher``, as the
    flow's) is added to each size.
    """
    params, config = isgd_params(settings), user_config(settings)
    enricher = operators.Enricher()
    sizes = []
    for user_id, events in by_user.items():
        state = operators.UserState(user_id, params, config)
        segment = ""
        for e in events:
            if state.is_duplicate(e.event_id, e.ts_s):
                continue
            c = e.context
            offset = e.ts.utcoffset()
            segment = enricher.enrich(
                c.user_agent if c else None,
                c.device if c else None,
                c.country if c else None,
                c.region if c else None,
                round(e.ts_s * 1e6),
                int(offset.total_seconds()) if offset else 0,
            )[7]
            if e.type in INTERACTION_TYPES:
                vector = operators.initial_vector(e.item_id, "item", params)
                state.learn(e.item_id, vector, e.type, e.ts_s, e.category_id, 1.0, segment)
                state.check_drift(lambda _item: None)
            else:
                state.observe(e.item_id, e.type, e.ts_s)
        sizes.append(len(state.to_state()) + len(segment.encode()))
    return size_stats(sizes)


def synthetic_snapshot_bytes(
    settings: Settings,
    pool: Path,
    users: int,
    events_per_user: float,
    seed: int,
    sample: int = 2000,
) -> dict[str, float]:
    """Snapshot bytes of the first ``sample`` users of a memory run (the same events)."""
    rows = json.loads(pool.read_text())
    user_of_event, row_of_event = synthetic_plan(users, events_per_user, seed, len(rows["item_id"]))
    step_s = (TAOBAO_WINDOW_END_S - TAOBAO_WINDOW_START_S) / max(len(user_of_event), 1)
    by_user: dict[str, list[Event]] = defaultdict(list)
    for seq in np.nonzero(user_of_event <= sample)[0].tolist():
        user_id = str(user_of_event[seq])
        by_user[user_id].append(make_event(rows, seq, user_id, int(row_of_event[seq]), step_s))
    return snapshot_sizes(by_user, settings)


def memory_child(params: dict[str, Any]) -> None:
    """Run the full flow on synthetic users; write RSS samples as JSON lines to params['out']."""
    settings = load_settings()
    counts = {"built": 0, "evicted": 0}
    _count_user_models(counts)
    pool = json.loads(Path(params["pool"]).read_text())
    items = pool["item_id"]
    # Drawn before the baseline: ~8 bytes per event, part of it.
    user_of_event, row_of_event = synthetic_plan(
        int(params["users"]), float(params["events_per_user"]), int(params["seed"]), len(items)
    )
    n_events = len(user_of_event)
    ends = slice_ends(n_events, int(params["slices"]))
    sample_every_s = float(params["sample_every_s"])
    pause = timedelta(seconds=float(params["pause_s"]))
    drain = timedelta(seconds=float(params["drain_s"]))
    step_s = (TAOBAO_WINDOW_END_S - TAOBAO_WINDOW_START_S) / max(n_events, 1)
    out = open(params["out"], "a")  # noqa: SIM115 - written through the whole run

    def synthetic_event(seq: int, user_id: str, row: int) -> Event:
        return make_event(pool, seq, user_id, row, step_s)

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
                event = synthetic_event(seq, user_id, rows[seq % BATCH_SIZE])
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
    index = keys.parked_users.encode()
    parked_keys = sorted(set(client.scan_iter(match=keys.user_state("*"), count=10_000)) - {index})
    parked = len(parked_keys)
    # The parked states are the users' snapshots (UserModel parks state.to_bytes()).
    pipe = client.pipeline(transaction=False)
    for key in parked_keys[:2000]:
        pipe.strlen(key)
    parked_sizes = [int(x) for x in pipe.execute()] if parked_keys else []
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
    result["snapshot_bytes"] = synthetic_snapshot_bytes(
        run_settings, pool, users, args.events_per_user, int(params["seed"])
    )
    if parked_sizes:
        result["parked_state_bytes"] = size_stats(parked_sizes)
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


def taobao_snapshot_bytes(settings: Settings, events: list[Event]) -> dict[str, float]:
    """Snapshot bytes of the Taobao head's real users (~100 events each) after all of them."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_user[event.user_id].append(event)
    return snapshot_sizes(by_user, settings)


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


def _verdict(value: float | None, goal: float, at_most: bool = False) -> str:
    if value is None:
        return "n/a"
    return "MET" if (value <= goal if at_most else value >= goal) else "MISSED"


def print_ratios(result: dict[str, Any]) -> None:
    """The issue's figures first."""
    print("== issue 13 figures ==")
    t = result.get("throughput")
    if t:
        r = t["full_over_keyed_counter"]
        print(
            f"   full / keyed counter  {r:.3f}  (goal ≥ {GOAL_FULL_OVER_KEYED}: "
            f"{_verdict(r, GOAL_FULL_OVER_KEYED)}; stretch {STRETCH_FULL_OVER_KEYED})"
        )
        r = t["full_over_skeleton"]
        print(
            f"   full / skeleton       {r:.3f}  (goal ≥ {GOAL_FULL_OVER_SKELETON}: "
            f"{_verdict(r, GOAL_FULL_OVER_SKELETON)}); skeleton / keyed counter "
            f"{t['skeleton_over_keyed_counter']:.3f}"
        )
    f = result.get("floors")
    if f:
        s = f["sum_us_per_event"]
        print(
            f"   floors: sum {s:.2f} µs per event (goal ≤ {GOAL_FLOOR_SUM_US}: "
            f"{_verdict(s, GOAL_FLOOR_SUM_US, at_most=True)}); keyed counter whole "
            f"{f['keyed_counter_us_per_event']:.2f} µs"
        )
    b = result.get("broker")
    if b:
        e = b["events_per_s"]
        print(
            f"   broker: one process {fmt(e['one_process'], ',.0f')} ev/s, two processes "
            f"{fmt(e['two_processes'], ',.0f')} ev/s"
        )
    memory = [
        r
        for r in result.get("memory", [])
        if r["user_idle_ttl_s"] >= NO_EVICTION_TTL_S and "bytes_per_resident_user" in r
    ]
    for r in memory:
        per_user = r["bytes_per_resident_user"]
        note = "" if r["complete"] else " (stopped early)"
        goal = f" (goal ≤ {GOAL_BYTES_PER_USER}: {_verdict(per_user, GOAL_BYTES_PER_USER, True)})"
        print(
            f"   memory {r['users']:>9,} users: {per_user:,.0f} B per resident user{note}"
            + (goal if r["users"] >= 1_000_000 else "")
            + f"; snapshot {r['snapshot_bytes']['mean']:,.0f} B per user"
        )


def print_throughput(t: dict[str, Any]) -> None:
    m = t["events_per_s_median"]
    print(
        f"1. throughput, {t['events']:,} Taobao events ({t['users']:,} users) as "
        f"KafkaSourceMessages → TestingSource (batch {BATCH_SIZE}) → run_main; {t['rounds']} "
        f"interleaved rounds ({t['repeats_of_cheap_flows']} runs of each reference a round), median"
    )
    rows = (
        ("passthrough", "pass-through  (map → no-op sink)"),
        ("keyed_counter", "keyed counter (key_on + stateful_map)"),
        ("decode_only", "decode only   (flat_map_batch: native decode)"),
        ("skeleton", "skeleton      (decode, user, item steps; no work)"),
        ("skeleton_user_only", "skeleton without the item exchange"),
        ("full", "full build_flow (real Redis)"),
    )
    for key, label in rows:
        print(
            f"   {label:<52} {m[key]:>10,.0f} ev/s  "
            f"{m[key] / m['keyed_counter']:6.3f}× the keyed counter"
        )
    for a, b in (("full", "keyed_counter"), ("full", "skeleton"), ("skeleton", "keyed_counter")):
        rounds = " ".join(f"{r:.3f}" for r in t[f"{a}_over_{b}_per_round"])
        print(f"   {a} / {b}: {t[f'{a}_over_{b}']:.3f} (per round: {rounds})")


def print_floors(f: dict[str, Any]) -> None:
    print(
        f"2. floors: µs per event of each stage alone (Rust loops, no stream engine, best of "
        f"{f['repeats']}), {f['events']:,} events"
    )
    for name, us in f["stage_us_per_event"].items():
        print(f"   {us:8.2f} µs  {name}")
    print(
        f"   {f['sum_us_per_event']:8.2f} µs  sum (goal ≤ {GOAL_FLOOR_SUM_US} µs: "
        f"{_verdict(f['sum_us_per_event'], GOAL_FLOOR_SUM_US, True)})"
    )
    print(f"   {f['keyed_counter_us_per_event']:8.2f} µs  keyed counter flow, whole, same run")
    print("   parts, each timed alone (included in the stages above):")
    for name, us in f["detail_us_per_event"].items():
        print(f"   {us:8.2f} µs    {name}")


def print_broker(b: dict[str, Any], in_process_full: float | None) -> None:
    print(
        f"3. from the broker: python -m bytewax.run dataflows.personalize:flow, "
        f"{b['partitions']} partitions, consumer_tail=false, {b['events']:,} events "
        f"(produced at {b['produce_events_per_s']:,.0f} ev/s); ev/s = first → last Redis write"
    )
    for name in ("one_process", "two_processes"):
        r = b[name]
        vs = ratio(r["events_per_s"], in_process_full)
        print(
            f"   {name:<14} {fmt(r['events_per_s'], ',.0f', 9)} ev/s "
            f"({fmt(vs, '.3f')}× the in-process full flow); wall {r['wall_s']:.1f} s "
            f"({fmt(r['wall_events_per_s'], ',.0f')} ev/s incl. start-up), first write after "
            f"{fmt(r['first_write_after_s'], '.1f')} s"
        )
    print(f"   two / one process: {fmt(b['two_over_one'], '.3f')}")


def print_profile(p: dict[str, Any]) -> None:
    wall = p["seconds"]["wall"]
    print(
        f"4. profile of the full flow (in-process, {p['events_per_s']:,.0f} ev/s with the "
        f"timers on; {wall:.2f} s wall)"
    )
    for name, share in p["share"].items():
        print(f"   {p['seconds'][name]:7.3f} s {share:6.1%}  {name}: {PROFILE_PARTS[name]}")
    print("   native parts: seconds, calls, µs per event")
    for name, seconds in p["native_seconds"].items():
        print(
            f"   {seconds:7.3f} s {p['native_calls'][name]:>8,} calls "
            f"{p['native_us_per_event'][name]:7.2f} µs/event  {name}"
        )
    r = p["redis_seconds"]
    print(
        f"   redis: store.write_batch {r['store.write_batch']:.3f} s on the writer thread "
        f"({r['store.write_batch_calls']} calls, overlapped); the worker waited "
        f"{r['writer_full_wait']:.3f} s for a full writer and {r['epoch_confirm_wait']:.3f} s "
        f"confirming {r['epoch_confirm_calls']} epochs; item replica refresh "
        f"{r['item replica refresh']:.3f} s ({r['item replica refresh calls']} calls)"
    )
    parts = p["redis_parts_replayed"]
    print(
        f"   Redis writes replayed part by part ({parts['batches']} round trips; arguments "
        f"per part {parts['arguments']}):"
    )
    for name, seconds in parts["seconds"].items():
        print(
            f"   {seconds:7.3f} s {parts['share'][name]:6.1%} {parts['ms_per_batch'][name]:6.2f} "
            f"ms/batch  {name}"
        )
    print(
        "   per event: " + ", ".join(f"{name} {v:.3f}" for name, v in p["calls_per_event"].items())
    )


def print_memory(
    memory: list[dict[str, Any]],
    skipped: list[str],
    events_per_user: float,
    snapshots: dict[str, Any],
) -> None:
    print(
        "5. worker RSS: full flow on a TestingSource in a child process; exactly N synthetic "
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
            + (
                f" ({r['parked_state_bytes']['mean']:,.0f} B per parked state, mean of "
                f"{r['parked_state_bytes']['users']:,})"
                if "parked_state_bytes" in r
                else ""
            )
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
    print(
        "   snapshot bytes per user: len(UserState.to_state()) (= UserModel.snapshot() and the "
        "parked state) of users rebuilt with the same events through operators.UserState"
    )
    for name, s in snapshots.items():
        print(
            f"   {name:<22} mean {s['mean']:7,.0f} B  median {s['median']:7,.0f}  "
            f"p90 {s['p90']:7,.0f}  max {s['max']:7,.0f}  ({s['users']:,} users)"
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
    parser.add_argument(
        "--budget-s",
        type=float,
        default=1000.0,
        help="whole benchmark (the 1M-user memory run alone takes ~9 min on 2 cores)",
    )
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
    item_of_offset = [e.item_id for e in events]
    user_ids = list(dict.fromkeys(e.user_id for e in events))
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "bytewax": _bytewax_version(),
        },
        "git": _git_state(),
        "sections": sorted(sections, key=SECTIONS.index),
    }
    git = result["git"]
    print(
        f"freshrec pipeline benchmark (native flow): {len(events):,} Taobao events, "
        f"{len(user_ids):,} users; commit {git['commit']}"
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
                settings, messages, item_of_offset, user_ids, args.rounds, args.repeats, prefixes
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
            full = (result.get("throughput") or {}).get("events_per_s_median", {}).get("full")
            for name in ("one_process", "two_processes"):
                result["broker"][f"{name}_over_in_process_full"] = ratio(
                    result["broker"]["events_per_s"][name], full
                )
            print_broker(result["broker"], full)
            phase_done("broker")
        if "profile" in sections:
            result["profile"] = profile_full_flow(settings, messages, user_ids, prefixes)
            print_profile(result["profile"])
            phase_done("profile")
        if "memory" in sections:
            memory: list[dict[str, Any]] = []
            skipped: list[str] = []
            pool = run_dir / "item_pool.json"
            write_item_pool(pool)
            plan = [(int(u), NO_EVICTION_TTL_S) for u in args.users.split(",") if u]
            if args.ttl_users:
                plan.insert(min(2, len(plan)), (args.ttl_users, 1.0))
            for users, ttl_s in plan:
                # Deleting a big run's namespace at the end takes a while: keep time for it.
                remaining = deadline - CLEANUP_RESERVE_S - time.perf_counter()
                if ttl_s < NO_EVICTION_TTL_S:
                    remaining = min(remaining, args.ttl_max_s)
                if remaining < 20:
                    ttl = "no eviction" if ttl_s >= NO_EVICTION_TTL_S else f"ttl {ttl_s:g} s"
                    skipped.append(f"{users:,} users, {ttl} (time budget spent)")
                    continue
                memory.append(
                    run_memory(settings, run_dir, prefixes, users, ttl_s, args, remaining, pool)
                )
            snapshots: dict[str, Any] = {"taobao_head": taobao_snapshot_bytes(settings, events)}
            for r in memory:
                if r["user_idle_ttl_s"] >= NO_EVICTION_TTL_S:
                    snapshots[f"synthetic_{r['users']}"] = r["snapshot_bytes"]
                elif "parked_state_bytes" in r:
                    snapshots[f"parked_in_redis_{r['users']}_ttl1"] = r["parked_state_bytes"]
            result["memory"] = memory
            result["memory_skipped"] = skipped
            result["snapshot_bytes_per_user"] = snapshots
            print_memory(memory, skipped, args.events_per_user, snapshots)
            phase_done("memory")
        print_ratios(result)
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
