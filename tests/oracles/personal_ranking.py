"""The personal ranking of one request as ``serving/recommender.py`` composed it before the
native ``Ranker`` (issue 14): the kernels of ``candidate_ranking`` and ``ranking`` called from
Python, graph rounds, the brute-force fallback and the reasons, all in matrix rows.

Reference oracle for ``tests/operators/test_ranker.py``; reasons are coded as the native
ranker codes them (>= 0: an index into sources + recent items; -1 trending, -2 new for you,
-3 recommended for you).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from tests.oracles.candidate_ranking import (
    NO_CATEGORY,
    best_popular,
    combine_covisits,
    rank_candidates,
)
from tests.oracles.ranking import explain_by_similarity, top_k

SIMILARITY_REASON_MIN = 0.3
CANDIDATE_FACTOR = 4
ANN_FETCH_MIN = 30
ANN_FETCH_ROUNDS = 2
REASON_TRENDING, REASON_NEW, REASON_RECOMMENDED = -1, -2, -3

Rows = npt.NDArray[np.intp]
Nearest = Callable[[int], tuple[Rows, float]]


def _pick(
    scores: npt.NDArray[np.float32],
    category_codes: npt.NDArray[np.int32],
    k: int,
    cap: int | None,
    blocked_rows: Rows,
) -> list[int]:
    """Best-first rows honouring ``cap`` (brute force over every row)."""
    want = k if cap is None else k * CANDIDATE_FACTOR
    while True:
        candidates = top_k(scores, want, blocked_rows)
        rows: list[int] = []
        per_category: dict[int, int] = {}
        for row in candidates.tolist():
            code = int(category_codes[row])
            if cap is not None and code != NO_CATEGORY:
                if per_category.get(code, 0) >= cap:
                    continue
                per_category[code] = per_category.get(code, 0) + 1
            rows.append(row)
            if len(rows) == k:
                return rows
        if len(candidates) < want or want >= scores.size:
            return rows
        want *= CANDIDATE_FACTOR


def rank_request(
    matrix: npt.NDArray[np.float32],
    size: int,
    category_codes: npt.NDArray[np.int32],
    unavailable: npt.NDArray[np.bool_],
    popular_rows: Sequence[int | None],
    trending_rows: Sequence[int],
    user_vector: npt.NDArray[np.float32],
    evidence: float,
    k: int,
    nearest: Nearest | None,
    covisits: Sequence[tuple[Rows, npt.NDArray[np.float64]] | None],
    excluded_rows: Sequence[int],
    available_only: bool,
    wanted_categories: Sequence[int] | None,
    unwanted_categories: Sequence[int],
    max_per_category: int,
    recent_rows: Sequence[int],
    recent_categories: Sequence[int],
) -> tuple[list[int], list[float], list[int]]:
    """Rows, scores and reason codes of the best ``k`` (``Recommender._personal_ranked``)."""
    # _derived: the popular list as rows (ranks count every id), popularity per row.
    ranked = [(rank, row) for rank, row in enumerate(popular_rows) if row is not None]
    ranks = np.fromiter((rank for rank, _ in ranked), np.float64, len(ranked))
    p_rows = np.fromiter((row for _, row in ranked), np.intp, len(ranked))
    p_popularity = (1.0 - ranks / max(1, len(popular_rows))).astype(np.float32)
    p_vectors = np.ascontiguousarray(matrix[p_rows])
    popularity = np.zeros(size, np.float32)
    popularity[p_rows] = p_popularity
    # _covisitation_boost
    parts = []
    for n, entry in enumerate(covisits):
        if entry is not None and entry[0].size:
            parts.append((n, entry[0], entry[1]))
    if parts:
        c_rows, c_boost, c_source = combine_covisits(
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
            np.repeat(np.array([p[0] for p in parts], np.intp), [p[1].size for p in parts]),
        )
    else:
        c_rows, c_boost, c_source = (
            np.empty(0, np.intp),
            np.empty(0, np.float32),
            np.empty(0, np.intp),
        )
    excluded = np.array(sorted(set(excluded_rows)), np.intp)
    wanted = np.array(sorted(set(wanted_categories or ())), np.int32)
    unwanted = np.array(sorted(set(unwanted_categories)), np.int32)
    picked: tuple[list[int], list[float], list[int]] | None = None
    # _pick_from_candidates
    if nearest is not None:
        fetch = max(ANN_FETCH_MIN, 2 * k + excluded.size // 4)
        for _ in range(ANN_FETCH_ROUNDS):
            graph_rows, graph_bound = nearest(fetch)
            best_rows, popular_bound = best_popular(
                p_rows, p_vectors, p_popularity, user_vector, evidence, fetch
            )
            rows, scores, sources = rank_candidates(
                matrix, size, user_vector, evidence, popularity, graph_rows, best_rows,
                c_rows, c_boost, c_source, excluded, unavailable, available_only,
                category_codes, wanted, wanted_categories is not None, unwanted,
                max_per_category, k,
            )  # fmt: skip
            bound = max(evidence * graph_bound, popular_bound)
            if rows.size == k and scores[-1] >= bound:
                picked = rows.tolist(), scores.tolist(), sources.tolist()
                break
            if graph_bound == -math.inf:
                break
            fetch *= 8
    if picked is None:  # brute force
        scores = evidence * (matrix[:size] @ user_vector) + (1.0 - evidence) * popularity
        scores[c_rows] += c_boost
        blocked = np.zeros(size, np.bool_)
        blocked[excluded] = True
        codes = category_codes[:size]
        if wanted_categories is not None:
            blocked |= ~np.isin(codes, wanted)
        if unwanted.size:
            blocked |= np.isin(codes, unwanted)
        if available_only:
            blocked |= unavailable[:size]
        rows_ = _pick(scores, category_codes, k, max_per_category or None, np.flatnonzero(blocked))
        source_of = dict(zip(c_rows.tolist(), c_source.tolist(), strict=True))
        picked = rows_, [float(scores[r]) for r in rows_], [source_of.get(r, -1) for r in rows_]
    rows_, scores_, sources_ = picked
    # _explain
    because: list[int | None] = [s if s >= 0 else None for s in sources_]
    unexplained = [n for n, s in enumerate(because) if s is None]
    if recent_rows and unexplained:
        best, similarity = explain_by_similarity(
            matrix,
            np.array([rows_[n] for n in unexplained], np.intp),
            np.array(recent_rows, np.intp),
        )
        for n, b, s in zip(unexplained, best.tolist(), similarity.tolist(), strict=True):
            if s >= SIMILARITY_REASON_MIN:
                because[n] = len(covisits) + b
    trending = set(trending_rows)
    reasons = []
    for row, viewed in zip(rows_, because, strict=True):
        if viewed is not None:
            reasons.append(viewed)
        elif row in trending:
            reasons.append(REASON_TRENDING)
        elif int(category_codes[row]) not in set(recent_categories):
            reasons.append(REASON_NEW)
        else:
            reasons.append(REASON_RECOMMENDED)
    return rows_, scores_, reasons
