"""Top-K selection and explanations over scored items.

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


def top_k(
    scores: FloatArray, k: int, exclude_rows: Sequence[int] | IndexArray = ()
) -> IndexArray:
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
    recommended: FloatArray, history: FloatArray
) -> tuple[IndexArray, FloatArray]:
    """For each recommended vector, the most similar history vector (cosine) and its value."""
    if history.shape[0] == 0 or recommended.shape[0] == 0:
        empty_idx = np.full(recommended.shape[0], -1, dtype=np.intp)
        return empty_idx, np.zeros(recommended.shape[0], dtype=np.float32)
    rec_norm = recommended / (np.linalg.norm(recommended, axis=1, keepdims=True) + 1e-12)
    hist_norm = history / (np.linalg.norm(history, axis=1, keepdims=True) + 1e-12)
    sims = rec_norm @ hist_norm.T
    best = np.argmax(sims, axis=1)
    return best.astype(np.intp), sims[np.arange(sims.shape[0]), best].astype(np.float32)
