"""Shift of the item-popularity distribution between consecutive windows of events.

The items of the last ``window`` (sampled) interactions form a distribution; when a window is
full it is compared with the previous one by Jensen-Shannon divergence (Lin 1991; bounded in
[0, 1] with log base 2, symmetric, defined when one side lacks an item). A Page-Hinkley test
(Page 1954) on that series raises an alarm when the divergence rises above its usual level by
a sustained 0.3 in total: what shoppers look at changed faster than usual (a campaign, a
season). Sampling noise between windows of equal taste stays far below that.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from tests.oracles.page_hinkley import PageHinkley, PageHinkleyState


def js_divergence(p: Counter[str], q: Counter[str]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two count distributions."""
    np_, nq = sum(p.values()), sum(q.values())
    if np_ == 0 or nq == 0:
        return 0.0
    total = 0.0
    for item in p.keys() | q.keys():
        pi, qi = p.get(item, 0) / np_, q.get(item, 0) / nq
        mi = (pi + qi) / 2
        if pi > 0:
            total += 0.5 * pi * math.log2(pi / mi)
        if qi > 0:
            total += 0.5 * qi * math.log2(qi / mi)
    return min(1.0, max(0.0, total))


@dataclass(frozen=True, slots=True)
class PopularityShiftSnapshot:
    """Immutable copy of :class:`PopularityShift`."""

    current: tuple[tuple[str, int], ...]
    previous: tuple[tuple[str, int], ...]
    detector: PageHinkleyState
    last_divergence: float


class PopularityShift:
    """Windowed JS divergence of item popularity, watched by Page-Hinkley."""

    def __init__(self, window: int = 2000, min_windows: int = 10) -> None:
        if window < 10:
            raise ValueError(f"window must be >= 10, got {window}")
        self.window = window
        self.current: Counter[str] = Counter()
        self.previous: Counter[str] = Counter()
        self.last_divergence = 0.0
        # A fixed threshold in JS units: an adaptive one would learn the spike it should
        # flag (one shifted window inflates the spread estimate before it is tested).
        self.detector = PageHinkley(
            min_instances=min_windows, delta=0.02, threshold=0.3, mode="up", alpha=1.0
        )

    def add(self, item_id: str) -> float | None:
        """Count one interaction; at the end of a window return the divergence if it alarmed."""
        self.current[item_id] += 1
        if sum(self.current.values()) < self.window:
            return None
        alarm = None
        if self.previous:
            self.last_divergence = js_divergence(self.current, self.previous)
            if self.detector.update(self.last_divergence):
                alarm = self.last_divergence
        self.previous, self.current = self.current, Counter()
        return alarm

    def snapshot(self) -> PopularityShiftSnapshot:
        """Immutable copy of the state."""
        return PopularityShiftSnapshot(
            tuple(self.current.items()),
            tuple(self.previous.items()),
            self.detector.to_state(),
            self.last_divergence,
        )
