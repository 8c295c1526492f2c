"""The Parquet event archive: hourly partitions, rolling files, deduplicating reader."""

from __future__ import annotations

import doctest
import math
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import polars as pl
import pytest

import freshrec.archive
from freshrec.archive import (
    ARCHIVE_SCHEMA,
    ArchiveWriter,
    PurgeStats,
    archive_files,
    purge_erased,
    read_archive,
)
from freshrec.events import Context, Event
from freshrec.replay import iter_dataset_events
from operators import user_pseudonym

T0_S = 1_700_000_000.0


class FakeClock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self, now_s: float = T0_S) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return list(iter_dataset_events("taobao", limit=3000))


def hour_of(event: Event) -> tuple[str, str]:
    ts = event.ts.astimezone(UTC)
    return f"date={ts:%Y-%m-%d}", f"hour={ts:%H}"


def with_context(event: Event, i: int) -> Event:
    """A real event with a context, so the context columns carry values too."""
    context = Context(
        device=("mobile", "desktop")[i % 2],
        country="CN",
        region=f"region-{i % 7}",
        city=None if i % 3 else "Hangzhou",
        page=f"/item/{event.item_id}",
        referrer=None,
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
    )
    return msgspec.structs.replace(event, context=context)


def enrichment_of(i: int) -> dict[str, object] | None:
    if i % 5 == 0:
        return None
    return {
        "device_class": "mobile",
        "tod_bucket": "evening",
        "weekday": i % 7,
        "local_hour": i % 24,
        "segment": f"mobile|evening|CN-{i % 3}",
    }


def expected_row(event: Event, enrichment: Mapping[str, object] | None) -> dict[str, object]:
    ctx = event.context or Context()
    extra = enrichment or {}
    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "item_id": event.item_id,
        "type": event.type,
        "ts": event.ts.astimezone(UTC),
        "session_id": event.session_id,
        "category_id": event.category_id,
        "recommendation_id": event.recommendation_id,
        **{name: getattr(ctx, name) for name in freshrec.archive.CONTEXT_COLUMNS},
        **{name: extra.get(name) for name in freshrec.archive.ENRICHMENT_TYPES},
    }


def write_all(
    root: Path,
    events: list[Event],
    clock: FakeClock,
    *,
    worker_id: str = "w0-test",
    enrichment: Mapping[str, object] | None = None,
    max_rows_per_file: int = 100_000,
) -> list[Path]:
    writer = ArchiveWriter(
        root, worker_id=worker_id, max_rows_per_file=max_rows_per_file, clock=clock
    )
    written = [path for event in events if (path := writer.add(event, enrichment))]
    return written + writer.flush()


def test_files_are_partitioned_by_the_events_utc_date_and_hour(
    tmp_path: Path, events: list[Event]
) -> None:
    paths = write_all(tmp_path, events, FakeClock())

    assert {(p.parent.parent.name, p.parent.name) for p in paths} == {hour_of(e) for e in events}
    for path in paths:
        frame = pl.read_parquet(path)
        hours = {f"date={ts:%Y-%m-%d}/hour={ts:%H}" for ts in frame["ts"]}
        assert hours == {f"{path.parent.parent.name}/{path.parent.name}"}
    assert sorted(paths) == archive_files(tmp_path)
    assert all(p.name.startswith("part-w0-test-") for p in paths)


def test_partition_is_utc_whatever_the_events_offset(tmp_path: Path, events: list[Event]) -> None:
    china = timezone(timedelta(hours=8))
    local = [msgspec.structs.replace(e, ts=e.ts.astimezone(china)) for e in events[:200]]
    paths = write_all(tmp_path, local, FakeClock())

    assert {(p.parent.parent.name, p.parent.name) for p in paths} == {hour_of(e) for e in local}
    got = read_archive(tmp_path, columns=["event_id", "ts"])
    expected = sorted((e.ts, e.event_id) for e in events[:200])
    assert got.rows() == [(event_id, ts) for ts, event_id in expected]
    assert got.schema["ts"] == pl.Datetime("us", "UTC")


def test_reader_returns_exactly_the_events_written(tmp_path: Path, events: list[Event]) -> None:
    clock = FakeClock()
    writer = ArchiveWriter(tmp_path, worker_id="w0", clock=clock)
    rows: list[dict[str, object]] = []
    for i, event in enumerate(events):
        clock.now_s = T0_S + i / 1000
        event = with_context(event, i) if i % 2 else event
        writer.add(event, enrichment_of(i))
        rows.append(expected_row(event, enrichment_of(i)))
    writer.flush()

    got = read_archive(tmp_path)
    assert got.schema == ARCHIVE_SCHEMA
    expected = sorted(rows, key=lambda row: (row["ts"], row["event_id"]))
    assert got.drop("ingested_at").to_dicts() == expected
    ingested = dict(zip(got["event_id"], got["ingested_at"], strict=True))
    first = datetime.fromtimestamp(T0_S, UTC)
    assert ingested[events[0].event_id] == first
    assert ingested[events[-1].event_id] == first + timedelta(milliseconds=len(events) - 1)


def test_rolls_a_new_file_when_a_buffer_reaches_max_rows(
    tmp_path: Path, events: list[Event]
) -> None:
    writer = ArchiveWriter(tmp_path, worker_id="w0", max_rows_per_file=100, clock=FakeClock())
    rolled = [path for event in events if (path := writer.add(event))]
    assert rolled, "some hour holds more than 100 events"
    assert all(pl.read_parquet(p).height == 100 for p in rolled)
    assert writer.pending_rows == len(events) - 100 * len(rolled)

    paths = rolled + writer.flush()
    assert writer.pending_rows == 0
    per_hour = Counter(hour_of(e) for e in events)
    files_per_hour = Counter((p.parent.parent.name, p.parent.name) for p in paths)
    assert files_per_hour == {hour: math.ceil(n / 100) for hour, n in per_hour.items()}
    assert sum(pl.read_parquet(p).height for p in paths) == len(events)
    assert read_archive(tmp_path)["event_id"].sort().to_list() == sorted(e.event_id for e in events)


def test_rolls_buffers_older_than_max_file_age(tmp_path: Path, events: list[Event]) -> None:
    clock = FakeClock()
    writer = ArchiveWriter(tmp_path, worker_id="w0", max_file_age_s=60, clock=clock)
    first, second = events[:1500], events[1500:]
    hours_first = {hour_of(e) for e in first}
    hours_second_only = {hour_of(e) for e in second} - hours_first
    for event in first:
        writer.add(event)
    clock.advance(30)
    for event in second:
        writer.add(event)

    clock.advance(29.9)
    assert writer.maybe_roll() == []
    clock.advance(0.1)  # the buffers opened at t0 are 60 s old; the others 30 s
    rolled = writer.maybe_roll()
    assert {(p.parent.parent.name, p.parent.name) for p in rolled} == hours_first
    assert writer.maybe_roll() == []
    clock.advance(30)
    rolled_later = writer.maybe_roll()
    assert {(p.parent.parent.name, p.parent.name) for p in rolled_later} == hours_second_only
    assert writer.pending_rows == 0
    assert read_archive(tmp_path).height == len(events)


def test_duplicates_from_a_replay_come_back_once_the_first_ingested(
    tmp_path: Path, events: list[Event]
) -> None:
    clock = FakeClock()
    write_all(tmp_path, events, clock, worker_id="w0-run1", enrichment={"segment": "first"})
    # A resumed run re-emits its last epoch: another writer, later, writes some events again;
    # the same writer may also see one event twice within a buffer.
    clock.advance(3600)
    replayed = events[-1000:] + events[-10:]
    write_all(tmp_path, replayed, clock, worker_id="w0-run2", enrichment={"segment": "again"})

    assert sum(pl.read_parquet(p).height for p in archive_files(tmp_path)) == 4010
    got = read_archive(tmp_path)
    assert got.height == len(events)
    assert got["event_id"].n_unique() == len(events)
    assert got["segment"].unique().to_list() == ["first"]
    assert got["ingested_at"].unique().to_list() == [datetime.fromtimestamp(T0_S, UTC)]
    assert got.select("ts", "event_id").rows() == sorted((e.ts, e.event_id) for e in events)


def test_keeps_the_copy_ingested_first_whatever_the_file_order(
    tmp_path: Path, events: list[Event]
) -> None:
    clock = FakeClock()
    # "w9…" sorts after "w1…": the file listed first holds the later copy.
    write_all(tmp_path, events[:50], clock, worker_id="w9", enrichment={"segment": "first"})
    clock.advance(-10)
    write_all(tmp_path, events[:50], clock, worker_id="w1", enrichment={"segment": "earlier"})
    assert read_archive(tmp_path)["segment"].unique().to_list() == ["earlier"]


def test_writes_are_atomic_and_leave_no_temporary_files(
    tmp_path: Path, events: list[Event]
) -> None:
    paths = write_all(tmp_path, events, FakeClock(), max_rows_per_file=250)
    assert list(tmp_path.rglob("*.tmp")) == []
    for path in paths:
        assert pl.read_parquet_schema(path) == dict(ARCHIVE_SCHEMA)
    # A writer that died mid-write leaves a temporary file behind: readers do not see it.
    stray = paths[0].with_name(f".{paths[0].name}.deadbeef.tmp")
    stray.write_bytes(b"PAR1 half a file")
    assert read_archive(tmp_path).height == len(events)


def test_an_existing_file_is_never_replaced(tmp_path: Path, events: list[Event]) -> None:
    [path] = write_all(tmp_path, events[:10], FakeClock(), worker_id="same")
    before = path.read_bytes()
    writer = ArchiveWriter(tmp_path, worker_id="same", clock=FakeClock())
    for event in events[:10]:
        writer.add(event)
    with pytest.raises(FileExistsError, match="worker_id must be unique"):
        writer.flush()
    assert path.read_bytes() == before
    assert writer.pending_rows == 10  # kept, not lost


def test_reads_a_half_open_time_range(tmp_path: Path, events: list[Event]) -> None:
    write_all(tmp_path, events, FakeClock())
    start = datetime(2017, 11, 25, 2, 30, tzinfo=UTC)
    end = datetime(2017, 11, 25, 11, 0, 8, tzinfo=timezone(timedelta(hours=8)))  # 03:00:08Z
    got = read_archive(tmp_path, start=start, end=end, columns=["event_id"])
    expected = sorted((e.ts, e.event_id) for e in events if start <= e.ts < end)
    assert got["event_id"].to_list() == [event_id for _, event_id in expected]
    assert 0 < got.height < len(events)

    assert read_archive(tmp_path, start=start).height == sum(e.ts >= start for e in events)
    assert read_archive(tmp_path, end=end).height == sum(e.ts < end for e in events)
    exact = events[100].ts
    assert read_archive(tmp_path, start=exact, end=exact).height == 0


def test_reader_rejects_naive_times_and_unknown_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        read_archive(tmp_path, start=datetime(2017, 11, 25))
    with pytest.raises(ValueError, match="unknown archive columns"):
        read_archive(tmp_path, columns=["event_id", "behaviour"])


def test_an_empty_archive_reads_as_an_empty_frame(tmp_path: Path) -> None:
    assert read_archive(tmp_path / "missing").schema == ARCHIVE_SCHEMA
    got = read_archive(tmp_path, columns=["event_id", "ts"])
    assert got.height == 0
    assert got.schema == pl.Schema({"event_id": pl.String(), "ts": pl.Datetime("us", "UTC")})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"worker_id": "w0/../x"}, "worker_id"),
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": "w0", "max_rows_per_file": 0}, "max_rows_per_file"),
        ({"worker_id": "w0", "max_file_age_s": 0}, "max_file_age_s"),
    ],
)
def test_bad_writer_settings_raise(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ArchiveWriter(tmp_path, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("enrichment", "error"),
    [
        ({"segmnet": "x"}, ValueError),
        ({"weekday": "Monday"}, TypeError),
        ({"weekday": True}, TypeError),
        ({"local_hour": 24}, ValueError),
        ({"segment": 3}, TypeError),
    ],
)
def test_bad_enrichment_is_refused_on_add(
    tmp_path: Path, events: list[Event], enrichment: dict[str, object], error: type[Exception]
) -> None:
    writer = ArchiveWriter(tmp_path, worker_id="w0", clock=FakeClock())
    with pytest.raises(error):
        writer.add(events[0], enrichment)
    assert writer.pending_rows == 0


def test_docstring_example() -> None:
    assert doctest.testmod(freshrec.archive).failed == 0


# --- erasure: erased shoppers stay out of the archive ----------------------------------------


def test_an_erased_user_stays_out_of_the_archive(tmp_path: Path, events: list[Event]) -> None:
    clock = FakeClock()
    half = len(events) // 2
    both = {e.user_id for e in events[:half]} & {e.user_id for e in events[half:]}
    gone = sorted(both)[0]
    writer = ArchiveWriter(tmp_path, worker_id="w0", clock=clock)
    for e in events[:half]:
        writer.add(e)
    written_before = writer.flush()  # some of the user's rows reach files before the erasure
    for e in events[half:]:
        writer.add(e)

    ledger = writer.erase(gone)
    assert ledger.parent.name == "erasures"
    recorded = pl.read_parquet(ledger)
    assert recorded.columns == ["user_pseudonym", "erased_at"], "the ledger holds no ids"
    assert recorded["user_pseudonym"].to_list() == [user_pseudonym(gone)]
    # Later events of the user are refused, by this writer and by a new one (a restart).
    theirs = next(e for e in events if e.user_id == gone)
    assert writer.add(theirs) is None
    writer.flush()
    restarted = ArchiveWriter(tmp_path, worker_id="w1", clock=clock)
    assert restarted.add(theirs) is None and restarted.pending_rows == 0

    others = {e.event_id for e in events if e.user_id != gone}
    archived = read_archive(tmp_path, columns=["event_id", "user_id"])
    assert set(archived["event_id"].to_list()) == others
    # The files written before the erasure still hold the user's rows, until purged.
    raw = pl.read_parquet(written_before)
    assert (raw["user_id"] == gone).any()
    stats = purge_erased(tmp_path)
    assert stats.rows_removed == sum(e.user_id == gone for e in events[:half])
    assert stats.files_rewritten + stats.files_removed >= 1
    every_row = pl.read_parquet(archive_files(tmp_path))
    assert not (every_row["user_id"] == gone).any()
    assert set(every_row["event_id"].to_list()) == others
    assert purge_erased(tmp_path) == PurgeStats(0, 0, 0)


def test_purge_without_erasures_changes_nothing(tmp_path: Path, events: list[Event]) -> None:
    writer = ArchiveWriter(tmp_path, worker_id="w0", clock=FakeClock())
    for e in events[:100]:
        writer.add(e)
    files = writer.flush()
    before = [f.stat().st_mtime_ns for f in files]
    assert purge_erased(tmp_path) == PurgeStats(0, 0, 0)
    assert [f.stat().st_mtime_ns for f in files] == before
