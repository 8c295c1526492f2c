"""The event archive: valid, enriched events as Parquet files for evaluation and batch jobs.

The dataflow hands every valid event (with its enrichment) to an :class:`ArchiveWriter`, which
buffers rows per hour of event time and writes immutable files under
``root/date=YYYY-MM-DD/hour=HH/part-<worker_id>-<seq>.parquet``. Output of a resumed Bytewax run
is at-least-once, so the archive may hold an event twice; :func:`read_archive` returns each
``event_id`` once.

Erased shoppers (``DELETE /v1/users/{id}``) stay out of it from then on: the writer drops their
buffered rows, records them in an erasure ledger (``root/erasures/``, by pseudonym, never by
id) and never archives them again; :func:`read_archive` leaves out rows of every user in the
ledger (files written before the erasure, and a resumed run's replay of their older events),
and :func:`purge_erased` rewrites the files without those rows (``freshrec archive purge``).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import polars as pl

from freshrec.events import Event
from operators import user_pseudonym

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_US_PER_S: Final = 1_000_000
_US_PER_HOUR: Final = 3600 * _US_PER_S
_TIMESTAMP: Final = pl.Datetime("us", "UTC")

EVENT_COLUMNS: Final[tuple[str, ...]] = (
    "event_id",
    "user_id",
    "item_id",
    "type",
    "ts",
    "session_id",
    "category_id",
    "recommendation_id",
)
CONTEXT_COLUMNS: Final[tuple[str, ...]] = (
    "device",
    "country",
    "region",
    "city",
    "page",
    "referrer",
    "user_agent",
)
#: Enrichment fields accepted by :meth:`ArchiveWriter.add`, with the Python type of a value.
ENRICHMENT_TYPES: Final[Mapping[str, type]] = {
    "device_class": str,
    "tod_bucket": str,
    "weekday": int,
    "local_hour": int,
    "segment": str,
}
_ENRICHMENT_RANGES: Final[Mapping[str, range]] = {"weekday": range(7), "local_hour": range(24)}
#: Every archive file has exactly these columns and types (all nullable).
ARCHIVE_SCHEMA: Final = pl.Schema(
    {
        "event_id": pl.String(),
        "user_id": pl.String(),
        "item_id": pl.String(),
        "type": pl.String(),
        "ts": _TIMESTAMP,
        "session_id": pl.String(),
        "category_id": pl.String(),
        "recommendation_id": pl.String(),
        "device": pl.String(),
        "country": pl.String(),
        "region": pl.String(),
        "city": pl.String(),
        "page": pl.String(),
        "referrer": pl.String(),
        "user_agent": pl.String(),
        "device_class": pl.String(),
        "tod_bucket": pl.String(),
        "weekday": pl.Int8(),
        "local_hour": pl.Int8(),
        "segment": pl.String(),
        "ingested_at": _TIMESTAMP,
    }
)
#: Types of the hive partition columns taken from the directory names.
PARTITION_SCHEMA: Final = pl.Schema({"date": pl.Date, "hour": pl.Int8})
#: Directory (under the root) of the erasure ledger's files: one row per erased user, columns
#: ``user_pseudonym`` (``operators.user_pseudonym``) and ``erased_at``.
LEDGER_DIR: Final = "erasures"

# A worker id becomes part of a file name: keep it to characters that need no quoting.
_WORKER_ID: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _empty_columns() -> dict[str, list[object]]:
    return {name: [] for name in ARCHIVE_SCHEMA}


@dataclass(slots=True)
class _Buffer:
    """Rows of one event-time hour not yet written, column by column."""

    opened_at_s: float
    columns: dict[str, list[object]] = field(default_factory=_empty_columns)
    rows: int = 0


def partition_dir(root: Path, hour_index: int) -> Path:
    """The directory of the hour ``hour_index`` (hours since the Unix epoch, UTC)."""
    start = _EPOCH + timedelta(hours=hour_index)
    return root / f"date={start:%Y-%m-%d}" / f"hour={start:%H}"


class ArchiveWriter:
    """Buffers archived events per event-time hour and writes them as rolling Parquet files.

    A buffer becomes a file when it holds ``max_rows_per_file`` rows (at once, in :meth:`add`),
    when it is ``max_file_age_s`` old (in :meth:`maybe_roll`) or on :meth:`flush`. Files are
    written to a temporary name in the same directory, synced and renamed, so a reader sees
    whole files or none. ``clock`` (wall-clock seconds) stamps ``ingested_at`` and ages the
    buffers; it is the only source of time. ``worker_id`` must be unique among all writers
    that ever write to ``root`` (across restarts too): file names are ``worker_id`` plus this
    writer's sequence number, and an existing file is never replaced. Not thread-safe.

    >>> import tempfile
    >>> from freshrec.events import Event
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = Path(tmp.name)
    >>> writer = ArchiveWriter(root, worker_id="w0", clock=lambda: 1_700_000_000.0)
    >>> ts = datetime(2017, 11, 25, 3, 30, tzinfo=UTC)
    >>> writer.add(Event(event_id="e1", user_id="u", item_id="i", type="view", ts=ts))
    >>> [str(p.relative_to(root)) for p in writer.flush()]
    ['date=2017-11-25/hour=03/part-w0-000000.parquet']
    >>> read_archive(root, columns=["event_id", "type"]).rows()
    [('e1', 'view')]
    >>> tmp.cleanup()
    """

    def __init__(
        self,
        root: Path,
        *,
        worker_id: str,
        max_rows_per_file: int = 100_000,
        max_file_age_s: float = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _WORKER_ID.match(worker_id):
            raise ValueError(f"worker_id must match {_WORKER_ID.pattern}, got {worker_id!r}")
        if max_rows_per_file < 1:
            raise ValueError(f"max_rows_per_file must be >= 1, got {max_rows_per_file}")
        if not max_file_age_s > 0:
            raise ValueError(f"max_file_age_s must be > 0, got {max_file_age_s}")
        self.root = Path(root)
        self.worker_id = worker_id
        self.max_rows_per_file = max_rows_per_file
        self.max_file_age_s = max_file_age_s
        self._clock = clock
        self._buffers: dict[int, _Buffer] = {}
        self._seq = 0
        self._erased = erased_users(self.root)

    @property
    def pending_rows(self) -> int:
        """Rows added but not yet written."""
        return sum(buffer.rows for buffer in self._buffers.values())

    def add(self, event: Event, enrichment: Mapping[str, object] | None = None) -> Path | None:
        """Buffer one event; returns the file written if this filled its hour's buffer.

        An erased user's event is dropped (None).
        """
        if self._erased and user_pseudonym(event.user_id) in self._erased:
            return None
        extra: Mapping[str, object] = _check_enrichment(enrichment) if enrichment else {}
        now_s = self._clock()
        ts_us = (event.ts - _EPOCH) // _MICROSECOND  # exact, whatever the event's UTC offset
        hour_index = ts_us // _US_PER_HOUR
        buffer = self._buffers.get(hour_index)
        if buffer is None:
            buffer = self._buffers[hour_index] = _Buffer(opened_at_s=now_s)
        ctx = event.context
        columns = buffer.columns
        columns["event_id"].append(event.event_id)
        columns["user_id"].append(event.user_id)
        columns["item_id"].append(event.item_id)
        columns["type"].append(event.type)
        columns["ts"].append(ts_us)
        columns["session_id"].append(event.session_id)
        columns["category_id"].append(event.category_id)
        columns["recommendation_id"].append(event.recommendation_id)
        for name in CONTEXT_COLUMNS:
            columns[name].append(None if ctx is None else getattr(ctx, name))
        for name in ENRICHMENT_TYPES:
            columns[name].append(extra.get(name))
        columns["ingested_at"].append(round(now_s * _US_PER_S))
        buffer.rows += 1
        if buffer.rows >= self.max_rows_per_file:
            return self._write(hour_index)
        return None

    def erase(self, user_id: str) -> Path:
        """Keep a user out of the archive from now on; returns the ledger file written.

        Drops their buffered rows, records them in the erasure ledger and refuses their later
        events.
        """
        pseudonym = user_pseudonym(user_id)
        for hour_index, buffer in list(self._buffers.items()):
            keep = [n for n, u in enumerate(buffer.columns["user_id"]) if u != user_id]
            if len(keep) == buffer.rows:
                continue
            if not keep:
                del self._buffers[hour_index]
                continue
            for name, values in buffer.columns.items():
                buffer.columns[name] = [values[n] for n in keep]
            buffer.rows = len(keep)
        self._erased.add(pseudonym)
        frame = pl.DataFrame(
            {
                "user_pseudonym": pl.Series([pseudonym], dtype=pl.String),
                "erased_at": pl.Series([round(self._clock() * _US_PER_S)]).cast(_TIMESTAMP),
            }
        )
        directory = self.root / LEDGER_DIR
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"erased-{self.worker_id}-{self._seq:06d}.parquet"
        self._seq += 1
        _write_atomically(frame, path)
        return path

    def maybe_roll(self) -> list[Path]:
        """Write the buffers that are full or at least ``max_file_age_s`` old."""
        now_s = self._clock()
        due = [
            hour_index
            for hour_index, buffer in self._buffers.items()
            if buffer.rows >= self.max_rows_per_file
            or now_s - buffer.opened_at_s >= self.max_file_age_s
        ]
        return [self._write(hour_index) for hour_index in sorted(due)]

    def flush(self) -> list[Path]:
        """Write every buffer, whatever its size and age."""
        return [self._write(hour_index) for hour_index in sorted(self._buffers)]

    def _write(self, hour_index: int) -> Path:
        buffer = self._buffers[hour_index]
        frame = pl.DataFrame(
            {
                name: pl.Series(name, values, dtype=pl.Int64).cast(_TIMESTAMP)
                if ARCHIVE_SCHEMA[name] == _TIMESTAMP
                else pl.Series(name, values, dtype=ARCHIVE_SCHEMA[name], strict=True)
                for name, values in buffer.columns.items()
            }
        ).sort("ts", "event_id")  # sorted files make the ts statistics prune row groups
        directory = partition_dir(self.root, hour_index)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"part-{self.worker_id}-{self._seq:06d}.parquet"
        if path.exists():  # only when a worker_id was reused: never lose the other file
            raise FileExistsError(f"archive file {path} exists; worker_id must be unique")
        _write_atomically(frame, path)
        self._seq += 1
        del self._buffers[hour_index]  # only now: a failed write keeps the rows for a retry
        return path


def _check_enrichment(enrichment: Mapping[str, object]) -> Mapping[str, object]:
    # Checked on add, where the caller is, rather than when a whole buffer fails to convert.
    for name, value in enrichment.items():
        expected = ENRICHMENT_TYPES.get(name)
        if expected is None:
            raise ValueError(
                f"unknown enrichment field {name!r}; expected one of {sorted(ENRICHMENT_TYPES)}"
            )
        if value is None:
            continue
        if type(value) is bool or not isinstance(value, expected):
            raise TypeError(
                f"enrichment field {name!r} must be {expected.__name__} or None, "
                f"got {type(value).__name__}"
            )
        allowed = _ENRICHMENT_RANGES.get(name)
        if allowed is not None and value not in allowed:
            raise ValueError(f"enrichment field {name!r} must be in {allowed}, got {value!r}")
    return enrichment


def _write_atomically(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as file:
            frame.write_parquet(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Make the rename itself durable (POSIX; a no-op question elsewhere).
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def archive_files(root: Path) -> list[Path]:
    """The archive's finished files, sorted (temporary files of writes in progress excluded)."""
    return sorted(Path(root).glob("date=*/hour=*/part-*.parquet"))


def erased_users(root: Path) -> set[str]:
    """Pseudonyms of the users in the archive's erasure ledger."""
    files = sorted((Path(root) / LEDGER_DIR).glob("erased-*.parquet"))
    if not files:
        return set()
    ledger = pl.read_parquet(files, columns=["user_pseudonym"])
    return set(ledger["user_pseudonym"].to_list())


def _erased_ids(user_ids: pl.Series, erased: set[str]) -> list[str]:
    """The ids among ``user_ids`` whose pseudonym is in ``erased``."""
    return [u for u in user_ids.unique().to_list() if u is not None and user_pseudonym(u) in erased]


@dataclass(frozen=True, slots=True)
class PurgeStats:
    """What :func:`purge_erased` changed."""

    files_rewritten: int
    files_removed: int
    rows_removed: int


def purge_erased(root: Path) -> PurgeStats:
    """Rewrite the archive's files without the rows of erased users (the ledger's).

    Each file is replaced atomically (a reader sees the old file or the new one); a file left
    empty is removed. Safe to run while the worker writes: it never writes an erased user's
    rows, and files it writes later are new files.
    """
    erased = erased_users(root)
    rewritten = removed = rows = 0
    if not erased:
        return PurgeStats(0, 0, 0)
    for path in archive_files(root):
        frame = pl.read_parquet(path)
        dropped = _erased_ids(frame["user_id"], erased)
        if not dropped:
            continue
        kept = frame.filter(~pl.col("user_id").is_in(dropped))
        rows += frame.height - kept.height
        if kept.height == 0:
            path.unlink()
            removed += 1
        else:
            _write_atomically(kept, path)
            rewritten += 1
    return PurgeStats(rewritten, removed, rows)


def read_archive(
    root: Path,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Archived events with ``start <= ts < end``, each ``event_id`` once, sorted by (ts, id).

    Of an event written more than once (a replay after a resume), the copy ingested first is
    kept. Rows of erased users (the ledger's) are left out. ``start`` and ``end`` must be
    timezone-aware; only the hours they overlap are read. ``columns`` selects from
    :data:`ARCHIVE_SCHEMA` (default: all of them).
    """
    selected = list(ARCHIVE_SCHEMA) if columns is None else list(columns)
    unknown = [name for name in selected if name not in ARCHIVE_SCHEMA]
    if unknown:
        raise ValueError(
            f"unknown archive columns {unknown}; expected some of {list(ARCHIVE_SCHEMA)}"
        )
    first = None if start is None else _utc(start, "start")
    after = None if end is None else _utc(end, "end")
    files = archive_files(root)
    if not files:
        return pl.DataFrame(schema={name: ARCHIVE_SCHEMA[name] for name in selected})
    frame = pl.scan_parquet(
        files,  # listed here, not globbed by polars: a root path may hold glob characters
        glob=False,
        hive_partitioning=True,
        hive_schema=PARTITION_SCHEMA,
        schema=ARCHIVE_SCHEMA,
        missing_columns="insert",  # files from before a column was added read as nulls
    )
    # Conditions on the partition columns let polars skip whole hours' files unopened.
    if first is not None:
        frame = frame.filter(_from_hour(first), pl.col("ts") >= first)
    if after is not None:
        frame = frame.filter(_until_hour(after - _MICROSECOND), pl.col("ts") < after)
    erased = erased_users(root)
    if erased:
        dropped = _erased_ids(frame.select("user_id").unique().collect()["user_id"], erased)
        frame = frame.filter(~pl.col("user_id").is_in(dropped))
    return (
        frame.sort("ingested_at", maintain_order=True)
        .unique(subset="event_id", keep="first", maintain_order=True)
        .sort("ts", "event_id")
        .select(selected)
        .collect()
    )


def _from_hour(moment: datetime) -> pl.Expr:
    day, hour = pl.col("date"), pl.col("hour")
    return (day > moment.date()) | ((day == moment.date()) & (hour >= moment.hour))


def _until_hour(moment: datetime) -> pl.Expr:
    day, hour = pl.col("date"), pl.col("hour")
    return (day < moment.date()) | ((day == moment.date()) & (hour <= moment.hour))


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC)
