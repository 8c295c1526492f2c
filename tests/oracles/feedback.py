"""Feedback on served recommendations: impressions, clicks and conversions per time window.

Events that carry a ``recommendation_id`` are counted per (model version, context segment)
in tumbling windows of *event* time, keeping the last ``keep`` windows: CTR (clicks per
impression) and conversion (purchases or add-to-carts per click) per window are what the
monitoring and the drift detectors read.
"""

from __future__ import annotations

from dataclasses import dataclass

IMPRESSION = "rec_impression"
CLICK = "rec_click"
CONVERSION_TYPES = frozenset({"purchase", "add_to_cart"})


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """Counts of one window; immutable."""

    start_s: float
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0

    @property
    def ctr(self) -> float | None:
        """Clicks per impression (None without impressions)."""
        return self.clicks / self.impressions if self.impressions else None

    @property
    def conversion_rate(self) -> float | None:
        """Conversions per click (None without clicks)."""
        return self.conversions / self.clicks if self.clicks else None


def model_of(recommendation_id: str) -> str:
    """The model version a recommendation id was served by (``<model>.<uuid>``)."""
    model, sep, _ = recommendation_id.rpartition(".")
    return model if sep and model else "unknown"


class FeedbackWindows:
    """Tumbling-window feedback counters of one (model, segment)."""

    def __init__(self, window_s: float = 300.0, keep: int = 288) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.window_s = window_s
        self.keep = keep
        self.windows: dict[float, WindowCounts] = {}

    def add(self, event_type: str, ts_s: float) -> WindowCounts | None:
        """Count one feedback event; return its window's counts (None if not feedback)."""
        start = ts_s - ts_s % self.window_s
        w = self.windows.get(start) or WindowCounts(start)
        if event_type == IMPRESSION:
            w = WindowCounts(start, w.impressions + 1, w.clicks, w.conversions)
        elif event_type == CLICK:
            w = WindowCounts(start, w.impressions, w.clicks + 1, w.conversions)
        elif event_type in CONVERSION_TYPES:
            w = WindowCounts(start, w.impressions, w.clicks, w.conversions + 1)
        else:
            return None
        self.windows[start] = w
        if len(self.windows) > self.keep:
            for old in sorted(self.windows)[: len(self.windows) - self.keep]:
                del self.windows[old]
        return w

    def snapshot(self) -> tuple[WindowCounts, ...]:
        """Immutable copy, oldest window first."""
        return tuple(self.windows[s] for s in sorted(self.windows))

    @classmethod
    def restore(
        cls, snap: tuple[WindowCounts, ...], window_s: float = 300.0, keep: int = 288
    ) -> FeedbackWindows:
        """Rebuild from a snapshot."""
        fw = cls(window_s, keep)
        fw.windows = {w.start_s: w for w in snap}
        return fw
