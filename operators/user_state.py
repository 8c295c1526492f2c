"""A user's learned state: their vector, their recent window and an update count."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from operators.isgd import IsgdParams, Vector, initial_vector, user_step
from operators.user_window import UserWindow, UserWindowSnapshot


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """Immutable copy of a :class:`UserState`."""

    user_id: str
    vector: bytes
    version: int
    window: UserWindowSnapshot


@dataclass(frozen=True, slots=True)
class ItemUpdate:
    """What the item's owner needs to apply its half of an ISGD step."""

    item_id: str
    user_vector: bytes
    weight: float
    ts_s: float


class UserState:
    """Everything the dataflow keeps per user."""

    def __init__(self, user_id: str, params: IsgdParams, window: int, seen_max: int) -> None:
        self.user_id = user_id
        self.params = params
        self.vector: Vector = initial_vector(user_id, "user", params)
        self.version = 0
        self.window = UserWindow(window, seen_max)

    def learn(self, item_id: str, item_vector: Vector, event_type: str, ts_s: float) -> ItemUpdate:
        """Apply the user half of an ISGD step; return the item half for the item's owner."""
        weight = self.params.weight_of(event_type)
        before = self.vector.tobytes()
        user_step(self.vector, item_vector, weight, self.params)
        self.window.add(item_id, event_type, ts_s)
        self.version += 1
        return ItemUpdate(item_id, before, weight, ts_s)

    def observe(self, item_id: str, event_type: str, ts_s: float) -> None:
        """Count an event that does not train the model (e.g. an impression)."""
        self.window.counts[event_type] = self.window.counts.get(event_type, 0) + 1
        self.version += 1

    def snapshot(self) -> UserSnapshot:
        """Immutable copy of the state."""
        return UserSnapshot(
            self.user_id, self.vector.tobytes(), self.version, self.window.snapshot()
        )

    @classmethod
    def restore(
        cls, snap: UserSnapshot, params: IsgdParams, window: int, seen_max: int
    ) -> UserState:
        """Rebuild the state from a snapshot."""
        state = cls(snap.user_id, params, window, seen_max)
        state.vector = np.frombuffer(snap.vector, dtype=np.float32).copy()
        state.version = snap.version
        state.window = UserWindow.restore(snap.window, window, seen_max)
        return state
