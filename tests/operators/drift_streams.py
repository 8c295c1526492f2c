"""Seeded synthetic streams shared by the drift detector tests (golden values depend on them)."""

from collections.abc import Callable

import numpy as np

SEED = 7


def mean_steps(means: list[float], n: int = 1000, sd: float = 0.5) -> list[float]:
    """Gaussian noise around a mean that jumps every ``n`` values (seed ``SEED``)."""
    rng = np.random.default_rng(SEED)
    return (np.repeat(means, n) + rng.normal(0.0, sd, n * len(means))).tolist()


def mean_ramp(start: float, end: float, n: int = 1000, sd: float = 0.5) -> list[float]:
    """``n`` values around ``start``, a linear ramp of ``n`` values, ``n`` around ``end``."""
    rng = np.random.default_rng(SEED)
    means = np.concatenate([np.full(n, start), np.linspace(start, end, n), np.full(n, end)])
    return (means + rng.normal(0.0, sd, means.size)).tolist()


def hit_rates(rates: list[float], n: int = 2000) -> list[float]:
    """A hit (1.0) / miss (0.0) stream whose hit rate changes every ``n`` values."""
    rng = np.random.default_rng(SEED)
    return (rng.random(n * len(rates)) < np.repeat(rates, n)).astype(float).tolist()


STREAMS: dict[str, Callable[[], list[float]]] = {
    "abrupt_up": lambda: mean_steps([0.0, 1.0]),
    "abrupt_down": lambda: mean_steps([1.0, 0.0]),
    "gradual_up": lambda: mean_ramp(0.0, 1.0),
    "gradual_down": lambda: mean_ramp(1.0, 0.0),
    "hit_rate_up": lambda: hit_rates([0.1, 0.3]),
    "hit_rate_down": lambda: hit_rates([0.3, 0.1]),
}
