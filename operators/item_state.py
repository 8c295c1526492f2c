"""An item's learned state: its factor vector, update count and decayed popularity.

Owned by the item-keyed step of the dataflow (one owner per item), so every update to an
item is applied exactly once and in one order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from operators import popularity
from operators.isgd import IsgdParams, Vector, initial_vector, item_step


@dataclass(frozen=True, slots=True)
class ItemSnapshot:
    """Immutable copy of an :class:`ItemState`."""

    item_id: str
    vector: bytes
    version: int
    popularity_log2: float


class ItemState:
    """Vector, number of applied updates and log2 forward-decayed popularity of one item."""

    def __init__(self, item_id: str, params: IsgdParams, half_life_s: float) -> None:
        self.item_id = item_id
        self.params = params
        self.half_life_s = half_life_s
        self.vector: Vector = initial_vector(item_id, "item", params)
        self.version = 0
        self.popularity_log2 = popularity.NO_POPULARITY

    def learn(self, user_vector: Vector, weight: float, ts_s: float) -> None:
        """Apply one positive interaction of a user (vector before their update)."""
        item_step(self.vector, user_vector, weight, self.params)
        self.popularity_log2 = popularity.add_event(
            self.popularity_log2, weight, ts_s, self.half_life_s
        )
        self.version += 1

    def snapshot(self) -> ItemSnapshot:
        """Immutable copy of the state."""
        return ItemSnapshot(self.item_id, self.vector.tobytes(), self.version, self.popularity_log2)

    @classmethod
    def restore(cls, snap: ItemSnapshot, params: IsgdParams, half_life_s: float) -> ItemState:
        """Rebuild the state from a snapshot."""
        state = cls(snap.item_id, params, half_life_s)
        state.vector = np.frombuffer(snap.vector, dtype=np.float32).copy()
        state.version = snap.version
        state.popularity_log2 = snap.popularity_log2
        return state
