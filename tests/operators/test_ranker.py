"""The native Ranker against the Python ranking it replaced (``tests/oracles/personal_ranking``).

Vectors, popularity terms, evidence and boosts are small integers and binary fractions, so
float32 arithmetic is exact in any summation order and the native answer (rows, scores,
reasons, ties included) must equal the oracle's exactly, on the graph path (accepted or
rejected by the bound, fetched again, brute-forced) and on brute force.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import (
    ANN_FETCH_MIN,
    NO_CATEGORY,
    REASON_NEW,
    REASON_RECOMMENDED,
    REASON_TRENDING,
    Ranker,
)
from tests.oracles.personal_ranking import rank_request

DIM = 4


@st.composite
def requests(draw: st.DrawFn) -> dict:
    size = draw(st.integers(1, 40))
    capacity = size + draw(st.integers(0, 4))  # rows past ``size`` are stale, never served
    ints = st.integers(-3, 3)
    matrix = np.array(
        draw(
            st.lists(
                st.lists(ints, min_size=DIM, max_size=DIM), min_size=capacity, max_size=capacity
            )
        ),
        np.float32,
    )
    row = st.integers(0, size - 1)
    # A power-of-two list length keeps 1 - rank / length exact.
    n_popular = draw(st.sampled_from([0, 1, 2, 4, 8, 16, 32]))
    popular: list[int | None] = []
    for p in draw(st.lists(st.none() | row, min_size=n_popular, max_size=n_popular)):
        popular.append(None if p in popular else p)  # a ranked list names each item once
    n_sources = draw(st.integers(0, 5))
    covisits = []
    for _ in range(n_sources):
        if draw(st.booleans()):
            neighbours = draw(st.lists(row, max_size=8, unique=True))
            weights = [draw(st.integers(1, 8)) / 8 for _ in neighbours]
            covisits.append((np.array(neighbours, np.intp), np.array(weights, np.float64)))
        else:
            covisits.append(None)
    graph_order = draw(st.permutations(list(range(capacity))))  # rows >= size: ignored
    delta = draw(st.lists(st.integers(0, capacity - 1), max_size=4))
    bounds = draw(
        st.lists(st.sampled_from([-math.inf, -2.0, 0.0, 1.0, 3.0, 9.0]), min_size=2, max_size=2)
    )
    with_graph = draw(st.booleans())
    codes = st.integers(NO_CATEGORY, 3)
    return {
        "matrix": matrix,
        "size": size,
        "category_codes": np.array(
            draw(st.lists(codes, min_size=capacity, max_size=capacity)), np.int32
        ),
        "unavailable": np.array(
            draw(st.lists(st.booleans(), min_size=capacity, max_size=capacity))
        ),
        "popular_rows": popular,
        "trending_rows": draw(st.lists(row, max_size=5, unique=True)),
        "user_vector": np.array(draw(st.lists(ints, min_size=DIM, max_size=DIM)), np.float32),
        "evidence": draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])),
        "k": draw(st.integers(1, 12)),
        "graph": (graph_order, delta, bounds) if with_graph else None,
        "covisits": covisits,
        "excluded_rows": draw(st.lists(row, max_size=8, unique=True)),
        "available_only": draw(st.booleans()),
        "wanted_categories": draw(st.none() | st.lists(st.integers(-2, 3), min_size=1, max_size=3)),
        "unwanted_categories": draw(st.lists(st.integers(-2, 3), max_size=2)),
        "max_per_category": draw(st.integers(0, 3)),
        "recent_rows": draw(st.lists(row, max_size=6)),
        "recent_categories": draw(st.lists(codes, max_size=4)),
    }


def _nearest(graph: tuple | None, calls: list[int]):  # type: ignore[no-untyped-def]
    """A stand-in graph: the first n/8 rows of a fixed order, delta rows, a drawn bound."""
    if graph is None:
        return None
    order, delta, bounds = graph

    def nearest(n: int) -> tuple[np.ndarray, float]:
        calls.append(n)
        rows = order[: n // 8]
        bound = -math.inf if len(rows) == len(order) else bounds[min(len(calls), 2) - 1]
        return np.array(rows + delta, np.intp), bound

    return nearest


def native(r: dict) -> tuple[list[int], list[float], list[int], list[int]]:
    ranker = Ranker(
        r["matrix"], r["size"], r["category_codes"], r["unavailable"],
        np.linalg.norm(r["matrix"], axis=1).astype(np.float32), r["popular_rows"], r["trending_rows"],
    )  # fmt: skip
    calls: list[int] = []
    rows, scores, reasons = ranker.rank(
        r["user_vector"].tobytes(),
        r["evidence"],
        r["k"],
        nearest=_nearest(r["graph"], calls),
        covisits=r["covisits"],
        excluded_rows=r["excluded_rows"],
        available_only=r["available_only"],
        wanted_categories=r["wanted_categories"],
        unwanted_categories=r["unwanted_categories"],
        max_per_category=r["max_per_category"],
        recent_rows=r["recent_rows"],
        recent_categories=r["recent_categories"],
    )
    return rows, scores, reasons, calls


def oracle(r: dict) -> tuple[list[int], list[float], list[int], list[int]]:
    calls: list[int] = []
    args = {key: value for key, value in r.items() if key != "graph"}
    rows, scores, reasons = rank_request(**args, nearest=_nearest(r["graph"], calls))
    return rows, scores, reasons, calls


@settings(max_examples=600, deadline=None)
@given(requests())
def test_native_ranking_equals_the_python_ranking(r: dict) -> None:
    assert native(r) == oracle(r)


@settings(max_examples=200, deadline=None)
@given(requests())
def test_picks_follow_the_filters_and_the_cap(r: dict) -> None:
    rows, scores, reasons, _ = native(r)
    assert len(rows) == len(set(rows)) <= r["k"]
    assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
    codes = r["category_codes"]
    for row in rows:
        assert 0 <= row < r["size"] and row not in r["excluded_rows"]
        assert not (r["available_only"] and r["unavailable"][row])
        assert r["wanted_categories"] is None or codes[row] in r["wanted_categories"]
        assert codes[row] not in r["unwanted_categories"]
    if r["max_per_category"]:
        per = [int(codes[row]) for row in rows if codes[row] != NO_CATEGORY]
        assert all(per.count(c) <= r["max_per_category"] for c in per)
    n_viewed = len(r["covisits"]) + len(r["recent_rows"])
    assert all(-3 <= code < n_viewed for code in reasons)


def _ranker(matrix: np.ndarray, codes: list[int], popular=(), trending=()) -> Ranker:  # type: ignore[no-untyped-def]
    matrix = np.ascontiguousarray(matrix, np.float32)
    return Ranker(
        matrix, matrix.shape[0], np.array(codes, np.int32), np.zeros(len(codes), np.bool_),
        np.linalg.norm(matrix, axis=1).astype(np.float32), list(popular), list(trending),
    )  # fmt: skip


def _rank(ranker: Ranker, user: list[float], k: int, **overrides):  # type: ignore[no-untyped-def]
    args = {
        "nearest": None, "covisits": [], "excluded_rows": [], "available_only": True,
        "wanted_categories": None, "unwanted_categories": [], "max_per_category": 0,
        "recent_rows": [], "recent_categories": [],
    }  # fmt: skip
    args.update(overrides)
    return ranker.rank(np.array(user, np.float32).tobytes(), 1.0, k, **args)


def test_golden_request() -> None:
    # Rows: 0 (1,0) 1 (0,1) 2 (1,1) 3 (-1,0); categories 5, 6, 6, 7. The user points at (2, 1).
    ranker = _ranker(np.array([[1, 0], [0, 1], [1, 1], [-1, 0]]), [5, 6, 6, 7], trending=[3])
    rows, scores, reasons = _rank(
        ranker,
        [2.0, 1.0],
        4,
        covisits=[None, (np.array([1], np.intp), np.array([0.5]))],  # source 1 boosts row 1
        recent_rows=[0],
        recent_categories=[5],
    )
    assert rows == [2, 0, 1, 3]
    assert scores == [3.0, 2.0, 1.5, -2.0]
    # 2: similar to the recent row 0 (index 2 + 0 after two sources); 0 is row 0 itself
    # (cosine 1); 1: co-visited from source 1; 3: trending.
    assert reasons == [2, 2, 1, REASON_TRENDING]
    rows, _, reasons = _rank(ranker, [2.0, 1.0], 2, recent_rows=[3], recent_categories=[7])
    assert (rows, reasons) == ([2, 0], [REASON_NEW, REASON_NEW])
    _, _, reasons = _rank(ranker, [2.0, 1.0], 1, recent_rows=[3], recent_categories=[6])
    assert reasons == [REASON_RECOMMENDED]


def test_graph_rounds_then_brute_force() -> None:
    # Inner products 0..99 by row; the graph keeps missing row 99 and says so in its bound.
    ranker = _ranker(np.arange(100, dtype=np.float32)[:, None], [NO_CATEGORY] * 100)
    asked: list[int] = []

    def nearest(n: int) -> tuple[np.ndarray, float]:
        asked.append(n)
        return np.arange(98, 0, -1, dtype=np.intp)[:n], 99.0

    rows, _, _ = _rank(ranker, [1.0], 3, nearest=nearest)
    assert rows == [99, 98, 97]
    assert asked == [ANN_FETCH_MIN, 8 * ANN_FETCH_MIN]


def test_similar_is_the_cosine_top_k() -> None:
    rng = np.random.default_rng(5)
    matrix = rng.normal(size=(50, 8)).astype(np.float32)
    ranker = _ranker(matrix, [NO_CATEGORY] * 50)
    rows, cosines = ranker.similar(7, 5)
    v = matrix.astype(np.float64)
    cosine = v @ v[7] / (np.linalg.norm(v, axis=1) * np.linalg.norm(v[7]))
    cosine[7] = -np.inf
    assert rows == np.argsort(-cosine)[:5].tolist(), "seed 5"
    np.testing.assert_allclose(cosines, cosine[rows], atol=1e-5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.similar(9, 3), "row 9 is not in 0..4"),
        (lambda r: _rank(r, [1.0, 0.0], 1, recent_rows=[4]), "recent_rows: row 4 is not in 0..4"),
        (lambda r: r.rank(b"\0" * 4, 1.0, 1, **_kw()), "must be 8 float32 bytes, got 4"),
        (
            lambda r: _rank(r, [1.0, 0.0], 1, covisits=[(np.array([1], np.intp), np.ones(2))]),
            "differ in length",
        ),
    ],
)
def test_bad_arguments_are_value_errors(call, message: str) -> None:  # type: ignore[no-untyped-def]
    ranker = _ranker(np.eye(4, 2), [NO_CATEGORY] * 4)
    with pytest.raises(ValueError, match=message):
        call(ranker)


def _kw() -> dict:
    return {
        "nearest": None, "covisits": [], "excluded_rows": [], "available_only": True,
        "wanted_categories": None, "unwanted_categories": [], "max_per_category": 0,
        "recent_rows": [], "recent_categories": [],
    }  # fmt: skip


def test_short_per_row_arrays_and_bad_list_rows_are_refused() -> None:
    matrix = np.eye(4, 2, dtype=np.float32)
    codes, unavailable, norms = np.zeros(4, np.int32), np.zeros(3, np.bool_), np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"short per-row arrays: \[\"unavailable\"\]"):
        Ranker(matrix, 4, codes, unavailable, norms, [], [])
    with pytest.raises(ValueError, match="popular_rows: row 4"):
        Ranker(matrix, 4, codes, np.zeros(4, np.bool_), norms, [0, None, 4], [])
    with pytest.raises(ValueError, match="C-contiguous"):
        Ranker(
            np.asfortranarray(np.ones((4, 2), np.float32)),
            4,
            codes,
            np.zeros(4, np.bool_),
            norms,
            [],
            [],
        )


def rules(r: dict) -> list[tuple[int, float]]:
    """Brute force, one rule at a time: (row, score) of each pick, best first."""
    boost: dict[int, float] = {}
    for entry in r["covisits"]:
        if entry is not None:
            for row, weight in zip(entry[0].tolist(), entry[1].tolist(), strict=True):
                boost[row] = boost.get(row, 0.0) + weight
    n_popular = max(1, len(r["popular_rows"]))
    popularity = {
        row: 1 - rank / n_popular for rank, row in enumerate(r["popular_rows"]) if row is not None
    }
    ev = r["evidence"]
    scored = []
    for x in range(r["size"]):
        dot = float(r["matrix"][x].astype(np.float64) @ r["user_vector"].astype(np.float64))
        score = ev * dot + (1 - ev) * popularity.get(x, 0.0) + boost.get(x, 0.0)
        scored.append((x, score))
    scored.sort(key=lambda xs: (-xs[1], xs[0]))  # best first, ties to the lower row
    picked: list[tuple[int, float]] = []
    per_category: dict[int, int] = {}
    for x, score in scored:
        code = int(r["category_codes"][x])
        if len(picked) == r["k"]:
            break
        if x in r["excluded_rows"] or (r["available_only"] and r["unavailable"][x]):
            continue
        if r["wanted_categories"] is not None and code not in r["wanted_categories"]:
            continue
        if code in r["unwanted_categories"]:
            continue
        if r["max_per_category"] > 0 and code != NO_CATEGORY:
            if per_category.get(code, 0) >= r["max_per_category"]:
                continue
            per_category[code] = per_category.get(code, 0) + 1
        picked.append((x, score))
    return picked


@settings(max_examples=300, deadline=None)
@given(requests())
def test_brute_force_follows_the_rules(r: dict) -> None:
    rows, scores, _, _ = native({**r, "graph": None})
    assert list(zip(rows, scores, strict=True)) == rules(r)


def _norms(vectors: np.ndarray) -> np.ndarray:
    return np.linalg.norm(vectors.astype(np.float64), axis=1).astype(np.float32)


@settings(deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 60),
    k=st.integers(0, 70),
    data=st.data(),
)
def test_similar_equals_a_full_sort(seed: int, size: int, k: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(size + 3, 4)).astype(np.float32)  # rows past ``size``: unused
    row = data.draw(st.integers(0, size - 1))
    ranker = Ranker(
        vectors, size, np.zeros(size + 3, np.int32), np.zeros(size + 3, np.bool_),
        _norms(vectors), [], [],
    )  # fmt: skip
    got, cosines = ranker.similar(row, k)
    v = vectors[:size].astype(np.float64)
    cosine = v @ v[row] / (np.linalg.norm(v, axis=1) * np.linalg.norm(v[row]))
    # float32 sums may swap rows whose cosines differ by ~1e-7: compare up to that.
    assert len(got) == min(k, size - 1) == len(set(got)) and row not in got, f"seed {seed}"
    np.testing.assert_allclose(cosines, cosine[got], atol=1e-5)
    assert all(np.diff(cosines) <= 0), "not best first"
    left_out = [r for r in range(size) if r != row and r not in got]
    if got and left_out:
        assert cosine[left_out].max() <= cosine[got].min() + 1e-5, f"seed {seed}"


def test_similar_ties_go_to_the_lower_row_and_non_finite_rows_are_left_out() -> None:
    vectors = np.array(
        [[1, 0], [2, 0], [np.nan, 1], [0, 1], [3, 0], [1, 1], [0, 0]], dtype=np.float32
    )
    ranker = Ranker(
        vectors, 7, np.zeros(7, np.int32), np.zeros(7, np.bool_), _norms(vectors), [], []
    )
    rows, cosines = ranker.similar(0, 10)
    # Rows 1 and 4 point the same way as row 0 (cosine 1): the lower first. Row 2 is NaN;
    # row 6 has no direction (cosine 0, finite thanks to the epsilon).
    assert rows == [1, 4, 5, 3, 6]
    assert cosines[:2] == pytest.approx([1.0, 1.0], rel=1e-6)
    assert ranker.similar(0, 2)[0] == [1, 4]
