"""Prequential evaluator (native): golden values for HR, recall, NDCG, MRR, coverage, window."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import PrequentialEvaluator
from tests.oracles import prequential as oracle


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
    assert PrequentialEvaluator(cutoffs=[20, 10, 20]).cutoffs == [10, 20]


@pytest.mark.parametrize(
    "kwargs",
    [{"k": 0}, {"window": 0}, {"cutoffs": ()}, {"cutoffs": (0,)}, {"cutoffs": [5, 0]}],
    ids=str,
)
def test_bad_arguments_raise_as_the_oracle_did(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError) as theirs:
        oracle.PrequentialEvaluator(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError) as ours:
        PrequentialEvaluator(**kwargs)  # type: ignore[arg-type]
    assert str(ours.value) == str(theirs.value)


def test_snapshot_round_trips() -> None:
    ev = PrequentialEvaluator(k=2, cutoffs=(1, 3), window=5)
    for true, ranked in [("a", "abc"), ("c", "abc"), ("z", "de"), ("e", "ed")] * 3:
        ev.evaluate("u", true, list(ranked))
    state = ev.to_state()
    assert state[:4] == b"PQE\x01"
    restored = PrequentialEvaluator.from_state(pickle.loads(pickle.dumps(state)))
    assert restored.report(10) == ev.report(10) and restored.to_state() == state
    assert restored.evaluate("u", "d", ["d"]) == ev.evaluate("u", "d", ["d"])
    assert restored.report(10) == ev.report(10)
    with pytest.raises(ValueError, match="truncated"):
        PrequentialEvaluator.from_state(state[:-3])


@settings(max_examples=200, deadline=None)
@given(
    k=st.integers(1, 6),
    cutoffs=st.lists(st.integers(1, 8), min_size=1, max_size=4),
    window=st.integers(1, 10),
    events=st.lists(
        st.tuples(
            st.sampled_from("abcdefgh"),
            st.lists(st.sampled_from("abcdefghij"), max_size=12),
        ),
        max_size=80,
    ),
    catalogue_size=st.integers(-1, 20),
)
def test_same_numbers_as_the_oracle(
    k: int,
    cutoffs: list[int],
    window: int,
    events: list[tuple[str, list[str]]],
    catalogue_size: int,
) -> None:
    # Exactly: every rank, the sliding window after each event and every total.
    ours = PrequentialEvaluator(k=k, cutoffs=cutoffs, window=window)
    theirs = oracle.PrequentialEvaluator(k=k, cutoffs=cutoffs, window=window)
    for true_item, ranked in events:
        assert ours.evaluate("u", true_item, ranked) == theirs.evaluate("u", true_item, ranked)
        assert ours.window_recall == theirs.window_recall
    a, b = ours.report(catalogue_size), theirs.report(catalogue_size)
    assert (a.events, a.hit_rate, a.recall_at, a.ndcg, a.mrr) == (
        b.events,
        b.hit_rate,
        b.recall_at,
        b.ndcg,
        b.mrr,
    )
    assert (a.coverage, a.window_recall, a.mean_window_recall) == (
        b.coverage,
        b.window_recall,
        b.mean_window_recall,
    )
    assert ours.events == theirs.events and ours.hits == theirs.hits
