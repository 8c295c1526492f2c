"""Incremental matrix factorisation for implicit feedback, one event at a time.

Extends ISGD (Vinagre, Jorge and Gama 2014, ``operators/src/isgd.rs``) for e-commerce streams:

* an item bias ``b_i``, so the model learns how popular an item is *now*, and the user factors
  only explain what differs from that; prediction ``r_ui = b_i + <p_u, q_i>``;
* event-type weights (view < add_to_cart < favourite < purchase) scale the positive step;
* negative feedback suited to streams: after each positive, ``negatives`` items get a step
  towards 0 — either the least recently seen items of a global queue (RAISGD, Vinagre, Jorge
  and Gama 2015, "Collaborative filtering with recency-based negative feedback"), or items
  drawn from a ring buffer of recent events, i.e. sampled by recent popularity;
* a per-entity learning-rate schedule ``eta_n = max(eta_min, eta / sqrt(1 + n / tau))``: a new
  user or item moves fast, a well-known one is not thrown around by one event;
* new users start at the vector of the first item they touch, new items at the vector of the
  item the same user touched just before (co-visitation), plus a small hashed noise from
  :func:`operators.initial_vector` so two newcomers never coincide.

The loss of one (user, item) pair is ``w/2 (y - r_ui)^2 + lambda/2 (|p_u|^2 + |q_i|^2 +
b_i^2)``; :func:`pair_loss` and :func:`pair_gradients` state it so tests can check the steps
against finite differences. Vectors live in dense growable arrays so the offline harness can
score every item with one matrix-vector product.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from operators import DEFAULT_EVENT_WEIGHTS, IsgdParams, initial_vector

Vector = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float32]
NegativeSampling = Literal["recency", "popularity", "none"]
_ERR_CLIP: Final = 4.0


@dataclass(frozen=True, slots=True)
class ImplicitMFParams:
    """Hyperparameters; ``learn_rate``/``regularization`` are eta/lambda as in ISGD."""

    factors: int = 32
    learn_rate: float = 0.05
    regularization: float = 0.01
    bias_learn_rate: float = 0.05
    negatives: int = 4
    negative_weight: float = 1.0
    negative_sampling: NegativeSampling = "recency"
    popularity_buffer: int = 5000
    lr_decay_events: float = 0.0  # tau; 0 keeps the learning rate constant
    min_learn_rate_ratio: float = 0.2
    init_std: float = 0.1
    init_from_neighbours: bool = True
    max_norm: float = 10.0
    seed: int = 42
    event_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_EVENT_WEIGHTS)

    def __post_init__(self) -> None:
        numbers = (
            self.learn_rate,
            self.regularization,
            self.bias_learn_rate,
            self.negative_weight,
            self.lr_decay_events,
            self.min_learn_rate_ratio,
            self.init_std,
            self.max_norm,
            *self.event_weights.values(),
        )
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError("hyperparameters and event weights must be finite")
        if self.factors < 1:
            raise ValueError(f"factors must be >= 1, got {self.factors}")
        if not 0 < self.learn_rate < 1 or not 0 <= self.bias_learn_rate < 1:
            raise ValueError("learn rates must be in (0, 1)")
        if self.regularization < 0 or self.negative_weight < 0 or self.lr_decay_events < 0:
            raise ValueError("regularization, negative_weight, lr_decay_events must be >= 0")
        if self.negatives < 0 or self.popularity_buffer < 1:
            raise ValueError("negatives must be >= 0 and popularity_buffer >= 1")
        if self.negative_sampling not in ("recency", "popularity", "none"):
            raise ValueError(f"unknown negative_sampling {self.negative_sampling!r}")
        if not 0 < self.min_learn_rate_ratio <= 1:
            raise ValueError("min_learn_rate_ratio must be in (0, 1]")
        if self.init_std <= 0 or self.max_norm <= 0:
            raise ValueError("init_std and max_norm must be > 0")
        if any(w <= 0 for w in self.event_weights.values()):
            raise ValueError("event weights must be > 0")

    def weight_of(self, event_type: str) -> float:
        """Step multiplier of an event type; unknown types count as a view."""
        return self.event_weights.get(event_type, 1.0)

    def as_isgd(self) -> IsgdParams:
        """The ISGD parameters that draw the same initial vectors."""
        return IsgdParams(
            factors=self.factors, init_std=self.init_std, seed=self.seed, max_norm=self.max_norm
        )


def pair_loss(
    user_vec: Vector,
    item_vec: Vector,
    item_bias: float,
    target: float,
    weight: float,
    regularization: float,
) -> float:
    """Weighted squared error of one pair plus the L2 penalty of the parameters it touches."""
    err = target - (item_bias + float(np.dot(user_vec, item_vec)))
    penalty = float(np.dot(user_vec, user_vec) + np.dot(item_vec, item_vec)) + item_bias**2
    return 0.5 * weight * err * err + 0.5 * regularization * penalty


def pair_gradients(
    user_vec: Vector,
    item_vec: Vector,
    item_bias: float,
    target: float,
    weight: float,
    regularization: float,
) -> tuple[Vector, Vector, float]:
    """Gradients of :func:`pair_loss` w.r.t. (user_vec, item_vec, item_bias)."""
    err = target - (item_bias + float(np.dot(user_vec, item_vec)))
    grad_user = -weight * err * item_vec + regularization * user_vec
    grad_item = -weight * err * user_vec + regularization * item_vec
    grad_bias = -weight * err + regularization * item_bias
    return grad_user.astype(np.float32), grad_item.astype(np.float32), grad_bias


def _limit_rows(rows: Matrix, max_norm: float) -> None:
    """Rescale rows longer than ``max_norm``; zero rows that overflowed (inf/NaN) in place."""
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    bad = ~np.isfinite(norms)
    if bad.any():
        rows[bad] = 0.0
        norms[bad] = 0.0
    long = norms > max_norm
    if long.any():
        rows[long] *= (max_norm / norms[long])[:, None].astype(np.float32)


class ImplicitMF:
    """Incremental MF with item biases and negative feedback over an implicit event stream.

    >>> mf = ImplicitMF(ImplicitMFParams(factors=8, negatives=1))
    >>> for _ in range(30):
    ...     _ = mf.learn("alice", "shoes", "purchase")
    ...     _ = mf.learn("bob", "hat", "view")
    >>> mf.recommend("alice", 1)
    ['shoes']
    """

    def __init__(self, params: ImplicitMFParams | None = None) -> None:
        self.params = params or ImplicitMFParams()
        self._reset()

    def _reset(self) -> None:
        k = self.params.factors
        self.user_index: dict[str, int] = {}
        self.item_index: dict[str, int] = {}
        self.item_ids: list[str] = []
        self.user_factors: Matrix = np.zeros((64, k), dtype=np.float32)
        self.item_factors: Matrix = np.zeros((64, k), dtype=np.float32)
        self.item_bias = np.zeros(64, dtype=np.float32)
        self.user_events = np.zeros(64, dtype=np.int64)
        self.item_events = np.zeros(64, dtype=np.int64)
        self.last_item: dict[int, int] = {}  # user -> item index of the user's previous event
        self._recency: OrderedDict[int, None] = OrderedDict()  # least recent item first
        self._recent_items = np.zeros(self.params.popularity_buffer, dtype=np.int64)
        self._recent_count = 0
        self._rng = np.random.default_rng(self.params.seed)

    # --- entities --------------------------------------------------------------------------

    @property
    def n_items(self) -> int:
        """Number of items seen so far."""
        return len(self.item_ids)

    def _grow_users(self) -> None:
        n = self.user_factors.shape[0]
        if len(self.user_index) >= n:
            self.user_factors = np.vstack([self.user_factors, np.zeros_like(self.user_factors)])
            self.user_events = np.concatenate([self.user_events, np.zeros(n, dtype=np.int64)])

    def _grow_items(self) -> None:
        n = self.item_factors.shape[0]
        if len(self.item_ids) >= n:
            self.item_factors = np.vstack([self.item_factors, np.zeros_like(self.item_factors)])
            self.item_bias = np.concatenate([self.item_bias, np.zeros(n, dtype=np.float32)])
            self.item_events = np.concatenate([self.item_events, np.zeros(n, dtype=np.int64)])

    def _user(self, user_id: str, first_item: int | None) -> int:
        index = self.user_index.get(user_id)
        if index is not None:
            return index
        self._grow_users()
        index = self.user_index[user_id] = len(self.user_index)
        vec = initial_vector(user_id, "user", self.params.as_isgd())
        if self.params.init_from_neighbours and first_item is not None:
            # Start where the first item is: the first recommendations are its neighbours.
            vec = vec + self.item_factors[first_item]
        self.user_factors[index] = vec
        return index

    def _item(self, item_id: str, neighbour: int | None) -> int:
        index = self.item_index.get(item_id)
        if index is not None:
            return index
        self._grow_items()
        index = self.item_index[item_id] = len(self.item_ids)
        self.item_ids.append(item_id)
        vec = initial_vector(item_id, "item", self.params.as_isgd())
        if self.params.init_from_neighbours and neighbour is not None:
            # A new item starts next to the item its first user touched just before it.
            vec = vec + 0.5 * self.item_factors[neighbour]
        self.item_factors[index] = vec
        self.item_bias[index] = 0.0
        return index

    def _rate(self, events: int) -> float:
        p = self.params
        if p.lr_decay_events <= 0:
            return p.learn_rate
        decayed = p.learn_rate / math.sqrt(1.0 + events / p.lr_decay_events)
        return max(p.learn_rate * p.min_learn_rate_ratio, decayed)

    # --- learning --------------------------------------------------------------------------

    def _negatives(self, positive: int) -> list[int]:
        p = self.params
        if p.negatives == 0 or p.negative_sampling == "none" or self.n_items < 2:
            return []
        if p.negative_sampling == "recency":
            chosen: list[int] = []
            for item in self._recency:
                if item != positive:
                    chosen.append(item)
                    if len(chosen) == p.negatives:
                        break
            for item in chosen:  # used negatives go to the back of the queue (RAISGD)
                self._recency.move_to_end(item)
            return chosen
        filled = min(self._recent_count, p.popularity_buffer)
        if filled == 0:
            return []
        draws = self._recent_items[self._rng.integers(0, filled, size=p.negatives)]
        return [int(i) for i in draws if i != positive]

    def learn(self, user_id: str, item_id: str, event_type: str = "view") -> float:
        """One positive event followed by its negative steps; returns the positive's error."""
        p = self.params
        weight = p.weight_of(event_type)
        known_user = self.user_index.get(user_id)
        previous = self.last_item.get(known_user) if known_user is not None else None
        i = self._item(item_id, previous)
        u = self._user(user_id, i)
        user_vec = self.user_factors[u]
        item_vec = self.item_factors[i]

        eta_u = self._rate(int(self.user_events[u]))
        eta_i = self._rate(int(self.item_events[i]))
        err = 1.0 - (float(self.item_bias[i]) + float(np.dot(user_vec, item_vec)))
        err = max(-_ERR_CLIP, min(_ERR_CLIP, err))
        step = np.float32(weight * err)
        user_before = user_vec.copy()
        user_vec += np.float32(eta_u) * (step * item_vec - np.float32(p.regularization) * user_vec)
        item_vec += np.float32(eta_i) * (
            step * user_before - np.float32(p.regularization) * item_vec
        )
        self.item_bias[i] += np.float32(
            p.bias_learn_rate * (weight * err - p.regularization * float(self.item_bias[i]))
        )

        negatives = self._negatives(i)
        if negatives and p.negative_weight > 0:
            neg = np.asarray(negatives, dtype=np.int64)
            neg_vecs = self.item_factors[neg]
            neg_err = np.clip(-(self.item_bias[neg] + neg_vecs @ user_vec), -_ERR_CLIP, _ERR_CLIP)
            neg_step = (p.negative_weight * neg_err).astype(np.float32)
            reg = np.float32(p.regularization)
            user_vec += np.float32(eta_u) * (neg_step @ neg_vecs - reg * len(neg) * user_vec)
            new_vecs = neg_vecs + np.float32(eta_i) * (
                neg_step[:, None] * user_before[None, :] - reg * neg_vecs
            )
            _limit_rows(new_vecs, p.max_norm)
            self.item_factors[neg] = new_vecs
            new_bias = self.item_bias[neg] + np.float32(p.bias_learn_rate) * (
                neg_step - reg * self.item_bias[neg]
            )
            self.item_bias[neg] = np.clip(np.nan_to_num(new_bias), -p.max_norm, p.max_norm)
        _limit_rows(self.user_factors[u : u + 1], p.max_norm)  # slices are views: in place
        _limit_rows(self.item_factors[i : i + 1], p.max_norm)
        bias = float(self.item_bias[i])
        self.item_bias[i] = max(-p.max_norm, min(p.max_norm, bias)) if math.isfinite(bias) else 0.0

        self.user_events[u] += 1
        self.item_events[i] += 1
        self.last_item[u] = i
        self._recency[i] = None
        self._recency.move_to_end(i)
        self._recent_items[self._recent_count % p.popularity_buffer] = i
        self._recent_count += 1
        return err

    # --- scoring ---------------------------------------------------------------------------

    def scores(self, user_id: str) -> npt.NDArray[np.float32]:
        """Predicted preference of the user for every item seen so far.

        An unknown user gets the biases alone: the model's view of what is popular now.
        """
        n = self.n_items
        u = self.user_index.get(user_id)
        if u is None:
            return self.item_bias[:n].copy()
        result: npt.NDArray[np.float32] = self.item_factors[:n] @ self.user_factors[u]
        result += self.item_bias[:n]
        return result

    def recommend(self, user_id: str, k: int, exclude: Iterable[str] = ()) -> list[str]:
        """The ``k`` best items for the user, best first, without ``exclude``."""
        banned = [self.item_index[i] for i in exclude if i in self.item_index]
        indices = top_k(self.scores(user_id), k, banned)
        return [self.item_ids[i] for i in indices]


def top_k(scores: npt.NDArray[np.floating], k: int, exclude: Iterable[int] = ()) -> list[int]:
    """Indices of the ``k`` largest scores, best first, never an ``exclude``d one.

    NaN ranks last; ties break by lower index so results are deterministic.
    """
    work = np.nan_to_num(scores.astype(np.float64, copy=True), nan=-np.inf)
    banned = np.unique(np.fromiter(exclude, dtype=np.int64))
    if banned.size:
        work[banned] = -np.inf
    allowed = work.size - banned.size
    k = min(k, max(allowed, 0))
    if k <= 0:
        return []
    if k < work.size:
        part = np.argpartition(-work, k - 1)[:k]
    else:
        part = np.arange(work.size)
    order = np.lexsort((part, -work[part]))
    return [int(part[j]) for j in order if work[part[j]] > -np.inf][:k]
