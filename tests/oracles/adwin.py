"""ADWIN change detection on one scalar stream (a hit rate, a loss, a latency).

The dataflow feeds one value per event to ``ADWIN.update`` and reacts to ``drift_detected``;
``estimation`` is the mean over the adaptive window, a drift-aware running average. Pure
Python with the hyperparameters and detection indices of ``river.drift.ADWIN``, and a frozen
snapshot for recovery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: One exponential-histogram row per bucket size 2**i, oldest bucket first; each bucket is
#: (sum of its values, sum of squared deviations from their mean).
Buckets = tuple[tuple[tuple[float, float], ...], ...]

_TWO_THIRDS = 2.0 / 3.0


@dataclass(frozen=True, slots=True)
class AdwinState:
    """Everything an `ADWIN` is: its hyperparameters and its window.

    Hyperparameters are part of the snapshot because the bucket layout is only valid for the
    ``max_buckets`` that built it.
    """

    delta: float
    clock: int
    max_buckets: int
    min_window_length: int
    grace_period: int
    buckets: Buckets
    width: int
    total: float
    sum_squares: float
    tick: int
    drift_detected: bool


class ADWIN:
    r"""Adaptive windowing (ADWIN2) change detection[^1].

    ADWIN keeps the longest recent window $W$ in which no change can be found: every
    ``clock`` updates it tries each split of $W$ into an older part $W_0$ and a newer part
    $W_1$ (both at least ``min_window_length`` long) and drops the oldest values while some
    split has

    $$|\hat\mu_{W_0} - \hat\mu_{W_1}| > \sqrt{2 \frac{1}{m} \hat\sigma_W^2 \delta'}
      + \frac{2}{3} \frac{\delta'}{m}, \quad
      \frac{1}{m} = \frac{1}{n_0 - \ell + 1} + \frac{1}{n_1 - \ell + 1}, \quad
      \delta' = \ln \frac{2 \ln |W|}{\delta}$$

    with $\ell$ = ``min_window_length``. Shrinking the window is the alarm. The window is
    stored as an exponential histogram: at most ``max_buckets`` buckets summarise $2^i$ values
    each (one more triggers a merge), so memory and the split checks are $O(\log |W|)$.

    This reproduces ``river.drift.ADWIN`` (river 0.26) value for value, including its two
    departures from the paper: no split is tried before ``grace_period`` values, and the
    update after an alarm starts from an empty window (the paper keeps $W_1$). One deliberate
    difference: river's ``variance`` is the window's *sum* of squared deviations, ours is that
    sum divided by ``width`` (``sum_squares`` holds the sum). With ``max_buckets=1`` river
    0.26 can leave empty rows at the old end of the histogram and panics on the next cut; we
    drop such rows, so that setting works here (with identical indices up to river's crash).

    Parameters
    ----------
    delta
        Confidence of the test: smaller values mean fewer false alarms and later detections.
    clock
        Try the splits every ``clock`` updates (1: every update).
    max_buckets
        Buckets kept per size before the two oldest are merged.
    min_window_length
        Shortest $W_0$ or $W_1$ a split may have.
    grace_period
        No split is tried until the window holds more than this many values.

    Examples
    --------
    >>> import random
    >>> from tests.oracles.adwin import ADWIN

    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)

    >>> adwin = ADWIN()
    >>> for i, x in enumerate(stream):
    ...     if adwin.update(x):
    ...         print(f"Change detected at index {i}, input value: {x}")
    ...         print(f"window {adwin.width}, mean {adwin.estimation:.2f}")
    Change detected at index 1023, input value: 4
    window 32, mean 4.50

    The snapshot is a frozen value from which the same detector is rebuilt:

    >>> snapshot = adwin.to_state()
    >>> ADWIN.from_state(snapshot).to_state() == snapshot
    True

    References
    ----------
    [^1]: Albert Bifet and Ricard Gavaldà. 2007. Learning from Time-Changing Data with
    Adaptive Windowing. In Proceedings of the 2007 SIAM International Conference on Data
    Mining, 443-448.

    """

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        for name, value, least in (
            ("clock", clock, 1),
            ("max_buckets", max_buckets, 1),
            ("min_window_length", min_window_length, 1),
            ("grace_period", grace_period, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self._drift_detected = False
        self._reset()

    def _reset(self) -> None:
        # Row i holds buckets of 2**i values, oldest first, as parallel lists of bucket sums
        # and bucket sums of squared deviations.
        self._totals: list[list[float]] = [[]]
        self._squares: list[list[float]] = [[]]
        self._width = 0
        self._total = 0.0
        self._sum_squares = 0.0
        self._tick = 0
        self._drift_detected = False

    @property
    def drift_detected(self) -> bool:
        """Whether the last update shrank the window."""
        return self._drift_detected

    @property
    def width(self) -> int:
        """Number of values in the window."""
        return self._width

    @property
    def total(self) -> float:
        """Sum of the values in the window."""
        return self._total

    @property
    def estimation(self) -> float:
        """Mean of the values in the window (0 when it is empty)."""
        return self._total / self._width if self._width else 0.0

    @property
    def sum_squares(self) -> float:
        """Sum of squared deviations from the window's mean (river's ``variance``)."""
        return self._sum_squares

    @property
    def variance(self) -> float:
        """Population variance of the values in the window (0 when it is empty)."""
        # max: after cuts, rounding can leave the running sum of squares a hair below zero.
        return max(self._sum_squares, 0.0) / self._width if self._width else 0.0

    def update(self, x: float) -> bool:
        """Add one value, shrink the window if it holds a change, and return whether it did.

        Raises ``ValueError`` for NaN or infinite values, which would poison the window.
        """
        if not math.isfinite(x):
            raise ValueError(f"ADWIN.update needs a finite value, got {x!r}")
        if self._drift_detected:
            self._reset()
        self._insert(x)
        self._tick += 1
        if self._tick % self.clock == 0 and self._width > self.grace_period:
            while self._cut_oldest_if_changed():
                self._drift_detected = True
        return self._drift_detected

    def _insert(self, x: float) -> None:
        # Same operation order as river, so every float matches bit for bit.
        self._totals[0].append(x)
        self._squares[0].append(0.0)
        self._width += 1
        if self._width > 1:
            deviation = x - self._total / (self._width - 1)
            self._sum_squares += (self._width - 1) * deviation * deviation / self._width
        self._total += x

        row = 0
        while len(self._totals[row]) > self.max_buckets:
            # Merge the two oldest buckets of this row into one of the next row (Chan et al.).
            size = 1 << row
            totals, squares = self._totals[row], self._squares[row]
            mean_0, mean_1 = totals[0] / size, totals[1] / size
            merged_total = totals[0] + totals[1]
            merged_squares = (
                squares[0] + squares[1] + size * 0.5 * (mean_0 - mean_1) * (mean_0 - mean_1)
            )
            del totals[:2], squares[:2]
            if row + 1 == len(self._totals):
                self._totals.append([])
                self._squares.append([])
            self._totals[row + 1].append(merged_total)
            self._squares[row + 1].append(merged_squares)
            row += 1

    def _cut_oldest_if_changed(self) -> bool:
        """Drop the oldest bucket and return True if some split of the window differs."""
        width = self._width
        min_length = self.min_window_length
        if width < 2 * min_length:
            return False  # no split leaves both sides long enough (and log(log(1)) is undefined)
        delta_prime = math.log(2.0 * math.log(width) / self.delta)
        window_variance = self._sum_squares / width
        older_n, newer_n = 0, width
        older_sum, newer_sum = 0.0, self._total
        # Splits go from the oldest bucket to the newest; the last one leaves W1 empty.
        for row in range(len(self._totals) - 1, -1, -1):
            size = 1 << row
            for bucket_total in self._totals[row]:
                older_n += size
                newer_n -= size
                older_sum += bucket_total
                newer_sum -= bucket_total
                if newer_n < min_length:
                    return False
                if older_n < min_length:
                    continue
                mean_gap = older_sum / older_n - newer_sum / newer_n
                m_recip = 1.0 / (older_n - min_length + 1.0) + 1.0 / (newer_n - min_length + 1.0)
                spread_term = 2.0 * m_recip * window_variance * delta_prime
                if spread_term < 0.0:
                    # Rounding can leave the window's sum of squares a hair below zero; river's
                    # sqrt then yields NaN, which never exceeds the gap: no cut at this split.
                    continue
                epsilon = math.sqrt(spread_term) + _TWO_THIRDS * delta_prime * m_recip
                if abs(mean_gap) > epsilon:
                    self._delete_oldest()
                    return True
        return False

    def _delete_oldest(self) -> None:
        last = len(self._totals) - 1
        size = 1 << last
        bucket_total = self._totals[last].pop(0)
        bucket_squares = self._squares[last].pop(0)
        bucket_mean = bucket_total / size
        self._width -= size
        self._total -= bucket_total
        window_mean = self._total / self._width
        gap = bucket_mean - window_mean
        self._sum_squares -= bucket_squares + size * self._width * gap * gap / (size + self._width)
        # Row 0 stays even when empty: it is where the next value goes.
        while len(self._totals) > 1 and not self._totals[-1]:
            self._totals.pop()
            self._squares.pop()

    def to_state(self) -> AdwinState:
        """Return an immutable snapshot from which `from_state` rebuilds this detector."""
        return AdwinState(
            delta=self.delta,
            clock=self.clock,
            max_buckets=self.max_buckets,
            min_window_length=self.min_window_length,
            grace_period=self.grace_period,
            buckets=tuple(
                tuple(zip(totals, squares, strict=True))
                for totals, squares in zip(self._totals, self._squares, strict=True)
            ),
            width=self._width,
            total=self._total,
            sum_squares=self._sum_squares,
            tick=self._tick,
            drift_detected=self._drift_detected,
        )

    @classmethod
    def from_state(cls, state: AdwinState) -> ADWIN:
        """Rebuild a detector from `to_state`'s snapshot; its hyperparameters are re-validated."""
        detector = cls(
            delta=state.delta,
            clock=state.clock,
            max_buckets=state.max_buckets,
            min_window_length=state.min_window_length,
            grace_period=state.grace_period,
        )
        detector._totals = [[total for total, _ in row] for row in state.buckets] or [[]]
        detector._squares = [[squares for _, squares in row] for row in state.buckets] or [[]]
        detector._width = state.width
        detector._total = state.total
        detector._sum_squares = state.sum_squares
        detector._tick = state.tick
        detector._drift_detected = state.drift_detected
        return detector
