"""The flow's Redis sink: writes sent while the worker computes, confirmed before the commit.

A batch's writes go out while the worker computes the next batches, and are confirmed before
Bytewax commits the epoch that produced them.

Why a partitioned sink. Bytewax commits an epoch (the input offsets and the keyed steps'
snapshots a resume starts from) once every *snapshot-taking* step has closed it; a
``DynamicSink``'s progress is not among them (read in Bytewax 0.21's ``write_recovery``). A
crash just after a commit could so lose writes of the committed epoch for good, and writing
asynchronously from a ``DynamicSink`` would widen that window to every write in flight. A
``FixedPartitionedSink`` partition is snapshotted at each epoch's close, before the commit: its
``snapshot`` waits until the worker's writes so far are confirmed by Redis. Between epochs
(seconds; hundreds of batches) the worker never waits for Redis: one thread per worker sends
each batch's two round trips (:meth:`state.store.RedisStore.write_batch`) in order, while the
worker's thread computes.

Why one partition per worker, named by its index. A partitioned sink routes each item to its
partition's worker; a partition only its own worker lists has that worker as its primary, so
every batch stays on the worker that made it (no exchange, no pickling of the flow's native
messages). Bytewax tells a worker its index only in a ``DynamicSink``'s ``build``:
:class:`WorkerIdentity`, declared before this sink, records it for the worker's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Final

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from dataflows.monitor import start_worker_monitor
from dataflows.retry import retry_while_unreachable
from dataflows.steps import live_quality
from freshrec import metrics
from freshrec.settings import Settings
from operators import LiveQuality, StateWrites, collect_writes
from state.store import RedisStore

log = logging.getLogger(__name__)

PARTITIONS_LISTED: Final = 256
"""Partition names every worker also lists beyond its own (``0000``–``0255``), so that a
resume with fewer workers than the checkpointed run finds a worker for every checkpointed
partition (Bytewax panics on a snapshot of a partition nobody lists). Those partitions get no
writes; more workers than this work, but can't later be scaled below their count."""

PENDING_BATCHES: Final = 4
"""Batches a worker may have in flight before it waits for Redis (backpressure)."""

# (worker index, worker count) by OS thread. Not a ``threading.local``: Bytewax's worker
# threads are not Python's, and each of its calls into Python may get a fresh thread state.
_workers: dict[int, tuple[int, int]] = {}


def _this_worker() -> tuple[int, int]:
    worker = _workers.get(threading.get_ident())
    if worker is None:
        raise RuntimeError("the flow must declare a WorkerIdentity output before its RedisSink")
    return worker


def own_partition() -> str:
    """The sink partition of the worker running on this thread."""
    return f"{_this_worker()[0]:04d}"


class _Discard(StatelessSinkPartition[object]):
    def write_batch(self, items: list[object]) -> None:
        pass


class WorkerIdentity(DynamicSink[object]):
    """Writes nothing; records the worker's index for the thread that builds and runs it."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        _workers[threading.get_ident()] = (worker_index, worker_count)
        return _Discard()


def to_own_writer(batch: list[object]) -> list[tuple[str, list[object]]]:
    """A batch of state outputs as one item for this worker's own sink partition."""
    return [(own_partition(), batch)]


class StateWriter:
    """One worker's Redis writes, sent in order by a thread of their own.

    :meth:`submit` returns at once unless ``PENDING_BATCHES`` are still unsent;
    :meth:`confirm` returns once everything submitted before it is in Redis. While Redis is
    unreachable the thread retries (every write is idempotent), so the worker's wait is
    backpressure, as before. Any other failure is raised in the worker at its next submit or
    confirm: Bytewax then stops the flow without committing the epoch.
    """

    def __init__(
        self,
        store: RedisStore,
        retention_s: int,
        feedback_keep: int,
        quality: LiveQuality | None,
    ) -> None:
        self.store = store
        self.retention_s = retention_s
        self.feedback_keep = feedback_keep
        self.quality = quality
        self._queue: queue.Queue[StateWrites | None] = queue.Queue(PENDING_BATCHES)
        self._progress = threading.Condition()
        self._submitted = 0
        self._confirmed = 0
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, writes: StateWrites) -> None:
        self._raise_failure()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="freshrec-state-writer", daemon=True
            )
            self._thread.start()
        self._submitted += 1
        while True:
            try:
                self._queue.put(writes, timeout=0.1)
                return
            except queue.Full:
                self._raise_failure()

    def confirm(self) -> None:
        target = self._submitted
        with self._progress:
            while self._confirmed < target and self._failure is None:
                self._progress.wait()
        self._raise_failure()

    def close(self) -> None:
        if self._thread is None:
            return
        self.confirm()
        self._queue.put(None)
        self._thread.join()
        self._thread = None

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError("writing the flow's state to Redis failed") from self._failure

    def _run(self) -> None:
        while (writes := self._queue.get()) is not None:
            try:
                retry_while_unreachable(
                    lambda w=writes: self.store.write_batch(w, self.retention_s, self.feedback_keep)
                )
                self._account(writes)
            except BaseException as exc:
                log.exception("writing a batch of state to Redis failed")
                with self._progress:
                    self._failure = exc
                    self._progress.notify_all()
                return
            with self._progress:
                self._confirmed += 1
                self._progress.notify_all()

    def _account(self, writes: StateWrites) -> None:
        written = time.time()
        for arrival_s in writes.arrivals:
            freshness = max(0.0, written - arrival_s)
            metrics.FRESHNESS.observe(freshness)
            metrics.RECENT_FRESHNESS.add(freshness, written)
        metrics.EVENTS.labels("applied").inc(writes.applied)
        metrics.EVENTS.labels("duplicate").inc(writes.duplicates)
        metrics.EVENTS.labels("dead_letter").inc(writes.dead_letters)
        metrics.ERASURES.inc(len(writes.erasure_ids))
        for scope, count in (("user", writes.user_alarms), ("global", writes.global_alarms)):
            metrics.DRIFT_ALARMS.labels(scope).inc(count)
            metrics.RECALIBRATIONS.labels(scope).inc(count)
        metrics.DRIFT_ALARMS.labels("global").inc(writes.ctr_alarms + writes.shift_alarms)
        if self.quality is not None:
            metrics.PREQUENTIAL_HR10.set(self.quality.window_recall)


class _RedisPartition(StatefulSinkPartition[list[object], None]):
    def __init__(self, writer: StateWriter) -> None:
        self.writer = writer

    def write_batch(self, items: list[list[object]]) -> None:
        outputs = items[0] if len(items) == 1 else [o for batch in items for o in batch]
        self.writer.submit(collect_writes(outputs))

    def snapshot(self) -> None:
        # Bytewax commits the epoch only after this returns: its writes must be in Redis.
        self.writer.confirm()

    def close(self) -> None:
        self.writer.close()
        self.writer.store.client.close()


class _RetiredPartition(StatefulSinkPartition[list[object], None]):
    """A partition of a worker that no longer runs (a resume with fewer workers)."""

    def write_batch(self, items: list[list[object]]) -> None:
        raise RuntimeError("a retired sink partition got writes: to_own_writer must route")

    def snapshot(self) -> None:
        return None


class RedisSink(FixedPartitionedSink[list[object], None]):
    """Writes every state output of the flow to Redis, confirmed before the epoch commits.

    Versioned and idempotent writes, one batch per pipeline. Feed it through
    :func:`to_own_writer`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def list_parts(self) -> list[str]:
        index, count = _this_worker()
        return [f"{index:04d}", *(f"{i:04d}" for i in range(count, PARTITIONS_LISTED))]

    def part_fn(self, item_key: str) -> int:
        # Partition names are zero-padded indices: their sorted order is numeric.
        return int(item_key)

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> _RedisPartition | _RetiredPartition:
        if for_part != own_partition():
            return _RetiredPartition()
        s = self.settings
        store = RedisStore.from_url(s.redis_url, s.redis_prefix, s.factors)
        start_worker_monitor(RedisStore.from_url(s.redis_url, s.redis_prefix, s.factors))
        quality = live_quality(s) if s.prequential_sample_every else None
        writer = StateWriter(store, s.user_retention_s, s.feedback_windows_kept, quality)
        return _RedisPartition(writer)
