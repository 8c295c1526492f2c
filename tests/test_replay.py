"""Replay of the real logs as events: valid, stable ids, pacing, and both senders.

The API sender is exercised against a small real HTTP server that answers like the ingest API
(503 + Retry-After, 422 with `accepted`/`rejected`, 413); the Kafka sender against the session's
real Tansu broker.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from freshrec.datasets import load_diginetica, load_movielens, load_taobao, movielens_users
from freshrec.events import Event, decode_event, encode_event, validate_event
from freshrec.replay import (
    MAX_GAP_S,
    ReplayError,
    _Pacer,
    iter_dataset_events,
    iter_events,
    send_to_api,
    send_to_kafka,
)
from freshrec.settings import Settings

AFTER_EVERY_LOG = datetime(2026, 1, 1, tzinfo=UTC)


def assert_valid(events: list[Event]) -> None:
    for event in events:
        payload = encode_event(event)
        assert decode_event(payload, now=AFTER_EVERY_LOG) == event
        checked = validate_event(
            msgspec.json.decode(payload), now=AFTER_EVERY_LOG, max_future_skew_s=0
        )
        assert checked == event, checked


@pytest.mark.parametrize("dataset", ["taobao", "movielens", "diginetica"])
def test_every_event_of_every_dataset_is_valid(dataset: str) -> None:
    events = list(iter_dataset_events(dataset))
    assert_valid(events)
    assert len({e.event_id for e in events}) == len(events)
    assert all(e.event_id.startswith(f"{dataset}-") for e in events)


def test_event_ids_are_stable_across_runs() -> None:
    first = [e.event_id for e in iter_dataset_events("taobao", limit=5_000)]
    second = [e.event_id for e in iter_dataset_events("taobao", limit=5_000)]
    assert first == second
    assert first[:3] == ["taobao-50118", "taobao-59443", "taobao-31526"]


def test_events_carry_the_rows_fields_in_the_frames_order() -> None:
    frame = load_diginetica(limit=2_000)
    events = list(iter_events(frame, id_prefix="d-"))
    assert len(events) == frame.height
    for event, row in zip(events, frame.iter_rows(named=True), strict=True):
        assert event.event_id == f"d-{row['seq']}"
        assert (event.user_id, event.item_id, event.type) == (
            row["user_id"],
            row["item_id"],
            row["behavior"],
        )
        assert (event.session_id, event.category_id) == (row["session_id"], row["category_id"])
        assert event.ts.tzinfo is UTC
        assert event.ts_s == pytest.approx(row["ts"], abs=1e-6)
        assert event.context is None and event.profile is None


def test_taobao_behaviours_become_event_types() -> None:
    types = {e.type for e in iter_events(load_taobao())}
    assert types == {"view", "add_to_cart", "purchase", "favourite"}


def test_movielens_events_carry_the_users_profile() -> None:
    users = {row[0]: row for row in movielens_users().iter_rows()}
    events = list(iter_dataset_events("movielens", limit=3_000))
    for event in events:
        _, age, gender, occupation, zip_code = users[event.user_id]
        assert event.profile is not None
        assert (event.profile.age, event.profile.gender) == (age, gender)
        assert (event.profile.occupation, event.profile.postal_code) == (occupation, zip_code)
    bare = next(iter_events(load_movielens(limit=1)))
    assert bare.profile is None


def test_ends_now_moves_the_log_so_its_last_event_is_now() -> None:
    frame = load_taobao(limit=500)
    original = list(iter_events(frame))
    moved = list(iter_events(frame, event_time="ends_now", now=AFTER_EVERY_LOG))
    assert moved[-1].ts == AFTER_EVERY_LOG
    shift = moved[0].ts - original[0].ts
    assert all(m.ts - o.ts == shift for m, o in zip(moved, original, strict=True))
    assert [m.event_id for m in moved] == [o.event_id for o in original]
    with pytest.raises(ValueError, match="event_time"):
        iter_events(frame, event_time="tomorrow")  # type: ignore[arg-type]


# --- pacing ----------------------------------------------------------------------------------


def event_at(seconds: float) -> Event:
    ts = datetime(2017, 11, 25, tzinfo=UTC) + timedelta(seconds=seconds)
    return Event(event_id=f"e{seconds}", user_id="u", item_id="i", type="view", ts=ts)


def test_pacer_schedules_gaps_divided_by_speed_and_capped() -> None:
    clock = iter([100.0]).__next__
    pacer = _Pacer(10.0, clock=clock)
    due = [pacer.due_at(event_at(s)) for s in (0, 5, 5, 105, 104, 106)]
    # 5 s at 10x = 0.5 s; a tie adds nothing; 100 s would be 10 s but is capped; a step back
    # in time (out-of-order log) adds nothing; then 2 s at 10x = 0.2 s.
    expected = [100.0, 100.5, 100.5, 100.5 + MAX_GAP_S, 100.5 + MAX_GAP_S, 100.7 + MAX_GAP_S]
    assert due == pytest.approx(expected)


@pytest.mark.parametrize("speed", [None, "max"])
def test_unpaced_replays_never_wait(speed: Any) -> None:
    pacer = _Pacer(speed, clock=lambda: 7.0)
    assert {pacer.due_at(event_at(s)) for s in (0, 3_600, 86_400)} == {7.0}


@pytest.mark.parametrize("speed", [0, -2.0, "fast"])
def test_bad_speeds_are_refused(speed: Any) -> None:
    with pytest.raises(ValueError, match="speed"):
        _Pacer(speed)


# --- API sender against a real HTTP server ---------------------------------------------------

Answer = tuple[int, dict[str, str], dict[str, Any]]


class IngestDouble:
    """Records every POSTed batch and answers with the next scripted response."""

    def __init__(self, script: Callable[[list[dict[str, Any]], int], Answer]) -> None:
        self.script = script
        self.batches: list[list[dict[str, Any]]] = []
        self.paths: list[str] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers["content-length"])
                batch = json.loads(self.rfile.read(length))
                double.paths.append(self.path)
                double.batches.append(batch)
                status, headers, body = double.script(batch, len(double.batches))
                payload = json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        return Handler


@pytest.fixture
def serve() -> Iterator[Callable[[IngestDouble], str]]:
    servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(double: IngestDouble) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), double.handler())
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


def accept_all(batch: list[dict[str, Any]], _: int) -> Answer:
    return 202, {}, {"accepted": len(batch), "rejected": []}


def test_send_to_api_posts_every_event_in_order_in_batches(serve: Callable[..., str]) -> None:
    double = IngestDouble(accept_all)
    events = list(iter_dataset_events("taobao", limit=1_234))
    stats = send_to_api(events, serve(double) + "/", batch_size=500, progress=False)
    assert (stats.sent, stats.accepted, stats.rejected) == (1_234, 1_234, 0)
    assert [len(b) for b in double.batches] == [500, 500, 234]
    assert set(double.paths) == {"/v1/events"}
    posted = [msgspec.convert(e, Event) for batch in double.batches for e in batch]
    assert posted == events
    assert stats.events_per_s > 0


def test_send_to_api_retries_the_same_batch_after_503(serve: Callable[..., str]) -> None:
    def busy_twice(batch: list[dict[str, Any]], call: int) -> Answer:
        if call <= 2:
            return 503, {"Retry-After": "0.05"}, {"status_code": 503, "detail": "Retry."}
        return accept_all(batch, call)

    double = IngestDouble(busy_twice)
    events = list(iter_dataset_events("taobao", limit=300))
    stats = send_to_api(events, serve(double), batch_size=300, progress=False)
    assert (stats.sent, stats.accepted, stats.rejected) == (300, 300, 0)
    assert len(double.batches) == 3
    assert double.batches[0] == double.batches[1] == double.batches[2]


def test_send_to_api_gives_up_when_the_api_stays_overloaded(serve: Callable[..., str]) -> None:
    double = IngestDouble(lambda batch, call: (503, {"Retry-After": "0"}, {}))
    events = list(iter_dataset_events("taobao", limit=10))
    with pytest.raises(ReplayError, match="after 3 attempts \\(HTTP 503\\)") as raised:
        send_to_api(events, serve(double), max_attempts=3, progress=False)
    assert raised.value.stats.accepted == 0
    assert len(double.batches) == 3


def test_send_to_api_counts_rejections_and_goes_on(serve: Callable[..., str]) -> None:
    def partly_invalid(batch: list[dict[str, Any]], call: int) -> Answer:
        if call == 1:  # like the ingest API: valid events accepted, invalid ones listed
            rejected = [{"index": 3, "errors": [{"path": "$[3].ts", "message": "future"}]}]
            return 422, {}, {"accepted": len(batch) - 1, "rejected": rejected}
        if call == 2:  # the whole request refused
            return 413, {}, {"status_code": 413, "detail": "Batch too large"}
        return accept_all(batch, call)

    double = IngestDouble(partly_invalid)
    events = list(iter_dataset_events("taobao", limit=250))
    stats = send_to_api(events, serve(double), batch_size=100, progress=False)
    assert (stats.sent, stats.accepted, stats.rejected) == (250, 99 + 0 + 50, 1 + 100)


def test_send_to_api_stops_on_a_server_error(serve: Callable[..., str]) -> None:
    double = IngestDouble(lambda batch, call: (500, {}, {"detail": "Internal server error"}))
    with pytest.raises(ReplayError, match="answered 500"):
        send_to_api(list(iter_dataset_events("taobao", limit=5)), serve(double), progress=False)


def test_send_to_api_paces_by_event_time(serve: Callable[..., str]) -> None:
    double = IngestDouble(accept_all)
    events = [event_at(0), event_at(1), event_at(2), event_at(3)]
    started = time.monotonic()
    stats = send_to_api(events, serve(double), speed=10.0, progress=False)
    elapsed = time.monotonic() - started
    assert stats.accepted == 4
    assert 0.3 <= elapsed < 2.0  # three 1 s gaps at 10x
    # Each due event is posted before the replay sleeps, not held back for a full batch.
    assert [len(b) for b in double.batches] == [1, 1, 1, 1]


# --- Kafka sender against the real broker ---------------------------------------------------


def read_topic(settings: Settings, expected: int, timeout_s: float = 30.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "replay-check",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign(
        [
            TopicPartition(settings.events_topic, partition, OFFSET_BEGINNING)
            for partition in range(settings.events_partitions)
        ]
    )
    messages: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(1_000, timeout=0.5):
                assert message.error() is None, message.error()
                messages.append(message)
    finally:
        consumer.close()
    return messages


@pytest.mark.integration
def test_send_to_kafka_delivers_every_event_keyed_by_user(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    events = list(iter_dataset_events("taobao", limit=3_000))
    stats = send_to_kafka(events, settings, progress=False)
    assert (stats.sent, stats.accepted, stats.rejected) == (3_000, 3_000, 0)

    messages = read_topic(settings, expected=3_000)
    assert len(messages) == 3_000
    received = {m.value(): m.key() for m in messages}
    assert received == {encode_event(e): e.user_id.encode() for e in events}
    # Keyed by user: a user's events share a partition, in replay order.
    by_user: dict[bytes, set[int]] = {}
    for message in messages:
        by_user.setdefault(message.key(), set()).add(message.partition())
    assert all(len(partitions) == 1 for partitions in by_user.values())
    first_user = events[0].user_id.encode()
    in_partition = [m.value() for m in messages if m.key() == first_user]
    assert in_partition == [encode_event(e) for e in events if e.user_id == events[0].user_id]


@pytest.mark.integration
def test_send_to_kafka_raises_when_the_topic_refuses_events(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    events = list(iter_dataset_events("taobao", limit=20))
    # The broker answers "Invalid topic" in every delivery report: that must not pass silently.
    with pytest.raises(ReplayError, match="20 of 20 events not delivered.*Invalid topic") as raised:
        send_to_kafka(events, settings, topic="", progress=False)
    assert raised.value.stats.accepted == 0
