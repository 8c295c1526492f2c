"""Bytewax output that archives valid, enriched events to Parquet (:mod:`freshrec.archive`).

Items are ``(event, enrichment)`` tuples. Each worker writes its own files under an id unique
to this run (index, pid, random hex), so a resumed run never replaces an earlier file; its
at-least-once replays are dropped by ``read_archive``'s dedup on ``event_id``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from freshrec.archive import ArchiveWriter
from freshrec.events import Event

ArchiveItem = tuple[Event, Mapping[str, object] | None]


class _ArchivePartition(StatelessSinkPartition[ArchiveItem]):
    def __init__(self, writer: ArchiveWriter) -> None:
        self.writer = writer

    def write_batch(self, items: list[ArchiveItem]) -> None:
        for event, enrichment in items:
            self.writer.add(event, enrichment)
        self.writer.maybe_roll()

    def close(self) -> None:
        self.writer.flush()


class ArchiveSink(DynamicSink[ArchiveItem]):
    """One :class:`ArchiveWriter` per worker, writing under ``root``."""

    def __init__(
        self, root: Path, *, max_rows_per_file: int = 100_000, max_file_age_s: float = 60
    ) -> None:
        self.root = root
        self.max_rows_per_file = max_rows_per_file
        self.max_file_age_s = max_file_age_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ArchivePartition:
        worker_id = f"w{worker_index}-{os.getpid()}-{secrets.token_hex(4)}"
        return _ArchivePartition(
            ArchiveWriter(
                self.root,
                worker_id=worker_id,
                max_rows_per_file=self.max_rows_per_file,
                max_file_age_s=self.max_file_age_s,
            )
        )
