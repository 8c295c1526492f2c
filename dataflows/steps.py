"""Thin Bytewax adapters over ``operators/``: keyed logics and the Redis sink.

Each logic holds one pure state object (``UserState``/``ItemState``/a popularity score)
and only translates between Bytewax's calls (``on_batch``, ``on_notify``, ``snapshot``) and
the state's methods. Reading the wall clock (idle eviction) and Redis (restoring a parked
user, the item replica) happens here, never in ``operators/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
import redis
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.item_replica import ItemReplica
from dataflows.live_quality import LiveQuality
from dataflows.monitor import start_worker_monitor
from freshrec import metrics
from freshrec.events import INTERACTION_TYPES, Event
from operators import popularity
from operators.enrich import EventContext
from operators.feedback import FeedbackWindows, WindowCounts, model_of
from operators.isgd import IsgdParams
from operators.item_state import ItemConfig, ItemSnapshot, ItemState
from operators.page_hinkley import PageHinkley
from operators.popularity_shift import PopularityShift, PopularityShiftSnapshot
from operators.recalibration import (
    GlobalRecalibration,
    GlobalRecalibrationConfig,
    GlobalRecalibrationSnapshot,
)
from operators.user_state import CoVisit, ItemUpdate, UserConfig, UserSnapshot, UserState
from state.records import NeighboursRecord, UserRecord, decode_user_state, encode_user_state
from state.store import FeedbackWrite, ItemWrite, RedisStore, SegmentPopularityWrite

log = logging.getLogger(__name__)

#: CTR drift per (model, segment): ADWIN, alarms on drops only; warm-up unused here (the
#: alarm is the output), so the multipliers of the decision are not applied.
CTR_DRIFT = GlobalRecalibrationConfig(detector="adwin", mode="down")

T = TypeVar("T")
BACKOFF_START_S = 0.05
BACKOFF_MAX_S = 2.0


def retry_while_unreachable(call: Callable[[], T]) -> T:
    """Run ``call``; while Redis is unreachable, wait with exponential backoff and retry.

    Only connection-level failures are retried: they leave nothing half-done that a repeat
    of the same idempotent call would not mend. Anything else is a bug and propagates.
    """
    backoff = BACKOFF_START_S
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("redis unreachable (%s); retrying in %.2f s", exc, backoff)
            time.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)


@dataclass(frozen=True, slots=True)
class EnrichedEvent:
    """A valid event with its context and segment (device class | time of day | country)."""

    event: Event
    context: EventContext
    segment: str
    arrival_s: float | None = None
    """When the event reached the broker (for the freshness metric)."""


@dataclass(frozen=True, slots=True)
class UserOutput:
    """A user's fresh record, bound for Redis."""

    user_id: str
    record: UserRecord
    arrival_s: float | None = None
    """Latest broker arrival among the events this record reflects."""


@dataclass(frozen=True, slots=True)
class ParkedUser:
    """An idle user's full state, evicted from worker memory into Redis."""

    user_id: str
    state: bytes


@dataclass(frozen=True, slots=True)
class SegmentHit:
    """One interaction with an item within a context segment."""

    segment: str
    item_id: str
    weight: float
    ts_s: float


@dataclass(frozen=True, slots=True)
class NeighboursOutput:
    """An item's fresh top co-visited neighbours, bound for Redis."""

    item_id: str
    record: NeighboursRecord


@dataclass(frozen=True, slots=True)
class FeedbackHit:
    """A deduplicated event about a served recommendation."""

    model: str
    segment: str
    event_type: str
    ts_s: float


@dataclass(frozen=True, slots=True)
class Alarm:
    """A drift alarm and the recalibration it caused (shown on the dashboard)."""

    kind: str
    scope: str
    detail: str


@dataclass(frozen=True, slots=True)
class HoldoutSample:
    """A sampled interaction with the user's vector before it: model validation data."""

    key: str
    user_vector: bytes
    item_id: str


UserStepOutput = (
    UserOutput
    | ParkedUser
    | ItemUpdate
    | CoVisit
    | SegmentHit
    | FeedbackHit
    | Alarm
    | HoldoutSample
)
StateWrite = (
    UserOutput
    | ParkedUser
    | ItemWrite
    | NeighboursOutput
    | SegmentPopularityWrite
    | FeedbackWrite
    | Alarm
    | HoldoutSample
)


class UserModelLogic(StatefulBatchLogic[EnrichedEvent, UserStepOutput, UserSnapshot]):
    """Per-user step: dedup, session, window, user half of ISGD; emits what others need.

    Bytewax builds a logic without telling it its key, so a user's state is created (or
    restored from Redis, if they were parked while idle) from the first event it receives.
    """

    def __init__(
        self,
        state: UserState | None,
        params: IsgdParams,
        config: UserConfig,
        replica: ItemReplica,
        store: RedisStore,
        idle_ttl_s: float,
        quality: LiveQuality | None = None,
    ) -> None:
        self.quality = quality
        self.state = state
        self.params = params
        self.config = config
        self.replica = replica
        self.store = store
        self.idle_ttl_s = idle_ttl_s
        self.last_active = time.time()

    def _state_for(self, user_id: str) -> UserState:
        if self.state is None:
            parked = retry_while_unreachable(lambda: self.store.parked_user_state(user_id))
            if parked is None:
                self.state = UserState(user_id, self.params, self.config)
            else:
                snap = decode_user_state(parked)
                self.state = UserState.restore(snap, self.params, self.config)
        return self.state

    def on_batch(self, values: list[EnrichedEvent]) -> tuple[Iterable[UserStepOutput], bool]:
        self.last_active = time.time()
        state = self._state_for(values[0].event.user_id)
        retry_while_unreachable(self.replica.maybe_refresh)
        out: list[UserStepOutput] = []
        applied = 0
        duplicates_before = state.duplicates
        last_ts = state.window.last_ts_s
        arrival: float | None = None
        for enriched in values:
            event = enriched.event
            ts_s = event.ts_s
            if state.is_duplicate(event.event_id, ts_s):
                continue
            applied += 1
            if enriched.arrival_s is not None:
                arrival = max(arrival or 0.0, enriched.arrival_s)
            last_ts = ts_s
            state.segment = enriched.segment
            if event.recommendation_id is not None:
                model = model_of(event.recommendation_id)
                out.append(FeedbackHit(model, enriched.segment, event.type, ts_s))
            if event.type in INTERACTION_TYPES:
                item_vec = self.replica.get(event.item_id)
                boost = 1.0
                if self.quality is not None:
                    if self.quality.sampled(event.event_id):
                        out.append(
                            HoldoutSample(event.event_id, state.vector.tobytes(), event.item_id)
                        )
                        warmup = self.quality.evaluate(
                            event.event_id, state.vector, event.item_id, self.replica
                        )
                        if warmup is not None:
                            detail = (
                                f"HR@10 {warmup.mean_before:.3f} -> {warmup.mean_after:.3f}; "
                                f"learning rate x{warmup.learning_rate_multiplier:g} for "
                                f"{warmup.warmup_events} events"
                            )
                            out.append(Alarm("global drift", "global", detail))
                    boost = self.quality.learning_rate_multiplier
                update, covisits = state.learn(
                    event.item_id, item_vec, event.type, ts_s, event.category_id, boost
                )
                decision = state.check_drift(self.replica.vectors.get)
                if decision is not None:
                    metrics.DRIFT_ALARMS.labels("user").inc()
                    metrics.RECALIBRATIONS.labels("user").inc()
                    detail = (
                        f"user {state.user_id}: refit from {decision.refit_items} recent items, "
                        f"learning rate x{decision.learning_rate_multiplier:g}"
                    )
                    out.append(Alarm("user drift", "user", detail))
                out.append(update)
                out.extend(covisits)
                out.append(SegmentHit(enriched.segment, event.item_id, update.weight, ts_s))
            else:
                state.observe(event.item_id, event.type, ts_s)
        if applied or state.duplicates != duplicates_before:
            out.append(UserOutput(state.user_id, user_record(state, last_ts), arrival))
        metrics.EVENTS.labels("applied").inc(applied)
        metrics.EVENTS.labels("duplicate").inc(state.duplicates - duplicates_before)
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return datetime.fromtimestamp(self.last_active + self.idle_ttl_s, UTC)

    def on_notify(self) -> tuple[Iterable[UserStepOutput], bool]:
        if self.state is None or time.time() < self.last_active + self.idle_ttl_s:
            return (), StatefulBatchLogic.RETAIN
        parked = ParkedUser(self.state.user_id, encode_user_state(self.state.snapshot()))
        return [parked], StatefulBatchLogic.DISCARD

    def snapshot(self) -> UserSnapshot:
        assert self.state is not None, "snapshot before any event"
        return self.state.snapshot()


def user_record(state: UserState, event_ts_s: float) -> UserRecord:
    """What serving reads of a user."""
    window = state.window
    session = state.session
    return UserRecord(
        # Every event, applied or dropped as a duplicate, changes the record: both count.
        version=state.version + state.duplicates,
        events=state.version,
        event_ts_s=event_ts_s,
        written_at_s=time.time(),
        vector=state.vector.tobytes(),
        recent=window.recent_items(),
        seen=list(reversed(window.seen)),
        counts=dict(window.counts),
        session_no=session.session_no,
        session_start_ts_s=session.start_ts_s if session.session_no else 0.0,
        session_event_count=session.event_count,
        session_items=list(session.items),
        segment=state.segment,
        duplicates=state.duplicates,
        dedup_ids=len(state.dedup),
        purchased=list(reversed(window.purchased)),
    )


ItemStepInput = ItemUpdate | CoVisit
ItemStepOutput = ItemWrite | NeighboursOutput


class ItemModelLogic(StatefulBatchLogic[ItemStepInput, ItemStepOutput, ItemSnapshot]):
    """Per-item step: item half of ISGD, popularity, trend and co-visited neighbours."""

    def __init__(
        self, state: ItemState | None, params: IsgdParams, config: ItemConfig, top_m: int
    ) -> None:
        self.state = state
        self.params = params
        self.config = config
        self.top_m = top_m

    def on_batch(self, values: list[ItemStepInput]) -> tuple[Iterable[ItemStepOutput], bool]:
        state = self.state
        if state is None:
            state = self.state = ItemState(values[0].item_id, self.params, self.config)
        learned = covisited = False
        for msg in values:
            if isinstance(msg, ItemUpdate):
                user_vec = np.frombuffer(msg.user_vector, dtype=np.float32)
                state.learn(user_vec, msg.weight, msg.ts_s, msg.category_id)
                learned = True
            else:
                for other_id, weight in zip(msg.other_ids, msg.weights, strict=True):
                    state.covisit(other_id, weight, msg.ts_s)
                covisited = True
        out: list[ItemStepOutput] = []
        if learned:
            out.append(
                ItemWrite(
                    state.item_id,
                    state.version,
                    state.vector.tobytes(),
                    state.popularity_log2,
                    state.trend_log2(),
                    state.category_id,
                )
            )
        if covisited:
            top = state.neighbours.top(self.top_m)
            record = NeighboursRecord(
                state.covisit_version, [i for i, _ in top], [s for _, s in top]
            )
            out.append(NeighboursOutput(state.item_id, record))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> ItemSnapshot:
        assert self.state is not None, "snapshot before any update"
        return self.state.snapshot()


class SegmentPopularityLogic(
    StatefulBatchLogic[SegmentHit, SegmentPopularityWrite, tuple[str, str, float]]
):
    """Per (segment, item) step: the item's decayed popularity within one context segment."""

    def __init__(self, snap: tuple[str, str, float] | None, half_life_s: float) -> None:
        self.snap = snap
        self.half_life_s = half_life_s

    def on_batch(self, values: list[SegmentHit]) -> tuple[Iterable[SegmentPopularityWrite], bool]:
        segment, item_id = values[0].segment, values[0].item_id
        score = self.snap[2] if self.snap is not None else popularity.NO_POPULARITY
        for hit in values:
            score = popularity.add_event(score, hit.weight, hit.ts_s, self.half_life_s)
        self.snap = (segment, item_id, score)
        return [SegmentPopularityWrite(segment, item_id, score)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> tuple[str, str, float]:
        assert self.snap is not None, "snapshot before any hit"
        return self.snap


FeedbackSnapshot = tuple[str, str, tuple[WindowCounts, ...], GlobalRecalibrationSnapshot | None]


class FeedbackLogic(StatefulBatchLogic[FeedbackHit, FeedbackWrite | Alarm, FeedbackSnapshot]):
    """Per (model, segment) step: windowed feedback counts and click-through drift.

    CTR drift: ADWIN on the click/impression stream, whose mean CTR / (1 + CTR) is
    monotone in the CTR, so a drop in it is a drop in CTR.
    """

    def __init__(self, snap: FeedbackSnapshot | None, window_s: float, keep: int) -> None:
        self.model, self.segment = ("", "") if snap is None else snap[:2]
        windows = () if snap is None else snap[2]
        self.windows = FeedbackWindows.restore(windows, window_s, keep)
        self.ctr_drift = (
            GlobalRecalibration(CTR_DRIFT)
            if snap is None or snap[3] is None
            else GlobalRecalibration.restore(snap[3], CTR_DRIFT)
        )

    def on_batch(self, values: list[FeedbackHit]) -> tuple[Iterable[FeedbackWrite | Alarm], bool]:
        self.model, self.segment = values[0].model, values[0].segment
        touched: dict[float, WindowCounts] = {}
        out: list[FeedbackWrite | Alarm] = []
        for hit in values:
            counts = self.windows.add(hit.event_type, hit.ts_s)
            if counts is not None:
                touched[counts.start_s] = counts
            if hit.event_type in ("rec_impression", "rec_click"):
                warmup = self.ctr_drift.update(1.0 if hit.event_type == "rec_click" else 0.0)
                if warmup is not None:
                    metrics.DRIFT_ALARMS.labels("global").inc()
                    detail = (
                        f"CTR of {self.model} in {self.segment} dropped: click share "
                        f"{warmup.mean_before:.3f} -> {warmup.mean_after:.3f}"
                    )
                    out.append(Alarm("ctr drift", "global", detail))
        out += [FeedbackWrite(self.model, self.segment, w) for w in touched.values()]
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> FeedbackSnapshot:
        return (self.model, self.segment, self.windows.snapshot(), self.ctr_drift.snapshot())


class PopularityShiftLogic(StatefulBatchLogic[str, Alarm, PopularityShiftSnapshot]):
    """The single global step watching the item-popularity distribution (sampled events)."""

    def __init__(self, snap: PopularityShiftSnapshot | None, window: int) -> None:
        self.shift = PopularityShift(window)
        if snap is not None:
            self.shift.current.update(dict(snap.current))
            self.shift.previous.update(dict(snap.previous))
            self.shift.detector = PageHinkley.from_state(snap.detector)
            self.shift.last_divergence = snap.last_divergence

    def on_batch(self, values: list[str]) -> tuple[Iterable[Alarm], bool]:
        out = []
        for item_id in values:
            divergence = self.shift.add(item_id)
            if divergence is not None:
                metrics.DRIFT_ALARMS.labels("global").inc()
                detail = f"item popularity shifted: JS divergence {divergence:.3f} between windows"
                out.append(Alarm("popularity drift", "global", detail))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> PopularityShiftSnapshot:
        return self.shift.snapshot()


def build_user_logic(
    resume: UserSnapshot | None,
    params: IsgdParams,
    config: UserConfig,
    replica: ItemReplica,
    store: RedisStore,
    idle_ttl_s: float,
    quality: LiveQuality | None = None,
) -> UserModelLogic:
    """New or restored logic for one user."""
    state = None if resume is None else UserState.restore(resume, params, config)
    return UserModelLogic(state, params, config, replica, store, idle_ttl_s, quality)


def build_item_logic(
    resume: ItemSnapshot | None, params: IsgdParams, config: ItemConfig, top_m: int
) -> ItemModelLogic:
    """New or restored logic for one item."""
    state = None if resume is None else ItemState.restore(resume, params, config)
    return ItemModelLogic(state, params, config, top_m)


class _RedisPartition(StatelessSinkPartition[StateWrite]):
    def __init__(self, store: RedisStore, parked_ttl_s: int, feedback_keep: int) -> None:
        self.store = store
        self.parked_ttl_s = parked_ttl_s
        self.feedback_keep = feedback_keep

    def write_batch(self, items: list[StateWrite]) -> None:
        # Keep only the newest record per key within the batch: fewer bytes to Redis.
        users: dict[str, UserRecord] = {}
        arrivals: list[float] = []
        parked: dict[str, bytes] = {}
        item_writes: dict[str, ItemWrite] = {}
        neighbours: dict[str, NeighboursRecord] = {}
        segments: dict[tuple[str, str], SegmentPopularityWrite] = {}
        feedback: dict[tuple[str, str, float], FeedbackWrite] = {}
        alarms: list[Alarm] = []
        holdout: list[tuple[str, bytes, str]] = []
        for item in items:
            if isinstance(item, UserOutput):
                users[item.user_id] = item.record
                if item.arrival_s is not None:
                    arrivals.append(item.arrival_s)
            elif isinstance(item, ItemWrite):
                item_writes[item.item_id] = item
            elif isinstance(item, NeighboursOutput):
                neighbours[item.item_id] = item.record
            elif isinstance(item, SegmentPopularityWrite):
                segments[(item.segment, item.item_id)] = item
            elif isinstance(item, Alarm):
                alarms.append(item)
            elif isinstance(item, HoldoutSample):
                holdout.append((item.key, item.user_vector, item.item_id))
            elif isinstance(item, FeedbackWrite):
                feedback[(item.model, item.segment, item.window.start_s)] = item
            else:
                parked[item.user_id] = item.state
        # Items first: a user record never points at item factors serving cannot see yet.
        # Each write is idempotent, so a retry after a Redis outage repeats it safely; while
        # Redis is away the flow waits here (backpressure) instead of crashing.
        retry_while_unreachable(lambda: self.store.write_items(list(item_writes.values())))
        retry_while_unreachable(lambda: self.store.write_neighbours(list(neighbours.items())))
        retry_while_unreachable(
            lambda: self.store.write_segment_popularity(list(segments.values()))
        )
        retry_while_unreachable(
            lambda: self.store.write_feedback(list(feedback.values()), self.feedback_keep)
        )
        retry_while_unreachable(lambda: self.store.write_users(list(users.items())))
        written = time.time()
        for arrival_s in arrivals:
            freshness = max(0.0, written - arrival_s)
            metrics.FRESHNESS.observe(freshness)
            metrics.RECENT_FRESHNESS.add(freshness, written)
        retry_while_unreachable(
            lambda: self.store.park_user_states(list(parked.items()), self.parked_ttl_s)
        )
        retry_while_unreachable(lambda: self.store.append_holdout(holdout))
        for alarm in alarms:
            fields = {"kind": alarm.kind, "scope": alarm.scope, "detail": alarm.detail}
            retry_while_unreachable(lambda f=fields: self.store.append_alarm(f))

    def close(self) -> None:
        self.store.client.close()


class RedisSink(DynamicSink[StateWrite]):
    """Writes every kind of state output to Redis (versioned, idempotent)."""

    def __init__(
        self, redis_url: str, prefix: str, factors: int, parked_ttl_s: int, feedback_keep: int
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.factors = factors
        self.parked_ttl_s = parked_ttl_s
        self.feedback_keep = feedback_keep

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        store = RedisStore.from_url(self.redis_url, self.prefix, self.factors)
        start_worker_monitor(RedisStore.from_url(self.redis_url, self.prefix, self.factors))
        return _RedisPartition(store, self.parked_ttl_s, self.feedback_keep)
