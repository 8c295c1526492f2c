"""Top-K selection and similarity explanations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from operators.ranking import explain_by_similarity, top_cosine, top_k


def reference_top_k(scores: np.ndarray, k: int, exclude: list[int]) -> list[int]:
    """Full sort: finite, not excluded, score descending, then row ascending."""
    rows = [r for r in range(scores.size) if np.isfinite(scores[r]) and r not in set(exclude)]
    rows.sort(key=lambda r: (-float(scores[r]), r))
    return rows[: max(k, 0)]


# Few distinct values so ties are common; -inf marks rows that must never be returned.
score_values = st.sampled_from([-np.inf, -2.5, -1.0, 0.0, 0.5, 1.0, 3.0]) | st.floats(
    -10, 10, width=32
)
score_arrays = hnp.arrays(np.float32, st.integers(0, 60), elements=score_values)


@given(scores=score_arrays, k=st.integers(-2, 80), data=st.data())
def test_top_k_equals_the_top_of_a_full_sort(scores: np.ndarray, k: int, data) -> None:
    exclude = data.draw(st.lists(st.integers(0, max(scores.size - 1, 0)), max_size=10))
    if scores.size == 0:
        exclude = []
    original = scores.copy()
    best = top_k(scores, k, exclude)
    expected = reference_top_k(scores, k, exclude)
    assert best.dtype == np.intp
    # Same scores in the same order; which of several rows tied at the cut-off is chosen is
    # checked separately below.
    assert scores[best].tolist() == scores[expected].tolist()
    assert len(set(best.tolist())) == len(best)
    assert not set(best.tolist()) & set(exclude)
    assert np.isfinite(scores[best]).all()
    # Among the rows returned, ties are ordered by row.
    for a, b in zip(best.tolist(), best.tolist()[1:], strict=False):
        assert scores[a] > scores[b] or (scores[a] == scores[b] and a < b)
    np.testing.assert_array_equal(scores, original)  # exclusions do not touch the caller's array


# BUG (reported, minor): top_k orders ties by row only *among* the candidates argpartition
# picked (operators/ranking.py:31-35); which of several rows tied at the cut-off is picked is
# up to argpartition. So the result is not the top of the documented order (score desc, row
# asc) and top_k(k) is not a prefix of top_k(k + 1) -- a "show more" page can drop an item.
# Found by hypothesis: scores [-2.5, -2.5], k=1 gives [1], k=2 gives [0, 1].
@given(scores=score_arrays, k=st.integers(1, 80))
@example(scores=np.array([-2.5, -2.5], dtype=np.float32), k=1)
def test_ties_at_the_cut_off_follow_the_row_order(scores: np.ndarray, k: int) -> None:
    assert top_k(scores, k).tolist() == reference_top_k(scores, k, [])
    assert top_k(scores, k).tolist() == top_k(scores, k + 1).tolist()[:k]


def test_golden_example() -> None:
    scores = np.array([0.1, 0.9, -np.inf, 0.9, 0.5, 0.7], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [1, 3, 5]  # tie broken by row
    assert top_k(scores, 3, exclude_rows=[1, 5]).tolist() == [3, 4, 0]


def test_k_larger_than_n_returns_every_finite_row() -> None:
    scores = np.array([0.2, -np.inf, 0.3], dtype=np.float32)
    assert top_k(scores, 10).tolist() == [2, 0]


@pytest.mark.parametrize("k", [0, -1])
def test_k_not_positive_returns_nothing(k: int) -> None:
    assert top_k(np.ones(4, dtype=np.float32), k).tolist() == []


def test_empty_scores_return_nothing() -> None:
    result = top_k(np.empty(0, dtype=np.float32), 5)
    assert result.tolist() == [] and result.dtype == np.intp


def test_everything_excluded_or_infinite_returns_nothing() -> None:
    scores = np.array([1.0, -np.inf, 2.0], dtype=np.float32)
    assert top_k(scores, 3, exclude_rows=[0, 2]).tolist() == []


def test_repeated_exclusions_are_harmless() -> None:
    scores = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    assert top_k(scores, 2, exclude_rows=[2, 2, 2]).tolist() == [1, 0]


# Regression (found by these tests, fixed): top_k promises "the k highest *finite* scores" (operators/ranking.py:20) and
# counts only finite rows, but selects with argpartition, which ranks NaN (and +inf) above
# every number: with one NaN row among [NaN, 1, 2] and k=3 it returns [2, 0] -- the NaN row,
# and the finite row 1 is lost. NaN scores come from NaN factors (see the ISGD stability bug).
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "+inf"])
def test_non_finite_scores_are_never_returned(bad: float) -> None:
    scores = np.array([bad, 1.0, 2.0], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [2, 1]


# --- explanations ------------------------------------------------------------------------------


def _explain(recommended: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """explain_by_similarity over rows of one matrix: the recommended on top of the history."""
    vectors = np.concatenate((history, recommended)).astype(np.float32)
    n_hist = history.shape[0]
    rows = np.arange(n_hist, n_hist + recommended.shape[0], dtype=np.intp)
    return explain_by_similarity(vectors, rows, np.arange(n_hist, dtype=np.intp))


def test_explain_picks_the_most_similar_history_item() -> None:
    history = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    recommended = np.array([[10.0, 0.5], [-0.1, 3.0], [2.0, 2.1], [-1.0, -1.0]], dtype=np.float32)
    best, sims = _explain(recommended, history)
    assert best.tolist() == [0, 1, 2, 0]
    assert best.dtype == np.intp and sims.dtype == np.float32
    # Cosine, so the length of a vector does not matter: [10, .5] is closest to [1, 0].
    assert sims[0] == pytest.approx(10 / np.hypot(10, 0.5), rel=1e-5)
    assert sims[2] == pytest.approx(4.1 / (np.hypot(2, 2.1) * np.sqrt(2)), rel=1e-5)
    assert sims[3] == pytest.approx(-1 / np.sqrt(2), rel=1e-5)


vectors = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 12), st.just(4)),
    elements=st.floats(-5, 5, width=32),
)


@settings(deadline=None)  # the first call compiles
@given(recommended=vectors, history=vectors)
def test_explain_returns_an_argmax_of_cosine(recommended: np.ndarray, history: np.ndarray) -> None:
    best, sims = _explain(recommended, history)
    for row, vec in enumerate(recommended.astype(np.float64)):
        cosines = [
            float(vec @ h) / ((np.linalg.norm(vec) + 1e-12) * (np.linalg.norm(h) + 1e-12))
            for h in history.astype(np.float64)
        ]
        assert 0 <= best[row] < history.shape[0]
        # The chosen item is (up to float32 rounding) as similar as the best one.
        assert cosines[best[row]] == pytest.approx(max(cosines), abs=1e-5)
        assert float(sims[row]) == pytest.approx(cosines[best[row]], abs=1e-5)


@pytest.mark.parametrize(("n_rec", "n_hist"), [(3, 0), (0, 3), (0, 0)])
def test_explain_with_nothing_to_compare(n_rec: int, n_hist: int) -> None:
    best, sims = _explain(
        np.ones((n_rec, 4), dtype=np.float32), np.ones((n_hist, 4), dtype=np.float32)
    )
    assert best.tolist() == ([-1] * n_rec if n_hist == 0 else [])
    assert sims.tolist() == [0.0] * len(best)


# --- most similar rows (cosine) ------------------------------------------------------------


def _norms(vectors: np.ndarray) -> np.ndarray:
    return np.linalg.norm(vectors.astype(np.float64), axis=1).astype(np.float32)


@settings(deadline=None)  # the first call compiles
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 60),
    k=st.integers(0, 70),
    data=st.data(),
)
def test_top_cosine_equals_a_full_sort(seed: int, size: int, k: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(size + 3, 4)).astype(np.float32)  # rows past ``size``: unused
    row = data.draw(st.integers(0, size - 1))
    rows, cosines = top_cosine(vectors, size, _norms(vectors), row, k)
    v = vectors[:size].astype(np.float64)
    cosine = v @ v[row] / (np.linalg.norm(v, axis=1) * np.linalg.norm(v[row]))
    # float32 sums may swap rows whose cosines differ by ~1e-7: compare up to that.
    got = rows.tolist()
    assert len(got) == min(k, size - 1) == len(set(got)) and row not in got, f"seed {seed}"
    np.testing.assert_allclose(cosines, cosine[got], atol=1e-5)
    assert all(np.diff(cosines) <= 0), "not best first"
    left_out = [r for r in range(size) if r != row and r not in got]
    if got and left_out:
        assert cosine[left_out].max() <= cosine[got].min() + 1e-5, f"seed {seed}"


def test_top_cosine_ties_go_to_the_lower_row_and_non_finite_rows_are_left_out() -> None:
    vectors = np.array(
        [[1, 0], [2, 0], [np.nan, 1], [0, 1], [3, 0], [1, 1], [0, 0]], dtype=np.float32
    )
    rows, cosines = top_cosine(vectors, 7, _norms(vectors), 0, 10)
    # Rows 1 and 4 point the same way as row 0 (cosine 1): the lower first. Row 2 is NaN;
    # row 6 has no direction (cosine 0, finite thanks to the epsilon).
    assert rows.tolist() == [1, 4, 5, 3, 6]
    assert cosines[:2].tolist() == pytest.approx([1.0, 1.0], rel=1e-6)
    assert top_cosine(vectors, 7, _norms(vectors), 0, 2)[0].tolist() == [1, 4]
