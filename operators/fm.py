"""Online factorization machine over categorical fields, trained by SGD one event at a time.

A second-order FM (Rendle 2010, "Factorization Machines"; online for recommendation as in
Kitazawa 2016, "Incremental Factorization Machines for Persistently Cold-starting Online Item
Recommendation") over binary features named ``field:value`` — user, item, category, device
class, time-of-day bucket, country, profile fields. Used where a user has little history
(context and profile still say something) and to re-rank MF candidates. Positives have target
1, sampled negatives target 0, squared loss with L2:

    y(x) = w0 + sum_j w_j + 1/2 (|sum_j v_j|^2 - sum_j |v_j|^2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]
Indices = npt.NDArray[np.int64]
_ERR_CLIP = 4.0


@dataclass(frozen=True, slots=True)
class FMParams:
    """Hyperparameters of the online FM."""

    factors: int = 16
    learn_rate: float = 0.02
    regularization: float = 0.01
    init_std: float = 0.05
    max_norm: float = 10.0
    seed: int = 42

    def __post_init__(self) -> None:
        numbers = (self.learn_rate, self.regularization, self.init_std, self.max_norm)
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError("hyperparameters must be finite")
        if self.factors < 1:
            raise ValueError(f"factors must be >= 1, got {self.factors}")
        if not 0 < self.learn_rate < 1:
            raise ValueError(f"learn_rate must be in (0, 1), got {self.learn_rate}")
        if self.regularization < 0 or self.init_std <= 0 or self.max_norm <= 0:
            raise ValueError("regularization must be >= 0, init_std and max_norm > 0")


def fm_predict(bias: float, weights: Matrix, factors: Matrix) -> float:
    """FM output for one example given the rows of its active features."""
    total = factors.sum(axis=0)
    pair = 0.5 * (float(np.dot(total, total)) - float(np.einsum("ij,ij->", factors, factors)))
    return bias + float(weights.sum()) + pair


def fm_loss(
    bias: float, weights: Matrix, factors: Matrix, target: float, weight: float, reg: float
) -> float:
    """Weighted squared error plus L2 on the active weights and factors (not the bias)."""
    err = target - fm_predict(bias, weights, factors)
    penalty = float(np.dot(weights, weights)) + float(np.einsum("ij,ij->", factors, factors))
    return 0.5 * weight * err * err + 0.5 * reg * penalty


def fm_gradients(
    bias: float, weights: Matrix, factors: Matrix, target: float, weight: float, reg: float
) -> tuple[float, Matrix, Matrix]:
    """Gradients of :func:`fm_loss` w.r.t. (bias, weights, factors)."""
    err = target - fm_predict(bias, weights, factors)
    total = factors.sum(axis=0)
    grad_bias = -weight * err
    grad_w = (-weight * err + reg * weights).astype(np.float32)
    grad_v = (-weight * err * (total[None, :] - factors) + reg * factors).astype(np.float32)
    return grad_bias, grad_w, grad_v


class OnlineFM:
    """Second-order FM over named binary features, growing its vocabulary as it learns.

    >>> fm = OnlineFM(FMParams(factors=4, learn_rate=0.1))
    >>> for _ in range(200):
    ...     _ = fm.learn(["u:a", "i:x", "tod:morning"], 1.0)
    ...     _ = fm.learn(["u:a", "i:y", "tod:morning"], 0.0)
    >>> s = fm.score_items(["u:a", "tod:morning"], [["i:x"], ["i:y"]])
    >>> bool(s[0] > s[1])
    True
    """

    def __init__(self, params: FMParams | None = None) -> None:
        self.params = params or FMParams()
        self._reset()

    def _reset(self) -> None:
        self.vocabulary: dict[str, int] = {}
        self.bias = 0.0
        self.weights: Matrix = np.zeros(256, dtype=np.float32)
        self.factors: Matrix = np.zeros((256, self.params.factors), dtype=np.float32)
        self._rng = np.random.default_rng(self.params.seed)

    def _index(self, feature: str) -> int:
        index = self.vocabulary.get(feature)
        if index is None:
            index = self.vocabulary[feature] = len(self.vocabulary)
            if index + 1 >= self.weights.shape[0]:  # keep one spare zero row for padding
                self.weights = np.concatenate([self.weights, np.zeros_like(self.weights)])
                self.factors = np.vstack([self.factors, np.zeros_like(self.factors)])
            self.factors[index] = self._rng.normal(
                0.0, self.params.init_std, self.params.factors
            ).astype(np.float32)
        return index

    def indices(self, features: Sequence[str]) -> Indices:
        """Rows of the known features (unknown ones are left out: their weights are 0)."""
        known = [self.vocabulary[f] for f in features if f in self.vocabulary]
        return np.asarray(known, dtype=np.int64)

    def predict(self, features: Sequence[str]) -> float:
        """Model output for one example."""
        idx = self.indices(features)
        return fm_predict(self.bias, self.weights[idx], self.factors[idx])

    def learn(self, features: Sequence[str], target: float, weight: float = 1.0) -> float:
        """One SGD step on an example; returns the error before it."""
        p = self.params
        idx = np.unique(np.asarray([self._index(f) for f in features], dtype=np.int64))
        w = self.weights[idx]
        v = self.factors[idx]
        err = target - fm_predict(self.bias, w, v)
        err = max(-_ERR_CLIP, min(_ERR_CLIP, err))
        step = np.float32(weight * err)
        eta = np.float32(p.learn_rate)
        reg = np.float32(p.regularization)
        total = v.sum(axis=0)
        self.bias += float(eta * step)
        self.weights[idx] = w + eta * (step - reg * w)
        new_v = v + eta * (step * (total[None, :] - v) - reg * v)
        norms = np.sqrt(np.einsum("ij,ij->i", new_v, new_v))
        new_v[~np.isfinite(norms)] = 0.0
        long = np.isfinite(norms) & (norms > p.max_norm)
        new_v[long] *= (p.max_norm / norms[long])[:, None].astype(np.float32)
        self.factors[idx] = new_v
        self.weights[idx] = np.clip(np.nan_to_num(self.weights[idx]), -p.max_norm, p.max_norm)
        if not math.isfinite(self.bias):
            self.bias = 0.0
        return err

    def score_items(
        self, query: Sequence[str], items: Sequence[Sequence[str]]
    ) -> npt.NDArray[np.float64]:
        """FM output for ``query`` features joined with each item's features, vectorised."""
        q_idx = self.indices(query)
        q_sum = self.factors[q_idx].sum(axis=0)
        q_sq = float(np.einsum("ij,ij->", self.factors[q_idx], self.factors[q_idx]))
        base = self.bias + float(self.weights[q_idx].sum()) - 0.5 * q_sq
        width = max((len(f) for f in items), default=0)
        # Pad with the spare row after the vocabulary: never assigned, so always zero.
        pad = len(self.vocabulary)
        table = np.full((len(items), max(width, 1)), pad, dtype=np.int64)
        for row, feats in enumerate(items):
            for col, f in enumerate(feats):
                table[row, col] = self.vocabulary.get(f, pad)
        v = self.factors[table]  # (n, m, k)
        item_sum = v.sum(axis=1)
        item_sq = np.einsum("nmk,nmk->n", v, v)
        joint = item_sum + q_sum[None, :]
        pair = 0.5 * (np.einsum("nk,nk->n", joint, joint) - item_sq)
        result: npt.NDArray[np.float64] = (base + self.weights[table].sum(axis=1) + pair).astype(
            np.float64
        )
        return result
