"""Exact re-scoring, filtering and top-K of one request's candidates, in one compiled pass.

Reference oracle: the numba kernels before the native ``Ranker`` (operators/src/ranking.rs)
replaced them, run as plain Python (numba removed); the history below is theirs.

A personal request ranks a few hundred candidate rows (graph ∪ delta ∪ best popular ∪
co-visited). Done as ~40 small numpy calls and a Python walk it cost ~330 µs of CPU per
request in the API, several times the calls' isolated cost: each call pays its dispatch and
the request's object churn evicts their data from cache. Compiled with numba, the whole pass
is one call over small contiguous arrays. Rules (shared with the brute-force path in
``serving/recommender.py``, tests keep the two equal): score = evidence x <item, user> +
(1 - evidence) x popularity + co-visitation boost; best first, ties to the lower row; NaN
and -inf never picked, +inf skipped; excluded and unavailable rows skipped; category
include/exclude; at most ``cap`` per category (uncategorised items are not capped).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tests.oracles.ranking import row_dot

Rows = npt.NDArray[np.intp]
Floats = npt.NDArray[np.float32]
Codes = npt.NDArray[np.int32]

NO_CATEGORY = -1
"""Category code of an item without category (never capped)."""
NO_SOURCE = -1
"""Co-visitation source of a row no recent item led to."""


def combine_covisits(
    rows: Rows, weights: npt.NDArray[np.float64], sources: Rows
) -> tuple[Rows, Floats, Rows]:
    """Boost per co-visited row, summed over sources, and the first source that led to it.

    ``rows``/``weights``/``sources`` are every source's neighbour list concatenated, the most
    recent source first; returns the distinct rows ascending, their summed boost (float32)
    and, of the sources that listed each row, the first one (the most recent).
    """
    n = rows.size
    order = np.argsort(rows, kind="mergesort")  # stable: a row's first source stays first
    out_rows = np.empty(n, np.intp)
    out_boost = np.empty(n, np.float64)
    out_source = np.empty(n, np.intp)
    m = -1
    for i in order:
        row = rows[i]
        if m >= 0 and out_rows[m] == row:
            out_boost[m] += weights[i]
        else:
            m += 1
            out_rows[m] = row
            out_boost[m] = weights[i]
            out_source[m] = sources[i]
    return out_rows[: m + 1], out_boost[: m + 1].astype(np.float32), out_source[: m + 1]


def best_popular(
    rows: Rows,
    vectors: Floats,
    popularity: Floats,
    user_vector: Floats,
    evidence: float,
    n: int,
) -> tuple[Rows, float]:
    """Rows of the ``n`` best blended scores among the popular items, and the best left out.

    Blended score = evidence x <vector, user> + (1 - evidence) x popularity. The best score
    left out is -inf when every row is returned.
    """
    size = rows.size
    if n >= size:
        return rows, -np.inf
    blended = np.empty(size, np.float32)
    weight = np.float32(evidence)
    rest = np.float32(1.0 - evidence)
    for i in range(size):
        blended[i] = weight * row_dot(vectors[i], user_vector) + rest * popularity[i]
    # The (n+1)-th best is the best left out; the n taken are those above it, then ties.
    cut = np.partition(blended, size - n - 1)[size - n - 1]
    taken = np.empty(n, np.intp)
    m = 0
    for i in range(size):
        if blended[i] > cut:
            taken[m] = rows[i]
            m += 1
    for i in range(size):
        if m == n:
            break
        if blended[i] == cut:
            taken[m] = rows[i]
            m += 1
    return taken[:m], float(cut)


def _contains(sorted_values: npt.NDArray[np.generic], value: int) -> bool:
    at = np.searchsorted(sorted_values, value)
    return bool(at < sorted_values.size and sorted_values[at] == value)


def rank_candidates(
    matrix: Floats,
    size: int,
    user_vector: Floats,
    evidence: float,
    popularity: Floats,
    graph_rows: Rows,
    popular_rows: Rows,
    covisit_rows: Rows,
    covisit_boost: Floats,
    covisit_source: Rows,
    excluded_rows: Rows,
    unavailable: npt.NDArray[np.bool_],
    check_available: bool,
    category_codes: Codes,
    wanted_codes: Codes,
    check_wanted: bool,
    unwanted_codes: Codes,
    cap: int,
    k: int,
) -> tuple[Rows, Floats, Rows]:
    """The best ``k`` candidates that pass the filters: rows, scores, co-visitation source.

    Candidates are ``graph_rows`` ∪ ``popular_rows`` ∪ ``covisit_rows`` (duplicates
    allowed, rows >= ``size`` ignored), each scored exactly on ``matrix``.
    ``covisit_rows`` ascend, distinct (``combine_covisits``); ``excluded_rows``,
    ``wanted_codes`` and ``unwanted_codes`` ascend; ``cap`` <= 0 means no per-category cap.
    The source is an index into the co-visitation sources, or ``NO_SOURCE``.
    """
    everything = np.concatenate((graph_rows, popular_rows, covisit_rows))
    everything.sort()
    rows = np.empty(everything.size, np.intp)
    n = 0
    for row in everything:
        if row < size and (n == 0 or rows[n - 1] != row):
            rows[n] = row
            n += 1
    rows = rows[:n]
    weight = np.float32(evidence)
    rest = np.float32(1.0 - evidence)
    scores = np.empty(n, np.float32)
    sources = np.full(n, NO_SOURCE, np.intp)
    c = 0  # both ascend: merge the co-visitation boosts in
    for i in range(n):
        row = rows[i]
        score = weight * row_dot(matrix[row], user_vector) + rest * popularity[row]
        while c < covisit_rows.size and covisit_rows[c] < row:
            c += 1
        if c < covisit_rows.size and covisit_rows[c] == row:
            score += covisit_boost[c]
            sources[i] = covisit_source[c]
        scores[i] = score
    # Best first; the stable sort sends ties to the lower row (rows ascend). NaN and -inf
    # sort last, where the walk stops.
    keys = np.empty(n, np.float32)
    for i in range(n):
        keys[i] = -scores[i] if scores[i] > -np.inf else np.inf
    order = np.argsort(keys, kind="mergesort")
    check_codes = check_wanted or unwanted_codes.size > 0 or cap > 0
    picked = np.empty(min(k, n), np.intp)
    picked_codes = np.empty(min(k, n), np.int32)
    m = 0
    for position in order:
        if m == k:
            break
        score = scores[position]
        if not score > -np.inf:
            break
        row = rows[position]
        if score == np.inf or _contains(excluded_rows, row):
            continue
        if check_available and unavailable[row]:
            continue
        code = category_codes[row]
        if check_codes:
            if check_wanted and not _contains(wanted_codes, code):
                continue
            if _contains(unwanted_codes, code):
                continue
            if cap > 0 and code != NO_CATEGORY:
                same = 0
                for earlier in range(m):
                    if picked_codes[earlier] == code:
                        same += 1
                if same >= cap:
                    continue
        picked[m] = position
        picked_codes[m] = code
        m += 1
    picked = picked[:m]
    return rows[picked], scores[picked], sources[picked]
