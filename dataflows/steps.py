"""Thin Bytewax adapters over ``operators/``: keyed logics and the Redis sinks.

Each logic holds one pure state object (``UserState``/``ItemState``) and only translates
between Bytewax's calls (``on_batch``, ``snapshot``) and the state's methods.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.item_replica import ItemReplica
from freshrec.events import INTERACTION_TYPES, Event
from operators.isgd import IsgdParams
from operators.item_state import ItemSnapshot, ItemState
from operators.user_state import ItemUpdate, UserSnapshot, UserState
from state.records import UserRecord
from state.store import ItemWrite, RedisStore


@dataclass(frozen=True, slots=True)
class UserOutput:
    """A user's fresh record, bound for Redis."""

    user_id: str
    record: UserRecord


class UserModelLogic(StatefulBatchLogic[Event, UserOutput | ItemUpdate, UserSnapshot]):
    """Per-user step: user half of ISGD, recent window; emits item updates and the record.

    Bytewax builds a logic without telling it its key, so a new user's state is created
    from the first event it receives (every event carries its ``user_id``).
    """

    def __init__(
        self,
        state: UserState | None,
        params: IsgdParams,
        window: int,
        seen_max: int,
        replica: ItemReplica,
    ) -> None:
        self.state = state
        self.params = params
        self.window = window
        self.seen_max = seen_max
        self.replica = replica

    def on_batch(self, values: list[Event]) -> tuple[Iterable[UserOutput | ItemUpdate], bool]:
        state = self.state
        if state is None:
            state = self.state = UserState(
                values[0].user_id, self.params, self.window, self.seen_max
            )
        self.replica.maybe_refresh()
        out: list[UserOutput | ItemUpdate] = []
        last_ts = 0.0
        for event in values:
            last_ts = event.ts_s
            if event.type in INTERACTION_TYPES:
                item_vec = self.replica.get(event.item_id)
                out.append(state.learn(event.item_id, item_vec, event.type, last_ts))
            else:
                state.observe(event.item_id, event.type, last_ts)
        out.append(UserOutput(state.user_id, user_record(state, last_ts)))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> UserSnapshot:
        assert self.state is not None, "snapshot before any event"
        return self.state.snapshot()


def user_record(state: UserState, event_ts_s: float) -> UserRecord:
    """What serving reads of a user."""
    window = state.window
    return UserRecord(
        version=state.version,
        event_ts_s=event_ts_s,
        written_at_s=time.time(),
        vector=state.vector.tobytes(),
        recent=window.recent_items(),
        seen=list(reversed(window.seen)),
        counts=dict(window.counts),
    )


class ItemModelLogic(StatefulBatchLogic[ItemUpdate, ItemWrite, ItemSnapshot]):
    """Per-item step: item half of ISGD and decayed popularity; emits the item's new state."""

    def __init__(self, state: ItemState | None, params: IsgdParams, half_life_s: float) -> None:
        self.state = state
        self.params = params
        self.half_life_s = half_life_s

    def on_batch(self, values: list[ItemUpdate]) -> tuple[Iterable[ItemWrite], bool]:
        state = self.state
        if state is None:
            state = self.state = ItemState(values[0].item_id, self.params, self.half_life_s)
        for update in values:
            user_vec = np.frombuffer(update.user_vector, dtype=np.float32)
            state.learn(user_vec, update.weight, update.ts_s)
        write = ItemWrite(
            state.item_id, state.version, state.vector.tobytes(), state.popularity_log2
        )
        return [write], StatefulBatchLogic.RETAIN

    def snapshot(self) -> ItemSnapshot:
        assert self.state is not None, "snapshot before any update"
        return self.state.snapshot()


def build_user_logic(
    resume: UserSnapshot | None,
    params: IsgdParams,
    window: int,
    seen_max: int,
    replica: ItemReplica,
) -> UserModelLogic:
    """New or restored logic for one user."""
    state = None if resume is None else UserState.restore(resume, params, window, seen_max)
    return UserModelLogic(state, params, window, seen_max, replica)


def build_item_logic(
    resume: ItemSnapshot | None, params: IsgdParams, half_life_s: float
) -> ItemModelLogic:
    """New or restored logic for one item."""
    state = None if resume is None else ItemState.restore(resume, params, half_life_s)
    return ItemModelLogic(state, params, half_life_s)


class _RedisPartition(StatelessSinkPartition[UserOutput | ItemWrite]):
    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def write_batch(self, items: list[UserOutput | ItemWrite]) -> None:
        # Keep only the newest record per key within the batch: fewer bytes to Redis.
        users: dict[str, UserRecord] = {}
        item_writes: dict[str, ItemWrite] = {}
        for item in items:
            if isinstance(item, UserOutput):
                users[item.user_id] = item.record
            else:
                item_writes[item.item_id] = item
        if item_writes:
            self.store.write_items(list(item_writes.values()))
        if users:
            self.store.write_users(list(users.items()))

    def close(self) -> None:
        self.store.client.close()


class RedisSink(DynamicSink[UserOutput | ItemWrite]):
    """Writes user records and item states to Redis (versioned, idempotent)."""

    def __init__(self, redis_url: str, prefix: str, factors: int) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.factors = factors

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(RedisStore.from_url(self.redis_url, self.prefix, self.factors))
