"""Incremental matrix factorization for positive-only feedback (ISGD).

Vinagre, Jorge and Gama (2014), "Fast incremental matrix factorization for recommendation
with positive-only feedback", UMAP 2014, Algorithm 1: every observed (user, item) pair is a
positive with target 1; one SGD step per event moves the user and the item vector towards
each other, with L2 regularisation:

    err = 1 - <A_u, B_i>
    A_u <- A_u + eta * (err * B_i - lambda * A_u)
    B_i <- B_i + eta * (err * A_u - lambda * B_i)

The two halves are separate functions so the dataflow can run them in different keyed steps
(the user half where the user's state lives, the item half where the item's state lives); the
offline harness runs them back to back through :class:`IncrementalMF`, so both use the same
maths. ``weight`` scales the step by the strength of the signal (a purchase says more than a
view). New vectors are drawn from N(0, init_std²) seeded by the entity id, so every process
that meets a new item for the first time starts from the *same* vector without talking.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
_SQRT3: Final = 3.0**0.5

#: Default strength of each event type (multiplies the learning rate).
DEFAULT_EVENT_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "view": 1.0,
        "rec_click": 1.0,
        "add_to_cart": 2.0,
        "favourite": 2.0,
        "purchase": 3.0,
    }
)


@dataclass(frozen=True, slots=True)
class IsgdParams:
    """Hyperparameters of ISGD, named as in the paper where it has a name."""

    factors: int = 32
    learn_rate: float = 0.05  # eta
    regularization: float = 0.01  # lambda
    init_std: float = 0.1
    seed: int = 42
    event_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_EVENT_WEIGHTS)

    max_norm: float = 10.0
    """Vectors are rescaled to at most this length: with a target of 1, a longer vector only
    means a step overshot, and one overshoot must not grow into inf/NaN."""

    def __post_init__(self) -> None:
        numbers = (self.learn_rate, self.regularization, self.init_std, self.max_norm)
        if not all(math.isfinite(x) for x in (*numbers, *self.event_weights.values())):
            raise ValueError("hyperparameters and event weights must be finite")
        if self.max_norm <= 0:
            raise ValueError(f"max_norm must be > 0, got {self.max_norm}")
        if self.factors < 1:
            raise ValueError(f"factors must be >= 1, got {self.factors}")
        if not 0 < self.learn_rate < 1:
            raise ValueError(f"learn_rate must be in (0, 1), got {self.learn_rate}")
        if self.regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization}")
        if self.init_std <= 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std}")
        if any(w <= 0 for w in self.event_weights.values()):
            raise ValueError("event weights must be > 0")

    def weight_of(self, event_type: str) -> float:
        """Step multiplier of an event type; unknown types count as a view."""
        return self.event_weights.get(event_type, 1.0)


def initial_vector(entity_id: str, kind: str, params: IsgdParams) -> Vector:
    """The deterministic starting vector of a new user (``kind="user"``) or item.

    Uniform on ±init_std·√3 (variance init_std²), drawn from a hash of (seed, kind, id):
    a few µs, where seeding a numpy generator per new id cost ~20 µs.
    """
    key = f"{params.seed}\x1f{kind}\x1f{entity_id}".encode()
    raw = np.frombuffer(hashlib.shake_128(key).digest(2 * params.factors), dtype="<u2")
    unit = raw.astype(np.float32) * np.float32(2.0 / 65535.0) - np.float32(1.0)
    return unit * np.float32(params.init_std * _SQRT3)


def user_step(user_vec: Vector, item_vec: Vector, weight: float, params: IsgdParams) -> float:
    """Apply the user half of one ISGD step in place; return the error before the step."""
    err = 1.0 - float(np.dot(user_vec, item_vec))
    # Step size eta*weight stays below 1 for sane weights; clip the error so one
    # adversarial pair cannot blow a vector up (|err| is 1 at init, small after training).
    err = max(-4.0, min(4.0, err))
    eta = params.learn_rate * weight
    user_vec += eta * (err * item_vec - params.regularization * user_vec)
    _limit_norm(user_vec, params.max_norm)
    return err


def item_step(item_vec: Vector, user_vec: Vector, weight: float, params: IsgdParams) -> float:
    """Apply the item half of one ISGD step in place; return the error before the step."""
    err = 1.0 - float(np.dot(user_vec, item_vec))
    err = max(-4.0, min(4.0, err))
    eta = params.learn_rate * weight
    item_vec += eta * (err * user_vec - params.regularization * item_vec)
    _limit_norm(item_vec, params.max_norm)
    return err


def _limit_norm(vec: Vector, max_norm: float) -> None:
    squared = float(np.dot(vec, vec))
    if not squared <= max_norm * max_norm:  # also catches NaN
        if math.isfinite(squared) and squared > 0:
            vec *= np.float32(max_norm / math.sqrt(squared))
        else:  # overflowed: restart the vector small rather than propagate inf/NaN
            vec[:] = 0.0


class IncrementalMF:
    """Sequential ISGD over a stream: the reference the offline harness runs.

    >>> mf = IncrementalMF(IsgdParams(factors=8, seed=1))
    >>> for _ in range(50):
    ...     _ = mf.learn("alice", "shoes", 1.0)
    >>> mf.score("alice", ["shoes"])[0] > 0.5
    True
    """

    def __init__(self, params: IsgdParams) -> None:
        self.params = params
        self.user_vectors: dict[str, Vector] = {}
        self.item_vectors: dict[str, Vector] = {}

    def user_vector(self, user_id: str) -> Vector:
        """The user's vector, created on first use."""
        vec = self.user_vectors.get(user_id)
        if vec is None:
            vec = self.user_vectors[user_id] = initial_vector(user_id, "user", self.params)
        return vec

    def item_vector(self, item_id: str) -> Vector:
        """The item's vector, created on first use."""
        vec = self.item_vectors.get(item_id)
        if vec is None:
            vec = self.item_vectors[item_id] = initial_vector(item_id, "item", self.params)
        return vec

    def learn(self, user_id: str, item_id: str, weight: float = 1.0) -> float:
        """One ISGD step on a positive (user, item) pair; returns the error before it."""
        user_vec = self.user_vector(user_id)
        item_vec = self.item_vector(item_id)
        user_before = user_vec.copy()
        err = user_step(user_vec, item_vec, weight, self.params)
        # Both halves use the vectors as they were before the event, as the live flow does
        # (its item step receives the user vector the user step started from).
        item_step(item_vec, user_before, weight, self.params)
        return err

    def score(self, user_id: str, item_ids: Iterable[str]) -> list[float]:
        """Predicted preference of the user for each item (0 for unknown ones)."""
        user_vec = self.user_vectors.get(user_id)
        if user_vec is None:
            return [0.0 for _ in item_ids]
        return [
            float(np.dot(user_vec, self.item_vectors[i])) if i in self.item_vectors else 0.0
            for i in item_ids
        ]
