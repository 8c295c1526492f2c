"""Prequential (test-then-train) evaluation of a recommender over a stream, one event at a time.

For each event the caller first asks the model for a ranked list, hands it here with the item
the user really chose (:meth:`PrequentialEvaluator.evaluate`), and only then trains the model
on the event (Vinagre, Jorge and Gama 2014, "Evaluation of recommender systems in streaming
environments"). The evaluator keeps running totals and a sliding window so the live flow can
publish the same numbers as the offline harness; it never sees the model.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PrequentialReport:
    """Totals over every evaluated event (``window_*``: the moving average as last seen)."""

    events: int
    hit_rate: float  # HR@k: share of events whose true item is in the top k
    recall_at: dict[int, float]  # recall@k per cutoff (one relevant item: recall@k = HR@k)
    ndcg: float  # NDCG@k with one relevant item: 1/log2(rank + 1)
    mrr: float  # mean reciprocal rank within the list handed in (0 when absent)
    coverage: float  # distinct items ever recommended in a top k / catalogue size
    window_recall: float  # recall@k over the last ``window`` events
    mean_window_recall: float  # the moving average averaged over the stream (Kitazawa 2016)


class PrequentialEvaluator:
    """Hit rate, recall@k, NDCG@k, MRR and coverage of a stream of ranked lists.

    ``k`` is the main cutoff (HR, NDCG, coverage, the sliding window); ``cutoffs`` are the
    recall cutoffs reported. The sliding recall over ``window`` events is the measure of
    Kitazawa (2016): after each evaluated event its value is ``hits in the window / min(n,
    window)``, and :attr:`PrequentialReport.mean_window_recall` averages that curve.

    >>> ev = PrequentialEvaluator(k=2, cutoffs=(1, 2), window=2)
    >>> ev.evaluate("u", "a", ["a", "b"])
    1
    >>> ev.evaluate("u", "c", ["a", "b", "c"])
    3
    >>> r = ev.report(catalogue_size=4)
    >>> (r.hit_rate, r.recall_at[1], round(r.mrr, 3), r.coverage, r.window_recall)
    (0.5, 0.5, 0.667, 0.5, 0.5)
    """

    def __init__(self, k: int = 10, cutoffs: Sequence[int] = (10, 20), window: int = 3000) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not cutoffs or min(cutoffs) < 1:
            raise ValueError(f"cutoffs must be >= 1, got {tuple(cutoffs)}")
        self.k = k
        self.cutoffs = tuple(sorted(set(cutoffs)))
        self.window = window
        self._reset()

    def _reset(self) -> None:
        self.events = 0
        self.hits = 0
        self.recall_hits = dict.fromkeys(self.cutoffs, 0)
        self.ndcg_sum = 0.0
        self.rr_sum = 0.0
        self.recommended: set[Hashable] = set()
        self.recent_hits: deque[int] = deque(maxlen=self.window)
        self.window_hits = 0
        self.window_curve_sum = 0.0

    def evaluate(
        self, user: Hashable, true_item: Hashable, ranked_items: Sequence[Hashable]
    ) -> int:
        """Score one ranked list against the item the user chose; return its rank (0: absent).

        ``user`` is accepted for per-user breakdowns by callers and not used here.
        """
        rank = 0
        for position, item in enumerate(ranked_items, start=1):
            if item == true_item:
                rank = position
                break
        self.events += 1
        hit = 1 if 0 < rank <= self.k else 0
        self.hits += hit
        for cutoff in self.cutoffs:
            if 0 < rank <= cutoff:
                self.recall_hits[cutoff] += 1
        if hit:
            self.ndcg_sum += 1.0 / math.log2(rank + 1)
        if rank:
            self.rr_sum += 1.0 / rank
        self.recommended.update(ranked_items[: self.k])
        if len(self.recent_hits) == self.window:
            self.window_hits -= self.recent_hits[0]
        self.recent_hits.append(hit)
        self.window_hits += hit
        self.window_curve_sum += self.window_recall
        return rank

    @property
    def window_recall(self) -> float:
        """Recall@k over the last ``window`` evaluated events (0 before any)."""
        return self.window_hits / len(self.recent_hits) if self.recent_hits else 0.0

    def report(self, catalogue_size: int) -> PrequentialReport:
        """Totals so far; ``catalogue_size`` is the number of items that could be recommended."""
        n = max(self.events, 1)
        return PrequentialReport(
            events=self.events,
            hit_rate=self.hits / n,
            recall_at={c: h / n for c, h in self.recall_hits.items()},
            ndcg=self.ndcg_sum / n,
            mrr=self.rr_sum / n,
            coverage=len(self.recommended) / catalogue_size if catalogue_size > 0 else 0.0,
            window_recall=self.window_recall,
            mean_window_recall=self.window_curve_sum / n,
        )
