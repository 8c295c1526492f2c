"""Bytewax output that archives valid, enriched events to Parquet (:mod:`freshrec.archive`).

Items are ``(user_id, (event, enrichment))``, or ``(user_id, Erased(user_id))`` for an erased
user (routed by user like their rows, it reaches the writer that buffers them, after them;
that writer keeps the user out from then on). A fixed set of archive partitions (routed by
user id) each own an :class:`ArchiveWriter`; Bytewax asks each partition for a snapshot at
every checkpoint, and the snapshot *flushes* the buffered rows to files first — so nothing a
checkpoint covers lives only in memory, and a crash loses no archived event. Files are named
by partition, process and a random token, so a resumed run never replaces an earlier file;
its at-least-once replays are dropped by ``read_archive``'s dedup on ``event_id``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

import operators
from freshrec.archive import ArchiveWriter
from freshrec.events import Event


@dataclass(frozen=True, slots=True)
class Erased:
    """The user was erased: keep them out of the archive from now on."""

    user_id: str


ArchiveItem = tuple[Event, Mapping[str, object] | None] | Erased
_event: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)


def archive_rows(batch: list[object]) -> list[tuple[str, ArchiveItem]]:
    """The archive's rows of a batch of user-model outputs, keyed by user, in order.

    The key routes a row to an archive partition. Payloads were validated by the user model,
    so they decode directly.
    """
    out: list[tuple[str, ArchiveItem]] = []
    for row in operators.archive_rows(batch):
        if isinstance(row, str):  # an erased user, before anything that came after
            out.append((row, Erased(row)))
            continue
        enrichment = {
            "device_class": row.device_class,
            "tod_bucket": row.tod_bucket,
            "weekday": row.weekday,
            "local_hour": row.local_hour,
            "segment": row.segment,
        }
        out.append((row.user_id, (_event.decode(row.payload), enrichment)))
    return out


class _ArchivePartition(StatefulSinkPartition[ArchiveItem, None]):
    def __init__(self, writer: ArchiveWriter) -> None:
        self.writer = writer

    def write_batch(self, values: list[ArchiveItem]) -> None:
        for value in values:
            if isinstance(value, Erased):
                self.writer.erase(value.user_id)
            else:
                self.writer.add(*value)
        self.writer.maybe_roll()

    def snapshot(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()


class ArchiveSink(FixedPartitionedSink[ArchiveItem, None]):
    """``partitions`` archive writers under ``root``, one per partition."""

    def __init__(
        self,
        root: Path,
        *,
        partitions: int = 4,
        max_rows_per_file: int = 100_000,
        max_file_age_s: float = 60,
    ) -> None:
        self.root = root
        self.partitions = partitions
        self.max_rows_per_file = max_rows_per_file
        self.max_file_age_s = max_file_age_s

    def list_parts(self) -> list[str]:
        return [f"archive{i}" for i in range(self.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ArchivePartition:
        worker_id = f"{for_part}-{os.getpid()}-{secrets.token_hex(4)}"
        return _ArchivePartition(
            ArchiveWriter(
                self.root,
                worker_id=worker_id,
                max_rows_per_file=self.max_rows_per_file,
                max_file_age_s=self.max_file_age_s,
            )
        )
