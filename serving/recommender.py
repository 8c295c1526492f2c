"""Recommendations for a user, and items similar to an item.

Personal path: the user's fresh vector scored against the item matrix, blended with
popularity while the user has little evidence (weight n / (n + ``EVIDENCE_HALF``), n their
interactions with items), boosted by co-visitation with what they just viewed; filters,
price range, per-category diversity, the shop's rules (``serving/rules.py``) and the
exploration of new items applied before the top-K is picked; every item carries its reason:
one call into the native ``Ranker`` (``operators/src/ranking.rs``, kept per version of the
items and lists, with the native ``Merchandising`` kept per version of the rules and the
items' facts) per request. Similar items: one native pass too. Cold path (no state yet):
what is popular in the request's context segment, with trending items mixed in. Fallback
(Redis failing): the last good popular list kept in process, flagged ``fallback``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import msgspec
import numpy as np
import numpy.typing as npt
import redis

from freshrec import metrics
from freshrec.events import INTERACTION_TYPES
from freshrec.variants import DEFAULT, Variant, VariantSplit, model_key
from operators import (
    NO_CATEGORY,
    REASON_NEW,
    REASON_NEW_ITEM,
    REASON_PROMOTED,
    REASON_RECOMMENDED,
    REASON_SIMILAR,
    REASON_TRENDING,
    REASON_VIEWED_TOGETHER,
    Merchandising,
    Ranker,
)
from serving.item_index import ItemIndex, ItemMatrix
from serving.rules import build_merchandising
from serving.schemas import Recommendations, RecommendedItem, SimilarItems
from state.records import NeighboursRecord, UserRecord, vector_from_bytes
from state.replica import UNKNOWN, UserStateReplica
from state.store import RedisStore, UserWithNeighbours

log = logging.getLogger(__name__)

MODEL_ID = "isgd"
EVIDENCE_HALF = 5.0
"""Interactions with items after which a user's own vector weighs as much as popularity."""
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
    REASON_PROMOTED: "promoted",
    REASON_VIEWED_TOGETHER: "viewed together",
    REASON_SIMILAR: "similar",
}


_FROM_COPY = metrics.USER_STATE_READS.labels("copy")
_FROM_REDIS = metrics.USER_STATE_READS.labels("redis")
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
    min_price: float | None = None
    max_price: float | None = None
    """The price range, bounds included; an item without a catalogue price is outside it."""

    def __post_init__(self) -> None:
        for bound in (self.min_price, self.max_price):
            if bound is not None and not (math.isfinite(bound) and bound >= 0):
                raise ValueError(f"a price bound must be a finite number >= 0, got {bound}")
        if (
            self.min_price is not None
            and self.max_price is not None
            and self.min_price > self.max_price
        ):
            raise ValueError(f"min_price {self.min_price} is above max_price {self.max_price}")


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
    popular: _Listed
    trending: _Listed


@dataclass(frozen=True, slots=True)
class _Listed:
    """A ranked list of (item id, score) as the native ranker takes it.

    Rows best first and their scores; items without factors are left out.
    """

    rows: npt.NDArray[np.intp]
    scores: npt.NDArray[np.float32]

    @staticmethod
    def of(ranked: list[tuple[str, float]], rows: dict[str, int]) -> _Listed:
        pairs = [(row, s) for item_id, s in ranked if (row := rows.get(item_id)) is not None]
        return _Listed(
            np.fromiter((r for r, _ in pairs), np.intp, len(pairs)),
            np.fromiter((s for _, s in pairs), np.float32, len(pairs)),
        )


@dataclass(frozen=True, slots=True)
class _Merch:
    """The native merchandising of one version of the rules and the items' facts."""

    key: tuple[int, int]
    merchandising: Merchandising | None
    valid_until_s: float
    generation: int


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
        self,
        store: RedisStore,
        index: ItemIndex,
        variants: VariantSplit | None = None,
        new_item_share: float = 0.0,
        replica: UserStateReplica | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.replica = replica
        """The process's copies of user records and lists; None: every request reads Redis."""
        self.variants = variants or VariantSplit({})
        self.new_item_share = new_item_share
        """Share of a personal answer's positions new items may take (rounded down)."""
        self._merch: _Merch | None = None
        self._neighbour_rows_memo: OrderedDict[
            str,
            tuple[int, int, int, bool, npt.NDArray[np.intp], npt.NDArray[np.float64]],
        ] = OrderedDict()
        self._results: OrderedDict[str, tuple[tuple[object, ...], bytes]] = OrderedDict()
        self._ranking: _Ranking | None = None
        self._segment_rows: dict[int, tuple[list[tuple[str, float]], tuple[int, int], _Listed]] = {}
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
        result, events = self._recommend(
            user_id, k, filters, context, variant, model_key(MODEL_ID, name)
        )
        return msgspec.structs.replace(result, variant=name, user_events=events)

    def _recommend(
        self,
        user_id: str,
        k: int,
        filters: Filters,
        context: RequestContext | Callable[[], RequestContext],
        variant: Variant,
        model: str,
    ) -> tuple[Recommendations, int]:
        """The answer and how many of the user's events it follows from."""
        rec_id = f"{model}.{os.urandom(16).hex()}"  # uuid4().hex's form at a third of its cost
        if filters.max_per_category is None and variant.max_per_category is not None:
            filters = replace(filters, max_per_category=variant.max_per_category)
        try:
            fetched = self.user_with_neighbours(user_id)
            matrix = self.index.current
            if fetched is None or fetched.user.version == 0:
                cold = context() if callable(context) else context
                return self._cold(rec_id, k, filters, cold, set(), variant), 0
            excluded = self._excluded(fetched.user, filters)
            if matrix.size == 0:
                metrics.FALLBACKS.labels("no_model").inc()
                result = self._popular_list(rec_id, k, filters, excluded, fallback=True)
            else:
                result = self._personal(rec_id, user_id, fetched, k, filters, excluded, variant)
            return result, fetched.user.events
        except (redis.RedisError, OSError):
            log.warning("redis unavailable: serving the in-process popular list")
            metrics.FALLBACKS.labels("redis").inc()
            return self._popular_list(rec_id, k, filters, set(), fallback=True), 0

    def user_with_neighbours(self, user_id: str) -> UserWithNeighbours | None:
        """The user's record and their recent items' lists.

        From the process's copies when they can tell, else from Redis (record and lists in
        one round trip: two cost ~40% more).
        """
        replica = self.replica
        if replica is not None:
            held = replica.user_with_neighbours(user_id, COVISIT_SOURCES)
            if held is not UNKNOWN:
                _FROM_COPY.inc()
                return held  # type: ignore[return-value]
        _FROM_REDIS.inc()
        return self.store.get_user_with_neighbours(user_id, COVISIT_SOURCES)

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
        merch = self._merchandising(matrix)
        # A user's answer changes only when their record, the items, the lists or the rules
        # do. The record's write time tells a user erased and back at the same version from
        # the old.
        stamp = (
            user.version,
            user.written_at_s,
            matrix.generation,
            self.index.lists_generation,
            merch.generation,
            k,
            filters.exclude,
            tuple(sorted(filters.categories)),
            tuple(sorted(filters.exclude_categories)),
            filters.available_only,
            filters.max_per_category,
            filters.min_price,
            filters.max_price,
        )
        cached = self._results.get(user_id)
        if cached is not None and cached[0] == stamp:
            self._results.move_to_end(user_id)
            self.result_cache_hits += 1
            return Recommendations(rec_id, False, _CACHED_ITEMS.decode(cached[1]), matrix.seq)
        self.result_cache_misses += 1
        result = self._personal_ranked(
            rec_id, fetched, k, filters, excluded, matrix, merch.merchandising, variant
        )
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
        merchandising: Merchandising | None,
        variant: Variant = DEFAULT,
    ) -> Recommendations:
        user = fetched.user
        # What trained the user's vector: their interactions with items. Impressions (the
        # storefront sends one per panel shown) change the record but teach it nothing.
        interactions = sum(n for kind, n in user.counts.items() if kind in INTERACTION_TYPES)
        evidence = interactions / (interactions + (variant.evidence_half or EVIDENCE_HALF))
        covisit_scale = (
            1.0 if variant.covisit_weight is None else variant.covisit_weight / COVISIT_WEIGHT
        )
        recent: list[str] = []  # the recent items that have factors, and their rows
        recent_rows: list[int] = []
        recent_categories: list[int] = []  # every recent item's (new items are matched to them)
        row_of = matrix.rows.get
        catalogue = self.index.catalogue
        category_of = catalogue.item_category.get
        row_categories = matrix.category_codes
        for item_id in user.recent:
            row = row_of(item_id)
            if row is None:
                recent_categories.append(category_of(item_id, NO_CATEGORY))
                continue
            # The matrix's code of a row is the catalogue's, as of the matrix's publication:
            # one lookup in a catalogue-sized dict per item instead of two.
            recent_categories.append(int(row_categories[row]))
            if len(recent) < RECENT_HISTORY:
                recent.append(item_id)
                recent_rows.append(row)
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
            recent_categories=recent_categories,
            min_price=filters.min_price,
            max_price=filters.max_price,
            merchandising=merchandising,
            new_item_slots=int(k * self.new_item_share),
        )
        viewed = [*fetched.sources, *recent]  # what a reason code >= 0 points into
        item_ids, size = matrix.item_ids, matrix.size
        items = [
            RecommendedItem(
                item_ids[slot] if slot < size else self._item_id(matrix, slot),
                round(score, 6),
                f"because you viewed {viewed[code]}"
                if code >= 0
                else self._reason(matrix, slot, code),
            )
            for slot, score, code in zip(rows, scores, reasons, strict=True)
        ]
        if len(items) < k:  # tiny or heavily filtered catalogue: top up with popular items
            have = {it.item_id for it in items} | excluded
            fill = self._popular_list(rec_id, k - len(items), filters, have, fallback=False)
            items += fill.items
        return Recommendations(rec_id, False, items, matrix.seq)

    @staticmethod
    def _item_id(matrix: ItemMatrix, slot: int) -> str:
        """The item of a ranker's slot: a row, or past the rows a new item."""
        size = matrix.size
        return matrix.item_ids[slot] if slot < size else matrix.new_items.item_ids[slot - size]

    def _reason(self, matrix: ItemMatrix, slot: int, code: int) -> str:
        if code == REASON_NEW_ITEM:
            category = int(matrix.new_items.category_codes[slot - matrix.size])
            return f"new in {self.index.catalogue.category_names[category]}"
        return _REASONS[code]

    def _merchandising(self, matrix: ItemMatrix) -> _Merch:
        """The rules compiled for the items' facts, once per version of either.

        Compiled again when a rule's window opens or closes.
        """
        key = (matrix.facts_generation, self.index.rules.version)
        merch = self._merch
        now = time.time()
        if merch is None or merch.key != key or now >= merch.valid_until_s:
            compiled = build_merchandising(matrix, self.index.catalogue, self.index.rules, now)
            merch = self._merch = _Merch(
                key,
                compiled,
                math.inf if compiled is None else compiled.valid_until_s,
                0 if merch is None else merch.generation + 1,
            )
        return merch

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
                matrix.prices,
            )
            ranking = self._ranking = _Ranking(
                key,
                ranker,
                _Listed.of(self.index.popular, rows),
                _Listed.of(self.index.trending, rows),
            )
        return ranking.ranker

    def _segment_listed(
        self, matrix: ItemMatrix, ranked: list[tuple[str, float]]
    ) -> _Listed | None:
        """A context segment's popular list as rows.

        Mapped again when the list (refreshed every couple of seconds) or the items change.
        """
        if not ranked:
            return None
        key = (matrix.rows_epoch, matrix.size)
        cached = self._segment_rows.get(id(ranked))
        # The cache holds the list itself: its id cannot be reused while it is cached.
        if cached is not None and cached[0] is ranked and cached[1] == key:
            return cached[2]
        if len(self._segment_rows) > 10_000:  # bounded like the index's segment cache
            self._segment_rows.clear()
        listed = _Listed.of(ranked, matrix.rows)
        self._segment_rows[id(ranked)] = (ranked, key, listed)
        return listed

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
        share = TRENDING_SHARE if variant.trending_share is None else variant.trending_share
        n_trending = max(1, int(k * share)) if self.index.trending and share > 0 else 0
        sources = (
            (self.index.trending, "trending", n_trending),
            (in_segment, segment_reason, k),
            (self.index.popular, "popular", k),
        )
        return self._from_lists(rec_id, k, filters, excluded, sources, fallback=False)

    def _popular_list(
        self, rec_id: str, k: int, filters: Filters, exclude: set[str], fallback: bool
    ) -> Recommendations:
        sources = ((self.index.popular, "popular", k),)
        return self._from_lists(rec_id, k, filters, exclude, sources, fallback)

    def _from_lists(
        self,
        rec_id: str,
        k: int,
        filters: Filters,
        exclude: set[str],
        sources: tuple[tuple[list[tuple[str, float]], str, int], ...],
        fallback: bool,
    ) -> Recommendations:
        """Each ranked list in turn up to its quota, filtered and merchandised natively.

        Pins first, rules re-weigh; without a model yet, the lists as they are, filtered.
        """
        matrix = self.index.current
        if matrix.size == 0:
            chosen: list[RecommendedItem] = []
            taken = set(exclude)
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
            return Recommendations(rec_id, fallback, chosen, 0)
        ranker = self._ranker(matrix)
        ranking = self._ranking
        assert ranking is not None
        lists = []
        for code, (ranked, _, quota) in enumerate(sources):
            listed = (
                ranking.popular
                if ranked is self.index.popular
                else ranking.trending
                if ranked is self.index.trending
                else self._segment_listed(matrix, ranked)
            )
            if listed is not None and quota:
                lists.append((listed.rows, listed.scores, code, quota))
        catalogue = self.index.catalogue
        rows_of = matrix.rows.get
        slots, scores, reasons = ranker.rank_lists(
            lists,
            k,
            excluded_rows=[row for i in exclude if (row := rows_of(i)) is not None],
            available_only=filters.available_only,
            wanted_categories=_codes(catalogue.category_code, filters.categories) or None,
            unwanted_categories=_codes(catalogue.category_code, filters.exclude_categories),
            max_per_category=filters.max_per_category or 0,
            min_price=filters.min_price,
            max_price=filters.max_price,
            merchandising=self._merchandising(matrix).merchandising,
        )
        items = [
            RecommendedItem(
                self._item_id(matrix, slot),
                round(score, 6),
                sources[code][1] if code >= 0 else self._reason(matrix, slot, code),
            )
            for slot, score, code in zip(slots, scores, reasons, strict=True)
        ]
        return Recommendations(rec_id, fallback, items, 0)

    def _allowed(self, item_id: str, filters: Filters) -> bool:
        catalogue = self.index.catalogue
        if filters.available_only and item_id in catalogue.unavailable:
            return False
        if filters.min_price is not None or filters.max_price is not None:
            price = catalogue.price_of(item_id)
            if not (
                (filters.min_price is None or price >= filters.min_price)
                and (filters.max_price is None or price <= filters.max_price)
            ):
                return False  # NaN (no price) fails both comparisons
        if filters.categories or filters.exclude_categories:
            category = catalogue.category_of(item_id)
            if filters.categories and category not in filters.categories:
                return False
            if category in filters.exclude_categories:
                return False
        return True

    # --- similar items ------------------------------------------------------------------
    def similar(self, item_id: str, k: int, filters: Filters = Filters()) -> SimilarItems:
        """Items viewed with ``item_id`` blended with its factor neighbours.

        Filtered and merchandised before the top-K, in one native pass (``filters.exclude``
        and the category cap do not apply here).
        """
        matrix = self.index.current
        try:
            record = self.store.neighbours(item_id)
        except (redis.RedisError, OSError):
            record = None
        covisits = None
        if record is not None and record.item_ids:
            rows, weights = self._neighbour_rows(item_id, record, matrix)
            # Here co-visitation weighs 1 for the strongest neighbour (0.5 for the cosine).
            covisits = (rows, weights / COVISIT_WEIGHT)
        catalogue = self.index.catalogue
        slots, scores, reasons = self._ranker(matrix).similar_items(
            matrix.rows.get(item_id),
            k,
            covisits=covisits,
            available_only=filters.available_only,
            wanted_categories=_codes(catalogue.category_code, filters.categories) or None,
            unwanted_categories=_codes(catalogue.category_code, filters.exclude_categories),
            min_price=filters.min_price,
            max_price=filters.max_price,
            merchandising=self._merchandising(matrix).merchandising,
        )
        items = [
            RecommendedItem(self._item_id(matrix, slot), round(score, 6), _REASONS[code])
            for slot, score, code in zip(slots, scores, reasons, strict=True)
        ]
        return SimilarItems(item_id, items, matrix.seq)
