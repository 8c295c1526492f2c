"""A user's recent history: rolling window of interactions, bounded seen set, type counts.

Serving uses the window to explain ("because you viewed X") and the seen set to exclude
what the user already has. Both are bounded so a heavy user costs no more than a light one.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UserWindowSnapshot:
    """Immutable copy of a :class:`UserWindow` (what recovery stores)."""

    recent: tuple[tuple[str, str, float], ...]
    seen: tuple[str, ...]
    purchased: tuple[str, ...]
    counts: tuple[tuple[str, int], ...]
    last_ts_s: float


class UserWindow:
    """Last ``window`` interactions (item, type, time), most recent last."""

    def __init__(self, window: int = 50, seen_max: int = 500) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if seen_max < window:
            raise ValueError(f"seen_max ({seen_max}) must be >= window ({window})")
        self.window = window
        self.seen_max = seen_max
        self._reset()

    def _reset(self) -> None:
        self.recent: deque[tuple[str, str, float]] = deque(maxlen=self.window)
        # Insertion-ordered so the oldest seen item is forgotten first when full.
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.purchased: OrderedDict[str, None] = OrderedDict()
        self.counts: dict[str, int] = {}
        self.last_ts_s = float("-inf")

    def add(self, item_id: str, event_type: str, ts_s: float) -> None:
        """Record one interaction."""
        self.recent.append((item_id, event_type, ts_s))
        self.seen[item_id] = None
        self.seen.move_to_end(item_id)
        while len(self.seen) > self.seen_max:
            self.seen.popitem(last=False)
        if event_type == "purchase":
            self.purchased[item_id] = None
            self.purchased.move_to_end(item_id)
            while len(self.purchased) > self.seen_max:
                self.purchased.popitem(last=False)
        self.counts[event_type] = self.counts.get(event_type, 0) + 1
        self.last_ts_s = max(self.last_ts_s, ts_s)

    def recent_items(self) -> list[str]:
        """Distinct items of the window, most recent first."""
        out: dict[str, None] = {}
        for item_id, _, _ in reversed(self.recent):
            out.setdefault(item_id, None)
        return list(out)

    def snapshot(self) -> UserWindowSnapshot:
        """Immutable copy of the state."""
        return UserWindowSnapshot(
            recent=tuple(self.recent),
            seen=tuple(self.seen),
            purchased=tuple(self.purchased),
            counts=tuple(sorted(self.counts.items())),
            last_ts_s=self.last_ts_s,
        )

    @classmethod
    def restore(cls, snap: UserWindowSnapshot, window: int = 50, seen_max: int = 500) -> UserWindow:
        """Rebuild a window from its snapshot."""
        uw = cls(window, seen_max)
        uw.recent.extend(snap.recent)
        uw.seen.update((i, None) for i in snap.seen)
        uw.purchased.update((i, None) for i in snap.purchased)
        uw.counts.update(snap.counts)
        uw.last_ts_s = snap.last_ts_s
        return uw
