"""Recommendations for a user, and items similar to an item.

Personal path: the user's fresh vector scored against the item matrix, blended with
popularity while the user has little evidence (weight n / (n + ``EVIDENCE_HALF``)), boosted by
co-visitation with what they just viewed; filters and per-category diversity applied before
the top-K is picked; every item carries its reason: one call into the native ``Ranker``
(``operators/src/ranking.rs``, kept per version of the items and lists) per request. Cold
path (no state yet): what is popular in the request's context segment, with trending items
mixed in. Fallback (Redis failing): the last good popular list kept in process, flagged
``fallback``.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import msgspec
import numpy as np
import numpy.typing as npt
import redis

from freshrec import metrics
from freshrec.variants import DEFAULT, Variant, VariantSplit, model_key
from operators import (
    NO_CATEGORY,
    REASON_NEW,
    REASON_RECOMMENDED,
    REASON_TRENDING,
    Ranker,
)
from serving.item_index import ItemIndex, ItemMatrix
from serving.schemas import Recommendations, RecommendedItem, SimilarItems
from state.records import NeighboursRecord, UserRecord, vector_from_bytes
from state.store import RedisStore, UserWithNeighbours

log = logging.getLogger(__name__)

MODEL_ID = "isgd"
EVIDENCE_HALF = 5.0
"""Events after which a user's own vector weighs as much as popularity."""
COVISIT_WEIGHT = 0.3
COVISIT_SOURCES = 5
"""The user's most recent items whose co-visitation lists boost (and explain) candidates."""
NEIGHBOUR_ROWS_MEMO_SIZE = 100_000
"""Co-visitation lists kept mapped to matrix rows (~750 B each: ~75 MB per API process full;
entries hold ints and arrays only, so the cyclic collector stops tracking them)."""
TRENDING_SHARE = 0.2
RESULT_CACHE_SIZE = 50_000
"""Users whose last answer is kept (LRU); an entry is valid while its stamp matches."""
RECENT_HISTORY = 20
"""Recent items the explanations (and co-visitation sources) are drawn from."""
_REASONS = {
    REASON_TRENDING: "trending",
    REASON_NEW: "new for you",
    REASON_RECOMMENDED: "recommended for you",
}


_CACHED_ITEMS = msgspec.msgpack.Decoder(list[RecommendedItem])
_CACHED_ITEMS_ENCODER = msgspec.msgpack.Encoder()


@dataclass(frozen=True, slots=True)
class Filters:
    """What the caller excludes or requires."""

    exclude: str = "seen"
    """``seen`` (everything interacted with), ``purchased`` or ``none``."""
    categories: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()
    available_only: bool = True
    max_per_category: int | None = None


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The request's context segment (device class | time of day | country)."""

    segment: str = ""
    country: str | None = None


@dataclass(frozen=True, slots=True)
class _Ranking:
    """The native ranker of one version of the items and lists (popular vectors gathered)."""

    key: tuple[int, int]
    ranker: Ranker


def _scaled(
    covisit: tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]], scale: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """A source's co-visitation boosts times a variant's scale (the memo keeps the defaults)."""
    return covisit if scale == 1.0 else (covisit[0], covisit[1] * scale)


def _codes(category_code: dict[str, int], categories: frozenset[str]) -> list[int]:
    """The categories' codes (-2 for a category no item has)."""
    return [category_code.get(c, -2) for c in categories]


class Recommender:
    """Answers recommendation requests from the store and the in-memory index."""

    def __init__(
        self, store: RedisStore, index: ItemIndex, variants: VariantSplit | None = None
    ) -> None:
        self.store = store
        self.index = index
        self.variants = variants or VariantSplit({})
        self._neighbour_rows_memo: OrderedDict[
            str,
            tuple[int, int, int, bool, npt.NDArray[np.intp], npt.NDArray[np.float64]],
        ] = OrderedDict()
        self._results: OrderedDict[str, tuple[tuple[object, ...], bytes]] = OrderedDict()
        self._ranking: _Ranking | None = None
        self.result_cache_hits = 0
        self.result_cache_misses = 0

    def recommend(
        self,
        user_id: str,
        k: int,
        filters: Filters = Filters(),
        context: RequestContext | Callable[[], RequestContext] = RequestContext(),
    ) -> Recommendations:
        """Top-``k`` items for ``user_id``; never raises for a missing or unreachable state.

        ``context`` may be a function: only unknown users need it, so it is derived (user
        agent parsed, segment keyed) only for them.
        """
        name, variant = self.variants.assign(user_id)
        result = self._recommend(user_id, k, filters, context, variant, model_key(MODEL_ID, name))
        return msgspec.structs.replace(result, variant=name)

    def _recommend(
        self,
        user_id: str,
        k: int,
        filters: Filters,
        context: RequestContext | Callable[[], RequestContext],
        variant: Variant,
        model: str,
    ) -> Recommendations:
        rec_id = f"{model}.{uuid.uuid4().hex}"
        if filters.max_per_category is None and variant.max_per_category is not None:
            filters = replace(filters, max_per_category=variant.max_per_category)
        try:
            # The record and its co-visitation lists in one round trip: two cost ~40% more.
            fetched = self.store.get_user_with_neighbours(user_id, COVISIT_SOURCES)
            matrix = self.index.current
            if fetched is None or fetched.user.version == 0:
                return self._cold(
                    rec_id, k, filters, context() if callable(context) else context, set(), variant
                )
            excluded = self._excluded(fetched.user, filters)
            if matrix.size == 0:
                metrics.FALLBACKS.labels("no_model").inc()
                return self._popular_list(rec_id, k, filters, excluded, fallback=True)
            return self._personal(rec_id, user_id, fetched, k, filters, excluded, variant)
        except (redis.RedisError, OSError):
            log.warning("redis unavailable: serving the in-process popular list")
            metrics.FALLBACKS.labels("redis").inc()
            return self._popular_list(rec_id, k, filters, set(), fallback=True)

    def forget(self, user_id: str) -> None:
        """Drop the user's cached answer (erased: it names items they viewed)."""
        self._results.pop(user_id, None)

    # --- personal ---------------------------------------------------------------------
    def _personal(
        self,
        rec_id: str,
        user_id: str,
        fetched: UserWithNeighbours,
        k: int,
        filters: Filters,
        excluded: set[str],
        variant: Variant = DEFAULT,
    ) -> Recommendations:
        user = fetched.user
        matrix = self.index.current
        # A user's answer changes only when their record, the items or the lists do. The
        # record's write time tells a user erased and back at the same version from the old.
        stamp = (
            user.version,
            user.written_at_s,
            matrix.generation,
            self.index.lists_generation,
            k,
            filters.exclude,
            tuple(sorted(filters.categories)),
            tuple(sorted(filters.exclude_categories)),
            filters.available_only,
            filters.max_per_category,
        )
        cached = self._results.get(user_id)
        if cached is not None and cached[0] == stamp:
            self._results.move_to_end(user_id)
            self.result_cache_hits += 1
            return Recommendations(rec_id, False, _CACHED_ITEMS.decode(cached[1]), matrix.seq)
        self.result_cache_misses += 1
        result = self._personal_ranked(rec_id, fetched, k, filters, excluded, matrix, variant)
        # Entries are atomic values (the stamp of ints, strings and tuples of strings; the
        # answer as msgpack) that the cyclic collector untracks: 50k cached answers kept as
        # Python objects made each full collection take ~100 ms, a p99 stall under load.
        self._results[user_id] = (stamp, _CACHED_ITEMS_ENCODER.encode(result.items))
        self._results.move_to_end(user_id)
        if len(self._results) > RESULT_CACHE_SIZE:
            self._results.popitem(last=False)
        return result

    def _personal_ranked(
        self,
        rec_id: str,
        fetched: UserWithNeighbours,
        k: int,
        filters: Filters,
        excluded: set[str],
        matrix: ItemMatrix,
        variant: Variant = DEFAULT,
    ) -> Recommendations:
        user = fetched.user
        evidence = user.version / (user.version + (variant.evidence_half or EVIDENCE_HALF))
        covisit_scale = (
            1.0 if variant.covisit_weight is None else variant.covisit_weight / COVISIT_WEIGHT
        )
        recent: list[str] = []  # the recent items that have factors, and their rows
        recent_rows: list[int] = []
        row_of = matrix.rows.get
        for item_id in user.recent:
            row = row_of(item_id)
            if row is not None:
                recent.append(item_id)
                recent_rows.append(row)
                if len(recent) == RECENT_HISTORY:
                    break
        catalogue = self.index.catalogue
        graph = matrix.candidates
        rows, scores, reasons = self._ranker(matrix).rank(
            user.vector,
            evidence,
            k,
            nearest=None
            if graph is None  # brute force: small catalogue
            else partial(graph.candidate_rows, vector_from_bytes(user.vector)),
            covisits=[
                None
                if record is None or not record.item_ids
                else _scaled(self._neighbour_rows(source_id, record, matrix), covisit_scale)
                for source_id, record in zip(fetched.sources, fetched.neighbours, strict=True)
            ],  # fmt: skip
            excluded_rows=[row for i in excluded if (row := row_of(i)) is not None],
            available_only=filters.available_only,
            wanted_categories=_codes(catalogue.category_code, filters.categories) or None,
            unwanted_categories=_codes(catalogue.category_code, filters.exclude_categories),
            max_per_category=filters.max_per_category or 0,
            recent_rows=recent_rows,
            recent_categories=[catalogue.item_category.get(i, NO_CATEGORY) for i in user.recent],
        )
        viewed = [*fetched.sources, *recent]  # what a reason code >= 0 points into
        item_ids = matrix.item_ids
        items = [
            RecommendedItem(
                item_ids[row],
                round(score, 6),
                f"because you viewed {viewed[code]}" if code >= 0 else _REASONS[code],
            )
            for row, score, code in zip(rows, scores, reasons, strict=True)
        ]
        if len(items) < k:  # tiny or heavily filtered catalogue: top up with popular items
            have = {it.item_id for it in items} | excluded
            fill = self._popular_list(rec_id, k - len(items), filters, have, fallback=False)
            items += fill.items
        return Recommendations(rec_id, False, items, matrix.seq)

    def _ranker(self, matrix: ItemMatrix) -> Ranker:
        """The native ranker of the items and lists, built once per version of either."""
        key = (self.index.lists_generation, matrix.generation)
        ranking = self._ranking
        if ranking is None or ranking.key != key:
            rows = matrix.rows
            ranker = Ranker(
                matrix.matrix,
                matrix.size,
                matrix.category_codes,
                matrix.unavailable,
                matrix.norms,
                [rows.get(item_id) for item_id, _ in self.index.popular],
                [
                    row
                    for item_id, _ in self.index.trending
                    if (row := rows.get(item_id)) is not None
                ],
            )
            ranking = self._ranking = _Ranking(key, ranker)
        return ranking.ranker

    def _excluded(self, user: UserRecord, filters: Filters) -> set[str]:
        if filters.exclude == "seen":
            return set(user.seen)
        if filters.exclude == "purchased":
            return set(user.purchased)
        return set()

    def _neighbour_rows(
        self, item_id: str, record: NeighboursRecord, matrix: ItemMatrix
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """An item's neighbours as matrix rows with their boost, memoised per list version.

        Mapping ~100 neighbour ids to rows per request cost ~80 µs (random lookups in a
        catalogue-sized dict); a list is re-mapped only when its version changes, the rows
        are renumbered (model version swap), or it named items without factors and the
        matrix has grown since.
        """
        cached = self._neighbour_rows_memo.get(item_id)
        if cached is not None:
            version, epoch, size, complete, rows, weights = cached
            if (
                version == record.version
                and epoch == matrix.rows_epoch
                and (complete or size == matrix.size)
            ):
                self._neighbour_rows_memo.move_to_end(item_id)
                return rows, weights
        rows_of = matrix.rows.get
        top = record.scores[0]
        known_rows: list[int] = []
        known_weights: list[float] = []
        for other, score in zip(record.item_ids, record.scores, strict=True):
            row = rows_of(other)
            if row is not None:
                known_rows.append(row)
                # log2 scores: 1 for the strongest neighbour, halving per halving of weight.
                known_weights.append(COVISIT_WEIGHT * 2.0 ** (score - top))
        complete = len(known_rows) == len(record.item_ids)
        # Plain lists, then one array each: ~40% cheaper than numpy per step at 20 items.
        rows, weights = np.array(known_rows, np.intp), np.array(known_weights, np.float64)
        memo = self._neighbour_rows_memo
        memo[item_id] = (record.version, matrix.rows_epoch, matrix.size, complete, rows, weights)
        memo.move_to_end(item_id)
        if len(memo) > NEIGHBOUR_ROWS_MEMO_SIZE:
            memo.popitem(last=False)  # least recently used
        return rows, weights

    # --- cold start and fallback --------------------------------------------------------
    def _cold(
        self,
        rec_id: str,
        k: int,
        filters: Filters,
        context: RequestContext,
        excluded: set[str],
        variant: Variant = DEFAULT,
    ) -> Recommendations:
        in_segment = self.index.segment_popular(context.segment) if context.segment else []
        segment_reason = "popular in your region" if context.country else "popular"
        chosen: list[RecommendedItem] = []
        taken = set(excluded)
        share = TRENDING_SHARE if variant.trending_share is None else variant.trending_share
        n_trending = max(1, int(k * share)) if self.index.trending and share > 0 else 0
        sources = (
            (self.index.trending, "trending", n_trending),
            (in_segment, segment_reason, k),
            (self.index.popular, "popular", k),
        )
        for ranked, reason, quota in sources:
            added = 0
            for item_id, score in ranked:
                if len(chosen) == k or added == quota:
                    break
                if item_id in taken or not self._allowed(item_id, filters):
                    continue
                chosen.append(RecommendedItem(item_id, round(score, 6), reason))
                taken.add(item_id)
                added += 1
        return Recommendations(rec_id, False, chosen, 0)

    def _popular_list(
        self, rec_id: str, k: int, filters: Filters, exclude: set[str], fallback: bool
    ) -> Recommendations:
        items: list[RecommendedItem] = []
        for item_id, score in self.index.popular:
            if item_id in exclude or not self._allowed(item_id, filters):
                continue
            items.append(RecommendedItem(item_id, round(score, 6), "popular"))
            if len(items) == k:
                break
        return Recommendations(rec_id, fallback, items, 0)

    def _allowed(self, item_id: str, filters: Filters) -> bool:
        catalogue = self.index.catalogue
        if filters.available_only and item_id in catalogue.unavailable:
            return False
        if filters.categories or filters.exclude_categories:
            category = catalogue.category_of(item_id)
            if filters.categories and category not in filters.categories:
                return False
            if category in filters.exclude_categories:
                return False
        return True

    # --- similar items ------------------------------------------------------------------
    def similar(self, item_id: str, k: int) -> SimilarItems:
        """Items bought or viewed with ``item_id`` blended with factor neighbours."""
        matrix = self.index.current
        candidates: dict[str, tuple[float, str]] = {}
        try:
            record = self.store.neighbours(item_id)
        except (redis.RedisError, OSError):
            record = None
        if record is not None and record.item_ids:
            top = record.scores[0]
            for other, score in zip(record.item_ids, record.scores, strict=True):
                candidates[other] = (float(2.0 ** (score - top)), "viewed together")
        row = matrix.rows.get(item_id)
        if row is not None and matrix.size > 1:
            # One native pass with the norms the item index keeps: ~8 ms per call when
            # every norm was recomputed and the cosines of the whole catalogue allocated.
            rows, cosines = self._ranker(matrix).similar(row, k + 1)
            for other_row, cosine in zip(rows, cosines, strict=True):
                other = matrix.item_ids[other_row]
                blended = 0.5 * cosine
                if other in candidates:
                    candidates[other] = (candidates[other][0] + blended, "viewed together")
                else:
                    candidates[other] = (blended, "similar")
        candidates.pop(item_id, None)
        ranked = sorted(candidates.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        items = [RecommendedItem(i, round(s, 6), reason) for i, (s, reason) in ranked]
        return SimilarItems(item_id, items, matrix.seq)
