"""Decayed item-to-item co-visitation over users' recent histories, bounded in memory.

Two items are co-visited when one user touches both within ``session_gap_s`` and ``history``
events of each other. Each item keeps its strongest neighbours in an
:class:`tests.oracles.item_neighbours.ItemNeighbours` (log2 forward decay, at most ``neighbours``
each); at most ``max_items`` items and ``max_users`` user histories are kept, least recently
touched forgotten first. A user's recommendations are the neighbours of their last items,
weighted by how recent each of those items is.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable

from tests.oracles.item_neighbours import ItemNeighbours
from tests.oracles.popularity import decayed_value


class CoVisitation:
    """Item→item co-visitation with forward decay, top-M neighbours per item.

    >>> cv = CoVisitation(half_life_s=3600.0)
    >>> for user, item, ts in [("a", "x", 0), ("a", "y", 10), ("b", "x", 20), ("b", "y", 30)]:
    ...     cv.learn(user, item, ts)
    >>> cv.learn("c", "x", 40)
    >>> cv.recommend("c", 2, exclude={"x"})
    ['y']
    """

    def __init__(
        self,
        half_life_s: float = 7 * 86_400.0,
        history: int = 5,
        neighbours: int = 50,
        session_gap_s: float = 3 * 3600.0,
        recency_decay: float = 0.7,
        max_items: int = 200_000,
        max_users: int = 200_000,
    ) -> None:
        if half_life_s <= 0 or session_gap_s <= 0:
            raise ValueError("half_life_s and session_gap_s must be > 0")
        if history < 1 or neighbours < 1 or max_items < 1 or max_users < 1:
            raise ValueError("history, neighbours, max_items and max_users must be >= 1")
        if not 0 < recency_decay <= 1:
            raise ValueError(f"recency_decay must be in (0, 1], got {recency_decay}")
        self.half_life_s = half_life_s
        self.history = history
        self.neighbours = neighbours
        self.session_gap_s = session_gap_s
        self.recency_decay = recency_decay
        self.max_items = max_items
        self.max_users = max_users
        self._reset()

    def _reset(self) -> None:
        self.item_neighbours: OrderedDict[str, ItemNeighbours] = OrderedDict()
        self.user_history: OrderedDict[str, deque[tuple[str, float]]] = OrderedDict()

    def _neighbours_of(self, item_id: str) -> ItemNeighbours:
        found = self.item_neighbours.get(item_id)
        if found is None:
            found = ItemNeighbours(self.half_life_s, self.neighbours)
            self.item_neighbours[item_id] = found
            if len(self.item_neighbours) > self.max_items:
                self.item_neighbours.popitem(last=False)
        else:
            self.item_neighbours.move_to_end(item_id)
        return found

    def learn(self, user_id: str, item_id: str, ts_s: float, weight: float = 1.0) -> None:
        """Record that ``user_id`` touched ``item_id`` at ``ts_s`` (weight > 0)."""
        if not (weight > 0 and math.isfinite(weight) and math.isfinite(ts_s)):
            raise ValueError("weight must be finite and > 0, ts_s finite")
        past = self.user_history.get(user_id)
        if past is None:
            past = self.user_history[user_id] = deque(maxlen=self.history)
            if len(self.user_history) > self.max_users:
                self.user_history.popitem(last=False)
        else:
            self.user_history.move_to_end(user_id)
        mine = self._neighbours_of(item_id)
        for other, other_ts in past:
            if other == item_id or ts_s - other_ts > self.session_gap_s:
                continue
            mine.add(other, weight, ts_s)
            self._neighbours_of(other).add(item_id, weight, ts_s)
        past.append((item_id, ts_s))

    def last_items(self, user_id: str) -> list[str]:
        """The user's most recent items, newest first."""
        past = self.user_history.get(user_id)
        return [item for item, _ in reversed(past)] if past else []

    def scores(self, user_id: str, now_s: float | None = None) -> dict[str, float]:
        """Candidate items with their recency-weighted decayed co-visitation scores."""
        past = self.user_history.get(user_id)
        if not past:
            return {}
        now = past[-1][1] if now_s is None else now_s
        totals: dict[str, float] = {}
        factor = 1.0
        for item, _ in reversed(past):
            found = self.item_neighbours.get(item)
            if found is not None:
                for other, log2_score in found.scores.items():
                    value = factor * decayed_value(log2_score, now, self.half_life_s)
                    totals[other] = totals.get(other, 0.0) + value
            factor *= self.recency_decay
        return totals

    def recommend(
        self, user_id: str, k: int, exclude: Iterable[str] = (), now_s: float | None = None
    ) -> list[str]:
        """The ``k`` items most co-visited with the user's recent ones, best first."""
        banned = set(exclude)
        ranked = sorted(
            (
                (-score, item)
                for item, score in self.scores(user_id, now_s).items()
                if item not in banned
            ),
        )
        return [item for _, item in ranked[:k]]
