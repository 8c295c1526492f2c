"""One item's co-visited neighbours: decayed co-occurrence counts, bounded, top-M on demand.

Held by the item-keyed step (the item's one owner). Scores use the same log2 forward decay
as popularity, so an old co-visit fades with the half-life without touching the entry.
At most ``capacity`` neighbours are tracked: when full, the weakest is forgotten — a
space-saving style bound that keeps the strong, recent neighbours exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.oracles import popularity


@dataclass(frozen=True, slots=True)
class NeighboursSnapshot:
    """Immutable copy of :class:`ItemNeighbours`."""

    scores: tuple[tuple[str, float], ...]


class ItemNeighbours:
    """Decayed co-visitation scores of one item's neighbours."""

    def __init__(self, half_life_s: float = 7 * 86_400.0, capacity: int = 100) -> None:
        if half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.half_life_s = half_life_s
        self.capacity = capacity
        self.scores: dict[str, float] = {}

    def add(self, other_id: str, weight: float, ts_s: float) -> None:
        """Count one co-visit with ``other_id``."""
        current = self.scores.get(other_id, popularity.NO_POPULARITY)
        self.scores[other_id] = popularity.add_event(current, weight, ts_s, self.half_life_s)
        if len(self.scores) > self.capacity:
            weakest = min(self.scores, key=self.scores.__getitem__)
            del self.scores[weakest]

    def top(self, m: int) -> list[tuple[str, float]]:
        """The ``m`` strongest neighbours with their log2 decayed scores, strongest first."""
        ranked = sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked[:m]

    def snapshot(self) -> NeighboursSnapshot:
        """Immutable copy of the state."""
        return NeighboursSnapshot(tuple(self.scores.items()))

    @classmethod
    def restore(
        cls, snap: NeighboursSnapshot, half_life_s: float = 7 * 86_400.0, capacity: int = 100
    ) -> ItemNeighbours:
        """Rebuild from a snapshot."""
        neighbours = cls(half_life_s, capacity)
        neighbours.scores = dict(snap.scores)
        return neighbours
