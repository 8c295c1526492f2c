"""Replay a real interaction log (:mod:`freshrec.datasets`) as freshrec events.

:func:`iter_events` turns a normalised frame into :class:`~freshrec.events.Event` objects with
ids derived from the dataset and line number, so a replay run twice yields the same ids and the
dataflow's dedup drops the second copy. Two senders deliver them: straight onto the events topic
(:func:`send_to_kafka`) or through the ingest API (:func:`send_to_api`), optionally paced at a
multiple of real time by the events' own timestamps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast

import confluent_kafka
import msgspec
import polars as pl
from tqdm import tqdm

from freshrec.client import Client, DeliveryError
from freshrec.datasets import canonical_dataset_name, load_dataset, movielens_users
from freshrec.events import Event, EventType, Profile, encode_event
from freshrec.settings import Settings

EventTime = Literal["original", "ends_now"]
Speed = float | Literal["max"] | None

#: A paced replay never waits longer than this between two events, so the week-long quiet
#: stretches of a log (or the out-of-window stragglers) do not stall a demo.
MAX_GAP_S: Final = 1.0
#: Bulk replay trades a few ms of latency for full batches (ingest uses settings' 2 ms).
REPLAY_LINGER_MS: Final = 5
_ROWS_PER_SLICE: Final = 10_000


class ReplayStats(msgspec.Struct, frozen=True, kw_only=True):
    """What a replay did: events handed over, acknowledged, refused, and how fast."""

    sent: int
    accepted: int
    rejected: int
    seconds: float
    events_per_s: float


class ReplayError(RuntimeError):
    """Events could not be delivered; ``stats`` tells how far the replay got."""

    def __init__(self, message: str, stats: ReplayStats) -> None:
        super().__init__(message)
        self.stats = stats


def _stats(sent: int, accepted: int, rejected: int, started: float) -> ReplayStats:
    seconds = time.monotonic() - started
    return ReplayStats(
        sent=sent,
        accepted=accepted,
        rejected=rejected,
        seconds=seconds,
        events_per_s=sent / seconds if seconds > 0 else 0.0,
    )


# --- frame → events ------------------------------------------------------------------------


def movielens_profiles() -> dict[str, Profile]:
    """MovieLens users' demographics (u.user) as event profiles, keyed by user id."""
    users = movielens_users()
    return {
        row["user_id"]: Profile(
            age=row["age"],
            gender=row["gender"],
            occupation=row["occupation"],
            postal_code=row["zip"],
        )
        for row in users.iter_rows(named=True)
    }


def iter_events(
    df: pl.DataFrame,
    *,
    id_prefix: str = "",
    event_time: EventTime = "original",
    profiles: Mapping[str, Profile] | None = None,
    now: datetime | None = None,
) -> Iterator[Event]:
    """Yield one event per row of a normalised frame, in the frame's order.

    ``event_id`` is ``id_prefix + seq`` (e.g. ``taobao-50118``): stable across runs.
    ``event_time="original"`` keeps the logged time; ``"ends_now"`` shifts the whole log so
    its last event happens at ``now`` (default: when called) — gaps and order are kept,
    nothing lies in the future, and serving's wall-clock decay sees the log as recent.
    (Stamping each event with the send time instead would erase the gaps pacing relies on.)
    ``profiles`` attaches a user's profile (e.g. :func:`movielens_profiles`) to their events.
    """
    # Checked here, not inside the generator, so a bad argument fails at the call.
    if event_time not in ("original", "ends_now"):
        raise ValueError(f"event_time must be 'original' or 'ends_now', got {event_time!r}")
    shift_s = 0.0
    if event_time == "ends_now" and df.height:
        anchor = datetime.now(UTC) if now is None else now
        shift_s = anchor.timestamp() - float(cast(float, df["ts"].max()))
    return _generate_events(df, id_prefix, shift_s, profiles)


def _generate_events(
    df: pl.DataFrame, id_prefix: str, shift_s: float, profiles: Mapping[str, Profile] | None
) -> Iterator[Event]:
    # Column lists per slice: far faster than row tuples, without copying a 100M-row log.
    columns = ("seq", "user_id", "item_id", "behavior", "ts", "session_id", "category_id")
    for chunk in df.iter_slices(_ROWS_PER_SLICE):
        for seq, user_id, item_id, behavior, ts, session_id, category_id in zip(
            *(chunk[name].to_list() for name in columns), strict=True
        ):
            yield Event(
                event_id=f"{id_prefix}{seq}",
                user_id=user_id,
                item_id=item_id,
                type=cast(EventType, behavior),
                ts=datetime.fromtimestamp(ts + shift_s, UTC),
                session_id=session_id,
                category_id=category_id,
                profile=None if profiles is None else profiles.get(user_id),
            )


def iter_dataset_events(
    name: str,
    *,
    limit: int | None = None,
    event_time: EventTime = "original",
    now: datetime | None = None,
) -> Iterator[Event]:
    """Events of a dataset by name, ids prefixed ``<dataset>-`` and MovieLens profiles attached."""
    dataset = canonical_dataset_name(name)
    return iter_events(
        load_dataset(dataset, limit=limit),
        id_prefix=f"{dataset}-",
        event_time=event_time,
        profiles=movielens_profiles() if dataset == "movielens" else None,
        now=now,
    )


# --- pacing --------------------------------------------------------------------------------


class _Pacer:
    """Schedule of a replay at ``speed``× real time, by the events' timestamps.

    Deadlines are kept on one schedule from the start (not a sleep per gap), so time spent
    sending is absorbed instead of accumulating as drift.
    """

    def __init__(self, speed: Speed, clock: Callable[[], float] = time.monotonic) -> None:
        # Checked before anything is sent, so a typo fails fast rather than mid-replay.
        if isinstance(speed, str) and speed != "max":
            raise ValueError(f"speed must be a positive number or 'max', got {speed!r}")
        if isinstance(speed, int | float) and not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.factor = None if speed is None or speed == "max" else float(speed)
        self._clock = clock
        self._start = clock()
        self._offset_s = 0.0
        self._previous_ts_s: float | None = None

    def due_at(self, event: Event) -> float:
        """Advance the schedule to this event and return when it is due (clock seconds)."""
        if self.factor is None:
            return self._start
        ts_s = event.ts_s
        if self._previous_ts_s is not None:
            gap_s = max(0.0, ts_s - self._previous_ts_s) / self.factor
            self._offset_s += min(gap_s, MAX_GAP_S)
        self._previous_ts_s = ts_s
        return self._start + self._offset_s


def _progress_bar(total: int | None, progress: bool, what: str) -> tqdm[Any]:
    return tqdm(total=total, disable=not progress, file=sys.stderr, unit="ev", desc=what)


# --- senders -------------------------------------------------------------------------------


def send_to_kafka(
    events: Iterable[Event],
    settings: Settings,
    *,
    speed: Speed = None,
    progress: bool = True,
    total: int | None = None,
    topic: str | None = None,
) -> ReplayStats:
    """Produce events onto the events topic (key = user id), then wait for every ack.

    Idempotent producer with ``acks=all``: librdkafka retries transient failures itself, so a
    delivery report with an error is final — the replay raises :class:`ReplayError` rather
    than report success with events missing.
    """
    pacer = _Pacer(speed)
    target_topic = settings.events_topic if topic is None else topic
    producer = confluent_kafka.Producer(
        {
            **settings.kafka_config,
            "bootstrap.servers": settings.kafka_bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": REPLAY_LINGER_MS,
            "client.id": "freshrec-replay",
        }
    )
    delivered = 0
    failures: list[str] = []

    def on_delivery(error: confluent_kafka.KafkaError | None, _: confluent_kafka.Message) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1
        else:
            failures.append(str(error))

    started = time.monotonic()
    sent = 0
    with _progress_bar(total, progress, "replay → kafka") as bar:
        for event in events:
            wait_s = pacer.due_at(event) - time.monotonic()
            if wait_s > 0:
                producer.poll(wait_s)  # serves delivery reports while waiting
            payload = encode_event(event)
            while True:
                try:
                    producer.produce(
                        target_topic,
                        key=event.user_id.encode(),
                        value=payload,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    # Local queue full: wait for acks to free room instead of dropping.
                    producer.poll(0.05)
            producer.poll(0)
            sent += 1
            if sent % 1000 == 0:
                bar.update(1000)
        bar.update(sent % 1000)
        undelivered = producer.flush()
    # Release the client now: a raised error's traceback would keep it (and its connections
    # and retries) alive for as long as the caller holds the exception.
    del producer
    stats = _stats(sent, delivered, len(failures) + undelivered, started)
    if failures or undelivered:
        raise ReplayError(
            f"{len(failures) + undelivered} of {sent} events not delivered to "
            f"{target_topic!r}: {failures[0] if failures else 'flush ended with messages queued'}",
            stats,
        )
    return stats


def send_to_api(
    events: Iterable[Event],
    base_url: str,
    *,
    batch_size: int = 500,
    speed: Speed = None,
    progress: bool = True,
    total: int | None = None,
    timeout_s: float = 30.0,
    max_attempts: int = 30,
) -> ReplayStats:
    """POST events in JSON batches to ``{base_url}/v1/events`` with :class:`freshrec.client.Client`.

    On 429/502/503/504 or a broken connection the same batch is posted again after
    ``Retry-After`` (default 1 s), up to ``max_attempts`` times, then :class:`ReplayError`.
    On another 4xx the rejected count from the response body is recorded and the replay goes
    on (invalid events are the API's to dead-letter); a 5xx that is no overload (a server
    bug) stops it with :class:`ReplayError`.
    """
    pacer = _Pacer(speed)
    sent = accepted = rejected = 0
    started = time.monotonic()
    batch: list[Event] = []

    with (
        Client(
            base_url, batch_size=batch_size, max_attempts=max_attempts, timeout_s=timeout_s
        ) as client,
        _progress_bar(total, progress, "replay → api") as bar,
    ):

        def post(pending: list[Event]) -> None:
            nonlocal sent, accepted, rejected
            try:
                result = client.send(pending)
            except DeliveryError as exc:
                raise ReplayError(str(exc), _stats(sent, accepted, rejected, started)) from exc
            sent += len(pending)
            accepted += result.accepted
            rejected += len(pending) - result.accepted
            bar.update(len(pending))

        for event in events:
            due_at = pacer.due_at(event)
            if due_at > time.monotonic():
                # Post what is already due before sleeping, so paced events are not held back.
                if batch:
                    post(batch)
                    batch = []
                time.sleep(max(0.0, due_at - time.monotonic()))
            batch.append(event)
            if len(batch) >= batch_size:
                post(batch)
                batch = []
        if batch:
            post(batch)
    return _stats(sent, accepted, rejected, started)
