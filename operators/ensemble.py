"""Ensemble of models with different memories, weighted by their recent prequential losses.

A short-memory and a long-memory model (or any K experts) each score an event before training
on it; their losses on that event update Hedge weights (:class:`Hedge`), and serving ranks by
the weighted sum of the experts' scores (:func:`combine_scores`). Pure, a few floats per key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class HedgeSnapshot:
    """Immutable copy of a :class:`Hedge`: its settings, weights and counters."""

    learning_rate: float
    weight_floor: float
    weights: tuple[float, ...]
    cumulative_losses: tuple[float, ...]
    rounds: int


class Hedge:
    r"""Exponentially weighted experts (Hedge, Freund & Schapire 1997[^1]) with a weight floor.

    With losses $\ell_{t,k} \in [0, 1]$ of the $K$ experts at round $t$,

    $$v_{t+1,k} = w_{t,k}\, e^{-\eta\, \ell_{t,k}}, \qquad
      w_{t+1,k} = (1 - K\gamma)\, \frac{v_{t+1,k}}{\sum_j v_{t+1,j}} + \gamma$$

    with ``learning_rate`` $\eta$ and ``weight_floor`` $\gamma \in [0, 1/K)$. With $\gamma = 0$
    this is Hedge: the weights are $\propto e^{-\eta L_{t,k}}$, $L$ the cumulative loss, and
    the regret to the best expert is $O(\sqrt{T \ln K})$ for $\eta \approx \sqrt{8 \ln K / T}$.
    With $\gamma > 0$ every expert keeps at least $\gamma$ — the mixing of Fixed Share
    (Herbster & Warmuth 1998[^2]) — so an expert that was bad for a while can win back the
    lead within $O(\ln(1/\gamma)/\eta)$ rounds once it is better: what a drifting stream
    needs, where the short-memory model wins right after a change and the long-memory one
    later. Losses outside $[0, 1]$ are clipped; a NaN loss raises ``ValueError``.

    Examples
    --------
    >>> hedge = Hedge(2, learning_rate=0.5, weight_floor=0.01)
    >>> for _ in range(10):
    ...     hedge.update([0.0, 1.0])
    >>> [round(w, 3) for w in hedge.weights]
    [0.969, 0.031]
    >>> for _ in range(20):
    ...     hedge.update([1.0, 0.0])
    >>> [round(w, 3) for w in hedge.weights]
    [0.026, 0.974]

    References
    ----------
    [^1]: Yoav Freund and Robert E. Schapire. 1997. A Decision-Theoretic Generalization of
    On-Line Learning and an Application to Boosting. Journal of Computer and System Sciences
    55, 1 (1997), 119-139.
    [^2]: Mark Herbster and Manfred K. Warmuth. 1998. Tracking the Best Expert. Machine
    Learning 32, 2 (1998), 151-178.

    """

    def __init__(self, n_experts: int, learning_rate: float = 0.5, weight_floor: float = 0.0):
        if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
            raise ValueError(f"n_experts must be an int >= 1, got {n_experts!r}")
        if not 0.0 < learning_rate < math.inf:
            raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate}")
        if not 0.0 <= weight_floor < 1.0 / n_experts or (n_experts == 1 and weight_floor):
            raise ValueError(f"weight_floor must be in [0, 1/{n_experts}), got {weight_floor}")
        self.n_experts = n_experts
        self.learning_rate = learning_rate
        self.weight_floor = weight_floor
        self._weights = [1.0 / n_experts] * n_experts
        self._cumulative = [0.0] * n_experts
        self._rounds = 0

    @property
    def weights(self) -> tuple[float, ...]:
        """The current distribution over the experts (sums to 1)."""
        return tuple(self._weights)

    @property
    def cumulative_losses(self) -> tuple[float, ...]:
        """Each expert's total (clipped) loss so far."""
        return tuple(self._cumulative)

    @property
    def rounds(self) -> int:
        """Updates applied."""
        return self._rounds

    def update(self, losses: Sequence[float]) -> None:
        """Apply one round of losses, one per expert, each clipped to [0, 1]."""
        if len(losses) != self.n_experts:
            raise ValueError(f"expected {self.n_experts} losses, got {len(losses)}")
        clipped = []
        for loss in losses:
            if math.isnan(loss):
                raise ValueError("Hedge.update needs losses that are not NaN")
            clipped.append(min(1.0, max(0.0, loss)))
        # Subtracting the smallest loss changes no ratio and keeps exp() away from underflow.
        least = min(clipped)
        scaled = [
            w * math.exp(-self.learning_rate * (loss - least))
            for w, loss in zip(self._weights, clipped, strict=True)
        ]
        total = math.fsum(scaled)
        gamma = self.weight_floor
        keep = 1.0 - self.n_experts * gamma
        weights = [keep * v / total + gamma for v in scaled]
        # A weight can underflow to 0 without a floor; the distribution is renormalised anyway.
        norm = math.fsum(weights)
        self._weights = [w / norm for w in weights]
        self._cumulative = [c + loss for c, loss in zip(self._cumulative, clipped, strict=True)]
        self._rounds += 1

    def snapshot(self) -> HedgeSnapshot:
        """Immutable copy of the state."""
        return HedgeSnapshot(
            self.learning_rate,
            self.weight_floor,
            tuple(self._weights),
            tuple(self._cumulative),
            self._rounds,
        )

    @classmethod
    def restore(cls, snap: HedgeSnapshot) -> Hedge:
        """Rebuild the weights from a snapshot; its settings are re-validated."""
        hedge = cls(len(snap.weights), snap.learning_rate, snap.weight_floor)
        hedge._weights = list(snap.weights)
        hedge._cumulative = list(snap.cumulative_losses)
        hedge._rounds = snap.rounds
        return hedge


def combine_scores(
    weights: Sequence[float], expert_scores: Sequence[npt.ArrayLike]
) -> npt.NDArray[np.float32]:
    """Weighted sum of the experts' score vectors over the same candidates, as float32.

    The experts must score on comparable scales (two ISGD models do: both fit a target of
    1); rank or z-score them first otherwise.

    >>> combine_scores([0.25, 0.75], [[1.0, 0.0], [0.0, 1.0]]).tolist()
    [0.25, 0.75]
    """
    if len(weights) != len(expert_scores) or not weights:
        raise ValueError(f"{len(weights)} weights for {len(expert_scores)} score vectors")
    combined = np.zeros_like(np.asarray(expert_scores[0], dtype=np.float32))
    for weight, scores in zip(weights, expert_scores, strict=True):
        array = np.asarray(scores, dtype=np.float32)
        if array.shape != combined.shape:
            raise ValueError(f"score vectors differ in shape: {array.shape} != {combined.shape}")
        combined += np.float32(weight) * array
    return combined
