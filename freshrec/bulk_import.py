"""Bulk import: a shop's history (events) or its catalogue from a CSV or Parquet file.

Events go straight onto the events topic, keyed by user as ingest does, each one judged by
the worker's own decoder (``operators._native.decode_message``: the native fast path, with
:func:`freshrec.events.decode_message` as judge of anything unusual), so a file is held to the
API's rules; an invalid row goes to the dead-letter topic with its reasons, as ingest's do (a
row that reads as a tombstone, ``"type": "erase"``, too: only the API erases users).
Rows are turned into JSON by polars a chunk at a time; Python only validates and produces.
The catalogue goes to Redis through the store, as ``PUT /v1/items`` writes it.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import confluent_kafka
import msgspec
import polars as pl
from tqdm import tqdm

from freshrec.events import Context, bounded_dead_letter
from freshrec.settings import Settings
from operators import _native
from serving.schemas import CatalogueEntry
from state.records import CatalogueItem
from state.store import RedisStore

EVENT_COLUMNS: Final = ("event_id", "user_id", "item_id", "type", "ts")
#: Optional columns: the event's own, then the context's (``device``, ``country``, ...).
OPTIONAL_EVENT_COLUMNS: Final = ("session_id", "category_id", "recommendation_id")
CONTEXT_COLUMNS: Final = tuple(f.name for f in msgspec.structs.fields(Context))
CATALOGUE_COLUMNS: Final = ("item_id", "category_id", "price", "available", "title", "brand")
CHUNK_ROWS: Final = 50_000
QUEUE_MAX_MESSAGES: Final = 4 * CHUNK_ROWS
CATALOGUE_BATCH: Final = 1000
_NUMERIC_TS: Final = r"^\s*-?\d+(\.\d+)?\s*$"
_RFC3339_UTC: Final = "%Y-%m-%dT%H:%M:%S%.fZ"


class BadImportFile(ValueError):
    """The file cannot be imported (missing, unknown format, bad columns)."""


class ImportStats(msgspec.Struct, frozen=True, kw_only=True):
    """What an import did."""

    rows: int
    imported: int
    rejected: int
    seconds: float
    rows_per_s: float
    first_errors: list[str] = []
    """The first few rejections, ``row N: reason``."""


def _scan(path: Path) -> pl.LazyFrame:
    if not path.is_file():
        raise BadImportFile(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.scan_parquet(path)
    if suffix in (".csv", ".tsv"):
        # Every column as text: an id "007" stays "007", not the integer 7.
        return pl.scan_csv(path, infer_schema=False, separator="\t" if suffix == ".tsv" else ",")
    raise BadImportFile(f"{path}: expected a .csv, .tsv or .parquet file")


def _schema(frame: pl.LazyFrame, path: Path) -> pl.Schema:
    try:
        return frame.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:  # not CSV / Parquet inside
        raise BadImportFile(f"{path}: cannot read the file: {exc}") from exc


def _check_columns(
    schema: pl.Schema, required: Sequence[str], optional: Sequence[str], what: str
) -> None:
    missing = [c for c in required if c not in schema]
    unknown = [c for c in schema if c not in required and c not in optional]
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)} (optional: {', '.join(optional)})")
    if problems:
        raise BadImportFile(f"{what}: " + "; ".join(problems))


def _ts_expr(dtype: pl.DataType) -> pl.Expr:
    """``ts`` as RFC 3339 text: numbers are unix seconds, datetimes without zone are UTC."""
    ts = pl.col("ts")
    if dtype.is_numeric():
        micros = (ts.cast(pl.Float64) * 1e6).round().cast(pl.Int64)
        return pl.from_epoch(micros, "us").dt.to_string(_RFC3339_UTC)
    if isinstance(dtype, pl.Datetime):
        utc = ts.dt.convert_time_zone("UTC") if dtype.time_zone else ts
        return utc.dt.to_string(_RFC3339_UTC)
    text = ts.cast(pl.String)
    seconds = text.str.strip_chars().cast(pl.Float64, strict=False)
    as_epoch = pl.from_epoch((seconds * 1e6).round().cast(pl.Int64), "us")
    return (
        pl.when(text.str.contains(_NUMERIC_TS))
        .then(as_epoch.dt.to_string(_RFC3339_UTC))
        .otherwise(text)
    )


def event_payloads(frame: pl.DataFrame) -> pl.DataFrame:
    """Per row: ``key`` (user id) and ``payload`` (the event as JSON), built by polars.

    Values are not judged here: a null or mistyped field is written as it is and the
    decoder rejects it with the same message the API would give.
    """
    text = [pl.col(c).cast(pl.String) for c in EVENT_COLUMNS if c != "ts"]
    fields = [*text, _ts_expr(frame.schema["ts"]).alias("ts")]
    fields += [pl.col(c).cast(pl.String) for c in OPTIONAL_EVENT_COLUMNS if c in frame.schema]
    context = [pl.col(c).cast(pl.String) for c in CONTEXT_COLUMNS if c in frame.schema]
    if context:
        any_set = pl.any_horizontal(
            [pl.col(c).is_not_null() for c in CONTEXT_COLUMNS if c in frame.schema]
        )
        fields.append(pl.when(any_set).then(pl.struct(context)).alias("context"))
    return frame.select(
        pl.col("user_id").cast(pl.String).fill_null("").alias("key"),
        pl.struct(fields).struct.json_encode().alias("payload"),
    )


def import_events(
    path: str | Path,
    settings: Settings,
    *,
    topic: str | None = None,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportStats:
    """Validate every row of ``path`` and produce it to the events topic (or dead letters).

    Waits for every acknowledgement (idempotent producer, ``acks=all``); raises
    :class:`BadImportFile` for a file it cannot read and ``RuntimeError`` if the broker did not
    take every record.
    """
    path = Path(path)
    frame = _scan(path)
    schema = _schema(frame, path)
    _check_columns(schema, EVENT_COLUMNS, OPTIONAL_EVENT_COLUMNS + CONTEXT_COLUMNS, str(path))
    target = settings.events_topic if topic is None else topic
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            # No compression: lz4 cost 10-15% of the import rate on the same broker.
            # Reports only for failures: a callback per delivered record would cost more
            # than producing it.
            "delivery.report.only.error": True,
            "client.id": "freshrec-import",
            "queue.buffering.max.messages": QUEUE_MAX_MESSAGES,
        }
    )
    failures: list[str] = []

    def on_error(error: confluent_kafka.KafkaError | None, _: confluent_kafka.Message) -> None:
        if error is not None:
            failures.append(str(error))

    rows = imported = rejected = 0
    first_errors: list[str] = []
    started = time.monotonic()
    source = str(path).encode()[:1024]
    skew_s = float(settings.max_future_skew_s)
    with (
        tqdm(
            total=_row_count(frame), disable=not progress, file=sys.stderr, unit="ev", desc="import"
        ) as bar,
        _no_cyclic_gc(),
    ):
        try:
            for chunk in _chunks(frame, chunk_rows):
                built = event_payloads(chunk)
                records, reasons = judge(built, skew_s)
                valid = (
                    [r for n, r in enumerate(records) if n not in reasons] if reasons else records
                )
                for n, reason in reasons.items():
                    rejected += 1
                    if len(first_errors) < 5:
                        first_errors.append(f"row {rows + n + 1}: {reason}")
                    value, cut_key, cut = bounded_dead_letter(
                        records[n]["value"], str(records[n]["key"]).encode()
                    )
                    headers: list[tuple[str, str | bytes | None]] = [
                        ("reason", reason.encode()[:4096]),
                        ("source", b"import"),
                        ("source_file", source),
                        ("source_row", str(rows + n + 1).encode()),
                        *cut,
                    ]
                    _produce(producer, settings.dlq_topic, value, cut_key or b"", headers, on_error)
                _produce_batch(producer, target, valid, on_error)
                imported += len(valid)
                rows += chunk.height
                bar.update(chunk.height)
        finally:
            # Also when the file turns out unreadable mid-way: what was queued is delivered
            # (the stats below are not reached; the rows before the bad one are imported).
            undelivered = producer.flush(60)
    seconds = time.monotonic() - started
    if failures or undelivered:
        raise RuntimeError(
            f"{len(failures) + undelivered} of {rows} records not delivered to the broker: "
            f"{failures[0] if failures else 'flush ended with records queued'}"
        )
    return _stats(rows, imported, rejected, seconds, first_errors)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Keep the cyclic collector out of the loop.

    A chunk makes ~100k acyclic containers (records, messages); the collector passes they
    trigger cost more than building them (2.2 µs a record with it, 0.7 µs without).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def judge(built: pl.DataFrame, skew_s: float) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Records of :func:`event_payloads` rows for ``produce_batch``, and the invalid ones' reasons.

    One native call per chunk: the worker's own decoder judges every payload
    (``invalid_reasons``: None, or the dead-letter reason the worker would give).
    """
    payloads = built["payload"].cast(pl.Binary).to_list()
    records: list[dict[str, Any]] = [
        {"value": value, "key": key}
        for value, key in zip(payloads, built["key"].to_list(), strict=True)
    ]
    verdicts = _native.invalid_reasons(payloads, time.time(), skew_s)
    reasons = {n: reason for n, reason in enumerate(verdicts) if reason is not None}
    return records, reasons


def _produce(
    producer: confluent_kafka.Producer,
    topic: str,
    value: bytes,
    key: bytes,
    headers: list[tuple[str, str | bytes | None]],
    on_delivery: Callable[[confluent_kafka.KafkaError | None, confluent_kafka.Message], None],
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:  # local queue full: let acks free room, drop nothing
            producer.poll(0.05)


def _produce_batch(
    producer: confluent_kafka.Producer,
    topic: str,
    records: list[dict[str, Any]],
    on_delivery: Callable[[confluent_kafka.KafkaError | None, confluent_kafka.Message], None],
) -> None:
    """Queue every record, in order, once there is room for all of them in the local queue.

    Waiting for room keeps a user's events in file order; should the queue refuse some
    anyway (they come back marked ``_error``), those are queued again.
    """
    while len(producer) + len(records) > QUEUE_MAX_MESSAGES:
        producer.poll(0.05)
    pending: list[dict[str, Any]] = list(records)
    while pending:
        producer.produce_batch(topic, pending, on_delivery=on_delivery)
        refused = [r for r in pending if "_error" in r]
        if refused:
            for record in refused:
                del record["_error"]
            producer.poll(0.05)
        else:
            producer.poll(0)
        pending = refused


def _row_count(frame: pl.LazyFrame) -> int | None:
    try:
        return int(frame.select(pl.len()).collect().item())
    except pl.exceptions.PolarsError:
        return None


def _chunks(frame: pl.LazyFrame, rows: int) -> Iterator[pl.DataFrame]:
    try:
        yield from frame.collect_batches(chunk_size=rows)
    except pl.exceptions.PolarsError as exc:  # unreadable CSV/Parquet content
        raise BadImportFile(f"cannot read the file: {exc}") from exc


def import_catalogue(path: str | Path, store: RedisStore, *, progress: bool = True) -> ImportStats:
    """Write every valid row of ``path`` to the catalogue, as ``PUT /v1/items`` would.

    Rows are judged by the API's own type (:class:`serving.schemas.CatalogueEntry`); an
    invalid row is skipped and counted, with its reason, in ``first_errors``.
    """
    path = Path(path)
    frame = _scan(path)
    schema = _schema(frame, path)
    _check_columns(schema, ("item_id",), CATALOGUE_COLUMNS[1:], str(path))
    # Ids and titles as text; price and availability as the file has them, converted like
    # the API's query values (strict=False: "9.90" → 9.9, "false"/"0" → False).
    text = ("item_id", "category_id", "title", "brand")
    typed = [pl.col(c).cast(pl.String) if c in text else pl.col(c) for c in schema]
    rows = written = rejected = 0
    first_errors: list[str] = []
    started = time.monotonic()
    with tqdm(
        total=_row_count(frame), disable=not progress, file=sys.stderr, unit="item", desc="import"
    ) as bar:
        for chunk in _chunks(frame, CHUNK_ROWS):
            raw = chunk.with_row_index("_row", offset=rows + 1)
            parsed = raw.select(pl.col("_row"), *typed)
            batch: list[CatalogueItem] = []
            for record in parsed.iter_rows(named=True):
                row = record.pop("_row")
                values = {k: v for k, v in record.items() if v is not None}
                try:
                    entry = msgspec.convert(values, CatalogueEntry, strict=False)
                except msgspec.ValidationError as exc:
                    rejected += 1
                    if len(first_errors) < 5:
                        first_errors.append(f"row {row}: {exc}")
                    continue
                batch.append(CatalogueItem(**msgspec.structs.asdict(entry)))
                if len(batch) == CATALOGUE_BATCH:
                    written += store.put_catalogue(batch)
                    batch = []
            if batch:
                written += store.put_catalogue(batch)
            rows += chunk.height
            bar.update(chunk.height)
    return _stats(rows, written, rejected, time.monotonic() - started, first_errors)


def _stats(
    rows: int, imported: int, rejected: int, seconds: float, first_errors: list[str]
) -> ImportStats:
    return ImportStats(
        rows=rows,
        imported=imported,
        rejected=rejected,
        seconds=seconds,
        rows_per_s=rows / seconds if seconds > 0 else 0.0,
        first_errors=first_errors,
    )
