"""Top-K selection and explanations over scored items.

Reference oracle: serving's numba kernels before the native ``Ranker`` (operators/src/
ranking.rs, similar.rs) replaced them, run as plain Python (numba removed, same arithmetic:
float32 sums, sequential).

Partial selection (argpartition) instead of a full sort: only the K best are ordered.
Explanations pick, for each recommended item, the item of the user's recent history whose
factor vector is most similar to it: the honest answer to "why this one?" for a factor model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.intp]


def row_dot(a: FloatArray, b: FloatArray) -> np.float32:
    """<a, b> of two equal-length float32 vectors, summed in float32."""
    total = np.float32(0.0)
    for j in range(a.size):
        total += a[j] * b[j]
    return total


def top_k(scores: FloatArray, k: int, exclude_rows: Sequence[int] | IndexArray = ()) -> IndexArray:
    """Row indices of the ``k`` highest finite scores, best first, skipping ``exclude_rows``.

    Ties are broken by row (lower first), also at the cut-off, so asking for more never
    reorders or drops what a smaller ``k`` returned. NaN and ±inf are never returned.
    """
    if k <= 0 or scores.size == 0:
        return np.empty(0, dtype=np.intp)
    finite = np.isfinite(scores)
    if len(exclude_rows) or not finite.all():
        scores = np.where(finite, scores, -np.inf).astype(scores.dtype, copy=False)
        scores[np.asarray(exclude_rows, dtype=np.intp)] = -np.inf
        finite = np.isfinite(scores)
    k = min(k, int(finite.sum()))
    if k == 0:
        return np.empty(0, dtype=np.intp)
    if k < scores.size:
        kth = scores[np.argpartition(scores, -k)[-k:]].min()
        above = np.flatnonzero(scores > kth)
        at_cut = np.flatnonzero(scores == kth)[: k - above.size]
        candidates = np.concatenate((above, at_cut))
    else:
        candidates = np.flatnonzero(finite)
    # Score descending, then row ascending.
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order][:k]


def explain_by_similarity(
    vectors: FloatArray, rows: IndexArray, history_rows: IndexArray
) -> tuple[IndexArray, FloatArray]:
    """For each of ``rows``, the most similar of ``history_rows`` (cosine): index, value.

    Indices point into ``history_rows`` (-1 and 0.0 when the history is empty); the first
    of equally similar history items wins. (Compiled, a request explained ~10 items against
    ~20, which as numpy calls cost ~45 µs in the API and compiled a few.)
    """
    n_rows, n_history = rows.size, history_rows.size
    best = np.full(n_rows, -1, np.intp)
    similarity = np.zeros(n_rows, np.float32)
    if n_history == 0:
        return best, similarity
    history_norms = np.empty(n_history, np.float32)
    for h in range(n_history):
        vector = vectors[history_rows[h]]
        history_norms[h] = np.sqrt(row_dot(vector, vector)) + np.float32(1e-12)
    for r in range(n_rows):
        vector = vectors[rows[r]]
        norm = np.sqrt(row_dot(vector, vector)) + np.float32(1e-12)
        for h in range(n_history):
            cosine = row_dot(vector, vectors[history_rows[h]]) / (norm * history_norms[h])
            if best[r] < 0 or cosine > similarity[r]:
                best[r] = h
                similarity[r] = cosine
    return best, similarity


def top_cosine(
    vectors: FloatArray, size: int, norms: FloatArray, row: int, k: int
) -> tuple[IndexArray, FloatArray]:
    """The ``k`` rows of ``vectors[:size]`` most similar to ``row`` (cosine), best first.

    ``norms`` holds each row's norm (kept by the caller, so no request touches the matrix
    twice). ``row`` itself and non-finite similarities are left out; ties go to the lower
    row. One pass with a k-sized buffer: no catalogue-sized temporaries.
    """
    best_rows = np.empty(max(k, 0), np.intp)
    best = np.empty(max(k, 0), np.float32)
    n = 0
    if k <= 0:
        return best_rows, best
    query = vectors[row]
    query_norm = norms[row] + np.float32(1e-9)
    for r in range(size):
        if r == row:
            continue
        cosine = row_dot(vectors[r], query) / ((norms[r] + np.float32(1e-9)) * query_norm)
        if not np.isfinite(cosine) or (n == k and not cosine > best[n - 1]):
            continue
        at = n if n < k else k - 1
        while at > 0 and best[at - 1] < cosine:  # equal stays ahead: lower row first
            best[at] = best[at - 1]
            best_rows[at] = best_rows[at - 1]
            at -= 1
        best[at] = cosine
        best_rows[at] = r
        if n < k:
            n += 1
    return best_rows[:n], best[:n]
