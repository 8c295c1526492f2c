"""The compiled candidate ranking against a plain-Python statement of its rules.

Vectors, popularity and boosts are small integers and halves, so float32 arithmetic is exact
and the kernel's order, ties included, must equal the reference's exactly.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.candidate_ranking import (
    NO_CATEGORY,
    NO_SOURCE,
    best_popular,
    combine_covisits,
    rank_candidates,
)

DIM = 4


@st.composite
def requests(draw: st.DrawFn) -> dict:
    size = draw(st.integers(1, 30))
    capacity = size + draw(st.integers(0, 5))  # rows past ``size`` are stale, never served
    ints = st.integers(-3, 3)
    matrix = np.array(
        draw(
            st.lists(
                st.lists(ints, min_size=DIM, max_size=DIM), min_size=capacity, max_size=capacity
            )
        ),
        np.float32,
    )
    special = st.sampled_from([math.inf, -math.inf, math.nan])
    popularity = np.array(
        draw(
            st.lists(
                st.one_of(st.integers(0, 8).map(lambda n: n / 8), special),
                min_size=capacity,
                max_size=capacity,
            )
        ),
        np.float32,
    )
    row = st.integers(0, capacity - 1)
    graph = draw(st.lists(row, max_size=12))
    popular = draw(st.lists(row, max_size=8))
    covisit = draw(st.dictionaries(row, st.integers(1, 4).map(lambda n: n / 4), max_size=8))
    covisit_rows = np.array(sorted(covisit), np.intp)
    return {
        "matrix": matrix,
        "size": size,
        "user_vector": np.array(draw(st.lists(ints, min_size=DIM, max_size=DIM)), np.float32),
        "evidence": draw(st.sampled_from([0.0, 0.5, 1.0])),
        "popularity": popularity,
        "graph_rows": np.array(graph, np.intp),
        "popular_rows": np.array(popular, np.intp),
        "covisit_rows": covisit_rows,
        "covisit_boost": np.array([covisit[r] for r in covisit_rows], np.float32),
        "covisit_source": np.array([r % 3 for r in covisit_rows], np.intp),
        "excluded_rows": np.array(sorted(draw(st.sets(row, max_size=6))), np.intp),
        "unavailable": np.array(
            draw(st.lists(st.booleans(), min_size=capacity, max_size=capacity))
        ),
        "check_available": draw(st.booleans()),
        "category_codes": np.array(
            draw(st.lists(st.integers(NO_CATEGORY, 3), min_size=capacity, max_size=capacity)),
            np.int32,
        ),
        "wanted_codes": np.array(sorted(draw(st.sets(st.integers(-2, 3), max_size=3))), np.int32),
        "check_wanted": draw(st.booleans()),
        "unwanted_codes": np.array(sorted(draw(st.sets(st.integers(-2, 3), max_size=2))), np.int32),
        "cap": draw(st.integers(0, 3)),
        "k": draw(st.integers(1, 12)),
    }


def reference(r: dict) -> list[tuple[int, float, int]]:
    """The rules, one at a time: (row, score, source) of each pick, best first."""
    rows = sorted({int(x) for x in (*r["graph_rows"], *r["popular_rows"], *r["covisit_rows"])})
    rows = [x for x in rows if x < r["size"]]
    boost = dict(zip(r["covisit_rows"].tolist(), r["covisit_boost"].tolist(), strict=True))
    source = dict(zip(r["covisit_rows"].tolist(), r["covisit_source"].tolist(), strict=True))
    ev = r["evidence"]
    scored = []
    for x in rows:
        dot = float(r["matrix"][x].astype(np.float64) @ r["user_vector"].astype(np.float64))
        score = ev * dot + (1 - ev) * float(r["popularity"][x]) + boost.get(x, 0.0)
        scored.append((x, score))
    # Best first, ties to the lower row; NaN and -inf last.
    scored.sort(key=lambda xs: (not xs[1] > -math.inf, -xs[1] if xs[1] > -math.inf else 0, xs[0]))
    picked: list[tuple[int, float, int]] = []
    per_category: dict[int, int] = {}
    for x, score in scored:
        if len(picked) == r["k"] or not score > -math.inf:
            break
        code = int(r["category_codes"][x])
        if score == math.inf or x in r["excluded_rows"]:
            continue
        if r["check_available"] and r["unavailable"][x]:
            continue
        if r["check_wanted"] and code not in r["wanted_codes"]:
            continue
        if code in r["unwanted_codes"]:
            continue
        if r["cap"] > 0 and code != NO_CATEGORY:
            if per_category.get(code, 0) >= r["cap"]:
                continue
            per_category[code] = per_category.get(code, 0) + 1
        picked.append((x, score, source.get(x, NO_SOURCE)))
    return picked


@settings(max_examples=400, deadline=None)
@given(requests())
def test_rank_candidates_follows_the_rules(r: dict) -> None:
    rows, scores, sources = rank_candidates(**r)
    got = list(zip(rows.tolist(), scores.tolist(), sources.tolist(), strict=True))
    assert got == reference(r)


def _plain(matrix: np.ndarray, user_vector: np.ndarray, k: int) -> dict:
    """A request without popularity, co-visitation or filters over every row."""
    size = matrix.shape[0]
    return {
        "matrix": matrix,
        "size": size,
        "user_vector": user_vector,
        "evidence": 1.0,
        "popularity": np.zeros(size, np.float32),
        "graph_rows": np.arange(size, dtype=np.intp)[::-1].copy(),
        "popular_rows": np.empty(0, np.intp),
        "covisit_rows": np.empty(0, np.intp),
        "covisit_boost": np.empty(0, np.float32),
        "covisit_source": np.empty(0, np.intp),
        "excluded_rows": np.empty(0, np.intp),
        "unavailable": np.zeros(size, np.bool_),
        "check_available": True,
        "category_codes": np.full(size, NO_CATEGORY, np.int32),
        "wanted_codes": np.empty(0, np.int32),
        "check_wanted": False,
        "unwanted_codes": np.empty(0, np.int32),
        "cap": 0,
        "k": k,
    }


def test_ties_go_to_the_lower_row_among_many_candidates() -> None:
    # Past a few dozen elements an unstable sort reorders ties; the order must not change.
    matrix = np.ones((300, DIM), np.float32)
    matrix[::7] = 2.0
    rows, _, _ = rank_candidates(**_plain(matrix, np.ones(DIM, np.float32), 100))
    best = list(range(0, 300, 7))
    assert rows.tolist() == best + [r for r in range(300) if r % 7][: 100 - len(best)]


def test_a_full_category_skips_to_the_next_best() -> None:
    r = {
        "matrix": np.eye(4, dtype=np.float32),
        "size": 4,
        "user_vector": np.array([4, 3, 2, 1], np.float32),
        "evidence": 1.0,
        "popularity": np.zeros(4, np.float32),
        "graph_rows": np.arange(4, dtype=np.intp),
        "popular_rows": np.empty(0, np.intp),
        "covisit_rows": np.empty(0, np.intp),
        "covisit_boost": np.empty(0, np.float32),
        "covisit_source": np.empty(0, np.intp),
        "excluded_rows": np.empty(0, np.intp),
        "unavailable": np.zeros(4, np.bool_),
        "check_available": True,
        "category_codes": np.array([7, 7, NO_CATEGORY, 8], np.int32),
        "wanted_codes": np.empty(0, np.int32),
        "check_wanted": False,
        "unwanted_codes": np.empty(0, np.int32),
        "cap": 1,
        "k": 3,
    }
    rows, scores, _ = rank_candidates(**r)
    assert rows.tolist() == [0, 2, 3]  # row 1 (4 > 2 > 1, but category 7 is full)
    assert scores.tolist() == [4.0, 2.0, 1.0]


@settings(deadline=None)  # the first call compiles
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 20), st.integers(1, 8)), max_size=10),
        max_size=5,
    )
)
def test_combine_covisits_sums_boosts_and_keeps_the_first_source(lists: list) -> None:
    rows = np.array([row for part in lists for row, _ in part], np.intp)
    weights = np.array([w / 8 for part in lists for _, w in part], np.float64)
    sources = np.array([n for n, part in enumerate(lists) for _ in part], np.intp)
    got_rows, boost, first = combine_covisits(rows, weights, sources)
    total: dict[int, float] = {}
    source: dict[int, int] = {}
    for n, part in enumerate(lists):
        for row, w in part:
            total[row] = total.get(row, 0.0) + w / 8
            source.setdefault(row, n)
    assert got_rows.tolist() == sorted(total)
    assert boost.tolist() == [total[row] for row in sorted(total)]
    assert first.tolist() == [source[row] for row in sorted(total)]
    assert boost.dtype == np.float32


@settings(deadline=None)
@given(
    st.lists(st.integers(-4, 4), min_size=1, max_size=40),
    st.sampled_from([0.0, 0.5, 1.0]),
    st.integers(0, 45),
)
def test_best_popular_takes_the_n_best_and_bounds_the_rest(
    dots: list[int], evidence: float, n: int
) -> None:
    size = len(dots)
    vectors = np.zeros((size, DIM), np.float32)
    vectors[:, 0] = dots
    popularity = (np.arange(size)[::-1] % 3 / 2).astype(np.float32)  # ties on purpose
    rows = np.arange(size, dtype=np.intp) * 10
    user_vector = np.array([1, 0, 0, 0], np.float32)
    taken, bound = best_popular(rows, vectors, popularity, user_vector, evidence, n)
    blended = evidence * np.array(dots, np.float64) + (1 - evidence) * popularity
    if n >= size:
        assert taken is rows and bound == -math.inf
        return
    ranked = sorted(blended.tolist(), reverse=True)
    assert len(set(taken.tolist())) == n
    assert sorted((blended[taken // 10]).tolist(), reverse=True) == ranked[:n]
    assert bound == ranked[n]  # the best left out
