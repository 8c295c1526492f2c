"""An item's learned state: factor vector, update count, popularity, trend and neighbours.

Owned by the item-keyed step of the dataflow (one owner per item), so every update to an
item is applied exactly once and in one order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tests.oracles import popularity
from tests.oracles.isgd import IsgdParams, Vector, initial_vector, item_step
from tests.oracles.item_neighbours import ItemNeighbours, NeighboursSnapshot


@dataclass(frozen=True, slots=True)
class ItemConfig:
    """Half-lives and bounds of item state (from the settings)."""

    half_life_s: float = 86_400.0
    trend_half_life_s: float = 3_600.0
    trend_min_events: float = 3.0
    """Short-term (decayed) event weight an item needs before it can be trending."""
    covisit_half_life_s: float = 7 * 86_400.0
    neighbour_capacity: int = 100


@dataclass(frozen=True, slots=True)
class ItemSnapshot:
    """Immutable copy of an :class:`ItemState`."""

    item_id: str
    vector: bytes
    version: int
    popularity_log2: float
    short_popularity_log2: float
    last_ts_s: float
    neighbours: NeighboursSnapshot
    covisit_version: int
    category_id: str | None = None


class ItemState:
    """Vector, update counts, decayed popularities and co-visited neighbours of one item."""

    def __init__(self, item_id: str, params: IsgdParams, config: ItemConfig) -> None:
        self.item_id = item_id
        self.params = params
        self.config = config
        self.vector: Vector = initial_vector(item_id, "item", params)
        self.version = 0
        self.popularity_log2 = popularity.NO_POPULARITY
        self.short_popularity_log2 = popularity.NO_POPULARITY
        self.last_ts_s = float("-inf")
        self.neighbours = ItemNeighbours(config.covisit_half_life_s, config.neighbour_capacity)
        self.covisit_version = 0
        self.category_id: str | None = None

    def learn(
        self, user_vector: Vector, weight: float, ts_s: float, category_id: str | None = None
    ) -> None:
        """Apply one positive interaction of a user (vector before their update)."""
        if category_id is not None:
            self.category_id = category_id
        item_step(self.vector, user_vector, weight, self.params)
        cfg = self.config
        self.popularity_log2 = popularity.add_event(
            self.popularity_log2, weight, ts_s, cfg.half_life_s
        )
        self.short_popularity_log2 = popularity.add_event(
            self.short_popularity_log2, weight, ts_s, cfg.trend_half_life_s
        )
        self.last_ts_s = max(self.last_ts_s, ts_s)
        self.version += 1

    def covisit(self, other_id: str, weight: float, ts_s: float) -> None:
        """Count one co-visit with another item."""
        self.neighbours.add(other_id, weight, ts_s)
        self.covisit_version += 1

    def trend_log2(self) -> float | None:
        """log2 of short-term over long-term event rate at the last event; None if too quiet.

        > 0 means the item is drawing more attention lately than over the long half-life.
        """
        cfg = self.config
        now = self.last_ts_s
        short = popularity.decayed_value(self.short_popularity_log2, now, cfg.trend_half_life_s)
        if short < cfg.trend_min_events:
            return None
        long = popularity.decayed_value(self.popularity_log2, now, cfg.half_life_s)
        # Rates: decayed sum divided by the mean lifetime of its kernel (h / ln 2).
        return math.log2(short / cfg.trend_half_life_s) - math.log2(long / cfg.half_life_s)

    def snapshot(self) -> ItemSnapshot:
        """Immutable copy of the state."""
        return ItemSnapshot(
            self.item_id,
            self.vector.tobytes(),
            self.version,
            self.popularity_log2,
            self.short_popularity_log2,
            self.last_ts_s,
            self.neighbours.snapshot(),
            self.covisit_version,
            self.category_id,
        )

    @classmethod
    def restore(cls, snap: ItemSnapshot, params: IsgdParams, config: ItemConfig) -> ItemState:
        """Rebuild the state from a snapshot."""
        state = cls(snap.item_id, params, config)
        state.vector = np.frombuffer(snap.vector, dtype=np.float32).copy()
        state.version = snap.version
        state.popularity_log2 = snap.popularity_log2
        state.short_popularity_log2 = snap.short_popularity_log2
        state.last_ts_s = snap.last_ts_s
        state.neighbours = ItemNeighbours.restore(
            snap.neighbours, config.covisit_half_life_s, config.neighbour_capacity
        )
        state.covisit_version = snap.covisit_version
        state.category_id = snap.category_id
        return state
