"""Prequential evaluator: golden values for HR, recall, NDCG, MRR, coverage, sliding window."""

from __future__ import annotations

import math

import pytest

from operators.prequential import PrequentialEvaluator


def test_golden_values() -> None:
    ev = PrequentialEvaluator(k=2, cutoffs=(1, 3), window=2)
    assert ev.evaluate("u", "a", ["a", "b", "c"]) == 1
    assert ev.evaluate("u", "b", ["a", "b", "c"]) == 2
    assert ev.evaluate("u", "c", ["a", "b", "c"]) == 3
    assert ev.evaluate("u", "z", ["d", "e"]) == 0
    r = ev.report(catalogue_size=10)
    assert r.events == 4
    assert r.hit_rate == pytest.approx(2 / 4)
    assert r.recall_at == {1: pytest.approx(1 / 4), 3: pytest.approx(3 / 4)}
    assert r.ndcg == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert r.mrr == pytest.approx((1 + 1 / 2 + 1 / 3) / 4)
    assert r.coverage == pytest.approx(4 / 10)  # a, b, d, e in some top-2
    assert r.window_recall == 0.0  # last two events missed
    # moving average after each event: 1, 1, 1/2, 0
    assert r.mean_window_recall == pytest.approx((1 + 1 + 0.5 + 0) / 4)


def test_window_slides() -> None:
    ev = PrequentialEvaluator(k=1, cutoffs=(1,), window=3)
    for hit in [1, 1, 1, 0, 0, 0]:
        ev.evaluate("u", "a", ["a"] if hit else ["b"])
    assert ev.window_recall == 0.0
    ev.evaluate("u", "a", ["a"])
    assert ev.window_recall == pytest.approx(1 / 3)


def test_empty_report_and_bad_arguments() -> None:
    assert PrequentialEvaluator().report(0).hit_rate == 0.0
    with pytest.raises(ValueError):
        PrequentialEvaluator(k=0)
    with pytest.raises(ValueError):
        PrequentialEvaluator(window=0)
