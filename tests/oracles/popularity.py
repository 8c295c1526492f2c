"""Exponentially decayed item popularity, kept in log space so it never overflows.

Forward decay (Cormode et al. 2009): an event of weight w at time t adds w * 2^(t/h) to the
item's score, h being the half-life. Scores of different items stay comparable without
touching every item as time passes, and keeping log2 of the score turns the ever-growing
2^(t/h) into a plain sum: log2(score) grows by about 1 per half-life. Ranking by the stored
value equals ranking by the popularity decayed to any common "now".
"""

from __future__ import annotations

import math

NO_POPULARITY = float("-inf")


def add_event(log2_score: float, weight: float, ts_s: float, half_life_s: float) -> float:
    """Return the item's log2 forward-decayed score after one more event."""
    if weight <= 0:
        raise ValueError(f"weight must be > 0, got {weight}")
    if half_life_s <= 0:
        raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
    term = ts_s / half_life_s + math.log2(weight)
    if log2_score == NO_POPULARITY:
        return term
    high, low = (term, log2_score) if term > log2_score else (log2_score, term)
    return high + math.log2(1.0 + 2.0 ** (low - high))


def decayed_value(log2_score: float, now_s: float, half_life_s: float) -> float:
    """The popularity as a plain number: sum of weights decayed to ``now_s``."""
    if log2_score == NO_POPULARITY:
        return 0.0
    return float(2.0 ** (log2_score - now_s / half_life_s))
