"""Recommendations for a user: score their fresh vector against the item matrix.

Falls back in order: no user record → popular items (the cold-start path); Redis failing
or no item factors yet → the last good popular list kept in process, flagged ``fallback``.
"""

from __future__ import annotations

import logging
import uuid

import numpy as np
import redis

from operators.ranking import explain_by_similarity, top_k
from serving.item_index import ItemIndex
from serving.schemas import Recommendations, RecommendedItem
from state.records import UserRecord, vector_from_bytes
from state.store import RedisStore

log = logging.getLogger(__name__)


class Recommender:
    """Answers recommendation requests from the store and the in-memory index."""

    def __init__(self, store: RedisStore, index: ItemIndex) -> None:
        self.store = store
        self.index = index

    def recommend(self, user_id: str, k: int) -> Recommendations:
        """Top-``k`` items for ``user_id``; never raises for a missing or unreachable state."""
        rec_id = uuid.uuid4().hex
        try:
            user = self.store.get_user(user_id)
        except (redis.RedisError, OSError):
            log.warning("redis unavailable: serving the in-process popular list")
            return self._popular(rec_id, k, exclude=set(), fallback=True)
        matrix = self.index.current
        if user is None:
            return self._popular(rec_id, k, exclude=set(), fallback=False)
        if matrix.size == 0:
            return self._popular(rec_id, k, exclude=set(user.seen), fallback=True)
        return self._personal(rec_id, user, k)

    def _personal(self, rec_id: str, user: UserRecord, k: int) -> Recommendations:
        matrix = self.index.current
        vectors = matrix.vectors()
        scores = vectors @ vector_from_bytes(user.vector)
        seen_rows = [matrix.rows[i] for i in user.seen if i in matrix.rows]
        best = top_k(scores, k, seen_rows)
        history_ids = [i for i in user.recent if i in matrix.rows][:20]
        history = vectors[[matrix.rows[i] for i in history_ids]] if history_ids else None
        if history is not None:
            because, _ = explain_by_similarity(vectors[best], history)
        else:
            because = np.full(len(best), -1)
        items = [
            RecommendedItem(
                item_id=matrix.item_ids[row],
                score=round(float(scores[row]), 6),
                reason=(
                    f"because you viewed {history_ids[because[n]]}"
                    if because[n] >= 0
                    else "recommended for you"
                ),
            )
            for n, row in enumerate(best)
        ]
        if len(items) < k:  # tiny catalogue: top up with popular items
            have = {it.item_id for it in items} | set(user.seen)
            items += self._popular(rec_id, k - len(items), have, fallback=False).items
        return Recommendations(rec_id, False, items, matrix.seq)

    def _popular(self, rec_id: str, k: int, exclude: set[str], fallback: bool) -> Recommendations:
        items: list[RecommendedItem] = []
        for item_id, score in self.index.popular:
            if item_id in exclude:
                continue
            items.append(RecommendedItem(item_id, round(score, 6), "popular"))
            if len(items) == k:
                break
        return Recommendations(rec_id, fallback, items, 0)
