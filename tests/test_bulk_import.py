"""``freshrec import``: files to the real broker (events, dead letters) and Redis (catalogue)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from freshrec.bulk_import import BadImportFile, import_catalogue, import_events
from freshrec.cli import main
from freshrec.datasets import load_taobao
from freshrec.events import Event, decode_event
from freshrec.settings import Settings
from state.store import RedisStore

pytestmark = pytest.mark.integration


def read_topic(settings: Settings, topic: str, partitions: int, expected: int) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "import"})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    messages: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while len(messages) < expected and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
        # Nothing beyond what was expected arrives either.
        messages += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
    finally:
        consumer.close()
    return messages


def taobao_rows(limit: int) -> pl.DataFrame:
    return (
        load_taobao()
        .head(limit)
        .select(
            event_id=pl.lit("tb-") + pl.col("seq").cast(pl.String),
            user_id="user_id",
            item_id="item_id",
            type="behavior",
            ts="ts",
            category_id="category_id",
        )
    )


def test_a_real_log_lands_on_the_topic_keyed_by_user_in_file_order(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    rows = taobao_rows(3000)
    path = tmp_path / "events.parquet"
    rows.write_parquet(path)
    stats = import_events(path, settings, progress=False, chunk_rows=700)
    assert (stats.rows, stats.imported, stats.rejected) == (3000, 3000, 0)
    messages = read_topic(settings, settings.events_topic, 4, 3000)
    assert len(messages) == 3000
    events = [decode_event(m.value()) for m in messages]
    assert all(isinstance(e, Event) for e in events)
    assert all(m.key() == e.user_id.encode() for m, e in zip(messages, events, strict=True))
    by_id = {e.event_id: e for e in events}
    for row in rows.iter_rows(named=True):
        event = by_id[row["event_id"]]
        assert (event.user_id, event.item_id, event.type) == (
            row["user_id"],
            row["item_id"],
            row["type"],
        )
        assert event.ts == datetime.fromtimestamp(row["ts"], UTC)
    # Each user's events keep the file's order (one partition per user).
    for user in rows["user_id"].unique().head(20):
        in_file = rows.filter(pl.col("user_id") == user)["event_id"].to_list()
        on_topic = [e.event_id for e in events if e.user_id == user]
        assert on_topic == in_file


def test_invalid_rows_become_dead_letters_with_their_reasons(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,user_id,item_id,type,ts,device,country\n"
        "e1,007,i1,view,2026-11-29T10:00:00+01:00,mobile,DE\n"
        "e2,u2,i2,teleport,2026-11-29T10:00:00+01:00,,\n"
        "e3,u3,i3,view,2026-11-29T10:00:00,,\n"
        "e4,,i4,view,1700000000,,\n"
        f"e5,u5,i5,purchase,{future},,\n"
        "e6,u6,i6,rec_click,1700000000.25,,\n"
        "e7,u7,i7,add_to_cart,1700000000.5,desktop,\n"
        "e8,u8,i8,view,2026-11-29T10:00:00Z,,Germany\n"
        "e9,$vip,i9,view,2026-11-29T10:00:00Z,,\n"  # an id that looks like a reason's path
    )
    stats = import_events(path, settings, progress=False)
    assert (stats.rows, stats.imported, stats.rejected) == (9, 3, 6)
    good = [decode_event(m.value()) for m in read_topic(settings, settings.events_topic, 4, 3)]
    by_id = {e.event_id: e for e in good}
    assert set(by_id) == {"e1", "e7", "e9"} and by_id["e9"].user_id == "$vip"
    assert by_id["e1"].user_id == "007"  # CSV ids stay text
    assert by_id["e1"].context is not None and by_id["e1"].context.country == "DE"
    assert by_id["e7"].ts == datetime.fromtimestamp(1700000000.5, UTC)
    assert by_id["e7"].context is not None and by_id["e7"].context.device == "desktop"
    dead = read_topic(settings, settings.dlq_topic, 1, 6)
    reasons = {
        dict(m.headers())["source_row"].decode(): dict(m.headers())["reason"].decode() for m in dead
    }
    assert set(reasons) == {"2", "3", "4", "5", "6", "8"}
    assert reasons["2"] == "$.type: Invalid enum value 'teleport'"
    assert reasons["3"].startswith("$.ts: ")
    assert reasons["4"].startswith("$.user_id: Expected `str`, got `null`")
    assert "in the future" in reasons["5"]
    assert reasons["6"].startswith("$.recommendation_id: Required for `rec_click`")
    assert reasons["8"].startswith("$.context.country: Expected an ISO 3166-1")
    assert {dict(m.headers())["source"] for m in dead} == {b"import"}
    assert stats.first_errors[0].startswith("row 2: $.type")


def test_zoned_parquet_timestamps_are_converted_and_naive_ones_read_as_utc(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    local = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "event_id": ["z", "n"],
            "user_id": [1, 2],  # non-text ids become their text
            "item_id": [10, 20],
            "type": ["view", "view"],
            "ts": [local, local],
        }
    )
    zoned = frame.with_columns(pl.col("ts").dt.convert_time_zone("Asia/Shanghai"))
    naive = frame.with_columns(pl.col("ts").dt.replace_time_zone(None))
    zoned.write_parquet(tmp_path / "zoned.parquet")
    naive.write_parquet(tmp_path / "naive.parquet")
    import_events(tmp_path / "zoned.parquet", settings, progress=False)
    import_events(tmp_path / "naive.parquet", settings, progress=False)
    events = [decode_event(m.value()) for m in read_topic(settings, settings.events_topic, 4, 4)]
    assert len(events) == 4
    assert {e.ts for e in events} == {local}
    assert {(e.user_id, e.item_id) for e in events} == {("1", "10"), ("2", "20")}


def test_files_that_cannot_be_imported_are_refused_with_a_reason(
    make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings()
    (tmp_path / "a.csv").write_text("event_id,user_id,item_id,ts,colour\ne,u,i,1,red\n")
    with pytest.raises(BadImportFile, match="missing column.s. type; unknown column.s. colour"):
        import_events(tmp_path / "a.csv", settings, progress=False)
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(BadImportFile, match="expected a .csv, .tsv or .parquet"):
        import_events(tmp_path / "a.json", settings, progress=False)
    (tmp_path / "b.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(BadImportFile, match="b.parquet: cannot read the file"):
        import_events(tmp_path / "b.parquet", settings, progress=False)
    assert main(["import", "events", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err


def test_the_catalogue_is_written_as_put_items_does_and_bad_rows_are_skipped(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    path = tmp_path / "catalogue.csv"
    path.write_text(
        "item_id,category_id,price,available,title\n"
        "007,shoes,59.90,true,Trail runner\n"
        "i2,shoes,,false,\n"
        "i3,hats,-1,true,Negative\n"
        "i4,hats,12,maybe,Unsure\n"
    )
    try:
        stats = import_catalogue(path, store, progress=False)
        assert (stats.rows, stats.imported, stats.rejected) == (4, 2, 2)
        first = store.catalogue_item("007")
        assert first is not None
        assert (first.category_id, first.price, first.available, first.title) == (
            "shoes",
            59.9,
            True,
            "Trail runner",
        )
        second = store.catalogue_item("i2")
        assert second is not None and second.available is False and second.price is None
        assert store.catalogue_item("i3") is None and store.catalogue_item("i4") is None
        assert [e.split(":")[0] for e in stats.first_errors] == ["row 3", "row 4"]
        assert store.read_catalogue_changes(0).items[0].item_id in {"007", "i2"}
    finally:
        store.delete_namespace()
