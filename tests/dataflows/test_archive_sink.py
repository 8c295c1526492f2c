"""The archive sink in a running Bytewax flow: TestingSource → enrich → ArchiveSink → Parquet."""

from __future__ import annotations

from pathlib import Path

import bytewax.operators as op
import msgspec
import polars as pl
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from dataflows.archive_sink import ArchiveItem, ArchiveSink
from freshrec.archive import ARCHIVE_SCHEMA, archive_files, read_archive
from freshrec.events import Context, Event
from freshrec.replay import iter_dataset_events
from operators.enrich import enrich, segment_key


@pytest.fixture(scope="module")
def events() -> list[Event]:
    taobao = list(iter_dataset_events("taobao", limit=3000))
    # Taobao logs no context: give some events one so enrichment yields varied values.
    return [
        msgspec.structs.replace(
            e, context=Context(device="mobile", country="CN", region="Zhejiang")
        )
        if i % 3 == 0
        else e
        for i, e in enumerate(taobao)
    ]


def archive_row(event: Event) -> ArchiveItem:
    ctx = enrich(event)
    enrichment = {
        "device_class": ctx.device_class,
        "tod_bucket": ctx.tod_bucket,
        "weekday": ctx.weekday,
        "local_hour": ctx.local_hour,
        "segment": segment_key(ctx),
    }
    return event, enrichment


def run_archive_flow(events: list[Event], root: Path, **sink_options: int) -> None:
    flow = Dataflow("archive_test")
    stream = op.input("events", flow, TestingSource(events, batch_size=250))
    rows = op.map("archive_row", stream, lambda e: (e.user_id, archive_row(e)))
    op.output("archive", rows, ArchiveSink(root, **sink_options))
    run_main(flow)


def test_flow_archives_every_event_in_readable_files(tmp_path: Path, events: list[Event]) -> None:
    run_archive_flow(events, tmp_path, max_rows_per_file=200)

    files = archive_files(tmp_path)
    assert files
    assert list(tmp_path.rglob("*.tmp")) == []
    for path in files:
        assert pl.read_parquet_schema(path) == dict(ARCHIVE_SCHEMA)
        assert 0 < pl.read_parquet(path).height <= 200
        assert path.name.startswith("part-archive")
    got = read_archive(tmp_path)
    expected = sorted((e.ts, e.event_id) for e in events)
    assert got.select("ts", "event_id").rows() == expected
    by_id = {e.event_id: e for e in events}
    for row in got.iter_rows(named=True):
        event, enrichment = archive_row(by_id[row["event_id"]])
        assert (row["user_id"], row["item_id"], row["type"]) == (
            event.user_id,
            event.item_id,
            event.type,
        )
        assert row["device"] == (event.context.device if event.context else None)
        assert enrichment is not None
        assert {name: row[name] for name in enrichment} == enrichment


def test_a_resumed_run_adds_files_and_the_reader_drops_its_replays(
    tmp_path: Path, events: list[Event]
) -> None:
    run_archive_flow(events[:2000], tmp_path)
    first_run = {path: path.read_bytes() for path in archive_files(tmp_path)}
    # At-least-once after a resume: the second run emits the last epoch's events again.
    run_archive_flow(events[1500:], tmp_path)

    files = archive_files(tmp_path)
    assert set(first_run) < set(files)
    assert all(path.read_bytes() == content for path, content in first_run.items())
    assert sum(pl.read_parquet(path).height for path in files) == len(events) + 500
    got = read_archive(tmp_path, columns=["event_id"])
    assert sorted(got["event_id"]) == sorted(e.event_id for e in events)
