"""Offline validation of an item-factor model on held-out interactions.

Each held-out interaction is a user vector *as it was before* the user's event (test-then-
train, recorded by the live flow) and the item the user then chose. The item is ranked among
``negatives`` items drawn with a fixed seed per interaction, so two models are compared on
exactly the same candidates: HR@K (= recall@K with one relevant item), precision@K (HR/K) and
AUC (share of negatives the true item beats; ties count half). Items a model does not know
score 0, which is what serving does with them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# The seeded sampler is native (operators/src/prequential.rs): the live flow's sampled HR@10
# and the lifecycle draw the very same candidates through it.
from operators._native import sampled_negatives as sampled_negatives

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class HeldOut:
    """One test-then-train interaction."""

    key: str
    """A stable id (seeds the negatives)."""
    user_vector: Vector
    item_id: str


@dataclass(frozen=True, slots=True)
class Validation:
    """Quality of a model on a held-out slice."""

    interactions: int
    hit_rate: float
    precision: float
    auc: float
    k: int

    def as_dict(self) -> dict[str, float]:
        """Plain numbers, for storage."""
        return {
            "interactions": float(self.interactions),
            f"hr@{self.k}": self.hit_rate,
            f"recall@{self.k}": self.hit_rate,
            f"precision@{self.k}": self.precision,
            "auc": self.auc,
        }


def validate(
    held_out: Sequence[HeldOut],
    item_vector: Callable[[str], Vector | None],
    catalogue: Sequence[str],
    k: int = 10,
    negatives: int = 99,
) -> Validation:
    """Score a model (``item_vector``) on ``held_out`` against sampled negatives."""
    if k < 1 or negatives < 1:
        raise ValueError("k and negatives must be >= 1")
    hits = 0
    auc_sum = 0.0
    evaluated = 0
    n_items = len(catalogue)
    for h in held_out:
        if n_items <= negatives:
            break
        picks = sampled_negatives(h.key, catalogue, negatives, h.item_id)
        true_score = _score(item_vector(h.item_id), h.user_vector)
        scores = np.array([_score(item_vector(p), h.user_vector) for p in picks])
        better = int((scores > true_score).sum())
        ties = int((scores == true_score).sum())
        hits += 1 if better + (ties + 1) / 2 <= k else 0
        auc_sum += (len(picks) - better - ties + 0.5 * ties) / max(1, len(picks))
        evaluated += 1
    if evaluated == 0:
        return Validation(0, 0.0, 0.0, 0.5, k)
    hr = hits / evaluated
    return Validation(evaluated, hr, hr / k, auc_sum / evaluated, k)


def _score(item: Vector | None, user: Vector) -> float:
    return 0.0 if item is None else float(np.dot(item, user))


def accept(candidate: Validation, live: Validation, margin: float) -> bool:
    """Whether a candidate may replace the live model.

    Not worse than the live model by more than ``margin``: relative on HR@K, absolute on AUC.
    """
    return (
        candidate.hit_rate >= live.hit_rate * (1.0 - margin) and candidate.auc >= live.auc - margin
    )
