"""The API's in-memory view of the items, refreshed from Redis in the background.

A daemon thread pulls only what changed since its last pull — item factors and event
categories from the factor change log, entries from the catalogue change log, the
merchandising rules when their version moved — every ``item_refresh_ms``, plus the popular
and trending lists every second. Requests read a consistent :class:`ItemMatrix` without
locks: arrays are replaced, not resized, when the catalogue grows. Alongside the matrix it
keeps an HNSW graph of a recent snapshot plus the rows changed since
(``serving/candidates.py``), rebuilt in the background and swapped in with the next matrix,
and the catalogue's items without events yet (:class:`NewItems`, explored by the ranker).
The lists refreshed here double as the last good answer when Redis is unreachable.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from operators import NO_BRAND, NO_CATEGORY
from serving.candidates import ANN_MIN_ITEMS, CandidateIndex, CandidateMaintainer
from state.model_registry import ModelRegistry
from state.records import CatalogueItem, Rule, Vector
from state.store import RedisStore

log = logging.getLogger(__name__)

POPULAR_LIST_SIZE = 1000
SEGMENT_CACHE_S = 2.0


@dataclass(frozen=True, slots=True)
class NewItems:
    """Catalogue items without events (so without factors), newest first, with their facts."""

    item_ids: tuple[str, ...] = ()
    index: dict[str, int] = field(default_factory=dict)
    category_codes: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    brand_codes: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    prices: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0, np.float64))
    """NaN: no price."""
    unavailable: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The merchandising rules as of a version of ``/v1/rules``."""

    version: int = 0
    rules: tuple[tuple[str, Rule], ...] = ()


@dataclass(frozen=True, slots=True)
class ItemMatrix:
    """Items with factors: ids, their rows, vectors, category codes and availability."""

    item_ids: tuple[str, ...]
    rows: dict[str, int]
    matrix: Vector
    category_codes: npt.NDArray[np.int32]
    unavailable: npt.NDArray[np.bool_]
    seq: int
    generation: int = 0
    """Bumped on every publish (vectors, catalogue facts or candidate view changed)."""
    candidates: CandidateIndex | None = None
    """Graph + delta for candidate generation; None while brute force serves."""
    model_version: str = ""
    """The promoted model version whose item vectors are served ("" = the live stream)."""
    rows_epoch: int = 0
    """Bumped when items are renumbered (a model version swap rebuilds the matrix); between
    bumps an item keeps its row, new items only append."""
    norms: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    """Euclidean norm of each row, kept with the rows it describes (cosine similarity
    without touching the whole matrix per request)."""
    prices: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0, np.float64))
    """Each row's catalogue price (NaN: none)."""
    brand_codes: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    """Each row's brand code (``NO_BRAND``: none)."""
    new_items: NewItems = field(default_factory=NewItems)
    facts_generation: int = 0
    """Bumped when rows are added or an item's facts change (category, brand, price,
    availability, the new items): what the merchandising plan is compiled against."""

    def __post_init__(self) -> None:
        # The native ranker reads these arrays by row: a matrix whose per-row arrays are
        # shorter than its items must never be published (the ranker refuses them too).
        size = len(self.item_ids)
        short = [
            name
            for name, array in (
                ("matrix", self.matrix),
                ("category_codes", self.category_codes),
                ("unavailable", self.unavailable),
                ("norms", self.norms),
                ("prices", self.prices),
                ("brand_codes", self.brand_codes),
            )
            if array.shape[0] < size
        ]
        if short:
            raise ValueError(f"item matrix of {size} items has short per-row arrays: {short}")

    @property
    def size(self) -> int:
        """Number of items with factors."""
        return len(self.item_ids)

    def vectors(self) -> Vector:
        """The filled part of the matrix."""
        return self.matrix[: self.size]


def _empty_matrix(factors: int) -> ItemMatrix:
    return ItemMatrix((), {}, np.zeros((0, factors), np.float32), np.zeros(0, np.int32),
                      np.zeros(0, np.bool_), 0)  # fmt: skip


@dataclass
class Catalogue:
    """Item facts for filtering and display: categories (events or catalogue), availability."""

    category_code: dict[str, int] = field(default_factory=dict)
    category_names: list[str] = field(default_factory=list)
    item_category: dict[str, int] = field(default_factory=dict)
    unavailable: set[str] = field(default_factory=set)
    entries: dict[str, CatalogueItem] = field(default_factory=dict)
    seq: int = 0
    brand_code: dict[str, int] = field(default_factory=dict)

    def code_of(self, category_id: str) -> int:
        """Small integer code of a category (allocated on first sight)."""
        code = self.category_code.get(category_id)
        if code is None:
            code = self.category_code[category_id] = len(self.category_names)
            self.category_names.append(category_id)
        return code

    def brand_of(self, item_id: str) -> int:
        """The brand code of an item (allocated on first sight; ``NO_BRAND``: none)."""
        entry = self.entries.get(item_id)
        if entry is None or entry.brand is None:
            return NO_BRAND
        return self.brand_code.setdefault(entry.brand, len(self.brand_code))

    def price_of(self, item_id: str) -> float:
        """The catalogue price of an item (NaN: none)."""
        entry = self.entries.get(item_id)
        return np.nan if entry is None or entry.price is None else entry.price

    def category_of(self, item_id: str) -> str | None:
        """The item's category id, if known."""
        code = self.item_category.get(item_id)
        return None if code is None else self.category_names[code]


class ItemIndex:
    """Item factors, catalogue facts and ranked lists as of the last refresh."""

    def __init__(
        self, store: RedisStore, refresh_interval_s: float, ann_min_items: int = ANN_MIN_ITEMS
    ) -> None:
        self.store = store
        self.candidates = CandidateMaintainer(ann_min_items)
        self.lists_generation = 0
        """Bumped whenever the popular / trending lists change."""
        self.refresh_interval_s = refresh_interval_s
        self.current = _empty_matrix(store.factors)
        self.catalogue = Catalogue()
        self.popular: list[tuple[str, float]] = []
        self.trending: list[tuple[str, float]] = []
        self.redis_ok = False
        self._segments: dict[str, tuple[float, list[tuple[str, float]]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lists_every = max(1, int(1.0 / refresh_interval_s))
        self.registry = ModelRegistry(store)
        self.pinned: frozenset[str] = frozenset()
        """Items whose vectors come from the active model version, not the live stream."""
        self.rules = RuleSet()
        self._new_order: dict[str, int] = {}
        """Catalogue items without factors -> order of arrival (higher: newer)."""
        self._arrivals = 0

    # --- model versions -----------------------------------------------------------------
    def _sync_model_version(self) -> bool:
        """Follow the registry's active version; True if the served vectors were swapped.

        On a change the matrix is rebuilt from scratch: every live vector, then the active
        version's vectors on top. Items the version does not know keep following the stream.
        """
        active = self.registry.active_id() or ""
        if active == self.current.model_version:
            return False
        loaded = self.registry.load(active) if active else None
        if active and loaded is None:
            return False  # pointer to a missing version: keep serving what we have
        cur = self.current
        live = self.store.read_item_changes(0)
        ids = list(live.item_ids)
        rows = {item_id: n for n, item_id in enumerate(ids)}
        vectors = [live.vectors]
        pinned: set[str] = set()
        if loaded is not None:
            snap_ids, snap_matrix = loaded
            extra = [i for i in snap_ids if i not in rows]
            for item_id in extra:
                rows[item_id] = len(ids)
                ids.append(item_id)
            vectors.append(np.zeros((len(extra), self.store.factors), np.float32))
            pinned = set(snap_ids)
        matrix = np.concatenate(vectors) if vectors else np.zeros((0, self.store.factors))
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if loaded is not None:
            snap_ids, snap_matrix = loaded
            matrix[[rows[i] for i in snap_ids]] = snap_matrix
        cat = self.catalogue
        codes = np.array([cat.item_category.get(i, NO_CATEGORY) for i in ids], np.int32)
        unavailable = np.array([i in cat.unavailable for i in ids], np.bool_)
        prices = np.array([cat.price_of(i) for i in ids], np.float64)
        brands = np.array([cat.brand_of(i) for i in ids], np.int32)
        self.pinned = frozenset(pinned)
        self.candidates.changed(range(len(ids)))
        self.candidates.step(matrix)
        for item_id in ids:
            self._new_order.pop(item_id, None)
        self.current = ItemMatrix(
            tuple(ids),
            rows,
            matrix,
            codes,
            unavailable,
            max(live.max_seq, cur.seq),
            cur.generation + 1,
            self.candidates.published(),
            active,
            cur.rows_epoch + 1,
            _row_norms(matrix),
            prices,
            brands,
            self._new_items(),
            cur.facts_generation + 1,
        )
        log.info("serving item vectors from %s", active or "the live stream")
        return True

    # --- refresh ------------------------------------------------------------------------
    def refresh(self) -> int:
        """Pull changed item factors and catalogue entries; return how many changed."""
        changed = self._refresh_catalogue()
        if self._sync_model_version():
            return self.current.size
        cur = self.current
        changes = self.store.read_item_changes(cur.seq)
        if not changes.item_ids and not changed:
            if self.candidates.step(cur.vectors()):
                self.current = dataclasses.replace(
                    cur, generation=cur.generation + 1, candidates=self.candidates.published()
                )
            return 0
        cat = self.catalogue
        facts_changed = bool(changed)
        for item_id, category in zip(changes.item_ids, changes.categories, strict=True):
            # The catalogue is authoritative; event categories fill in what it lacks.
            if category is not None and item_id not in cat.entries:
                code = cat.code_of(category)
                facts_changed |= cat.item_category.get(item_id) != code
                cat.item_category[item_id] = code
        new_ids = [i for i in changes.item_ids if i not in cur.rows]
        matrix, codes, unavailable = cur.matrix, cur.category_codes, cur.unavailable
        norms, prices, brands = cur.norms, cur.prices, cur.brand_codes
        rows, ids = cur.rows, cur.item_ids
        # An item of the catalogue leaves the new items with its first factors (its events).
        graduated = [i for i in new_ids if self._new_order.pop(i, None) is not None]
        new_items = cur.new_items
        if graduated or any(i in self._new_order for i in changed):
            new_items = self._new_items()
        if new_ids:
            facts_changed = True
            needed = cur.size + len(new_ids)
            if needed > matrix.shape[0]:
                capacity = max(needed, 2 * matrix.shape[0], 1024)
                matrix = _grow(matrix, capacity)
                codes = _grow(codes, capacity, NO_CATEGORY)
                unavailable = _grow(unavailable, capacity)
                norms = _grow(norms, capacity)
                prices = _grow(prices, capacity, np.nan)
                brands = _grow(brands, capacity, NO_BRAND)
            rows = dict(rows)
            for offset, item_id in enumerate(new_ids):
                rows[item_id] = cur.size + offset
            ids = ids + tuple(new_ids)
        if self.pinned:  # the active version's items keep its vectors
            keep = [n for n, i in enumerate(changes.item_ids) if i not in self.pinned]
            changes = dataclasses.replace(
                changes,
                item_ids=[changes.item_ids[n] for n in keep],
                vectors=changes.vectors[keep],
                categories=[changes.categories[n] for n in keep],
            )
        if changes.item_ids:
            target = np.fromiter((rows[i] for i in changes.item_ids), np.intp)
            # Rows of existing items are overwritten in place: a request racing with this
            # sees either the old or the new vector of an item, both valid.
            matrix[target] = changes.vectors
            norms[target] = _row_norms(changes.vectors)
            self.candidates.changed(target)
        touched = set(changes.item_ids) | changed
        for item_id in touched:
            row = rows.get(item_id)
            if row is not None:
                codes[row] = cat.item_category.get(item_id, NO_CATEGORY)
                unavailable[row] = item_id in cat.unavailable
                prices[row] = cat.price_of(item_id)
                brands[row] = cat.brand_of(item_id)
        self.candidates.step(matrix[: len(ids)])
        self.current = ItemMatrix(
            ids,
            rows,
            matrix,
            codes,
            unavailable,
            changes.max_seq,
            cur.generation + 1,
            self.candidates.published(),
            cur.model_version,
            cur.rows_epoch,
            norms,
            prices,
            brands,
            new_items,
            cur.facts_generation + int(facts_changed),
        )
        return len(touched)

    def _new_items(self) -> NewItems:
        """The catalogue's items without factors, newest first, with their facts."""
        cat = self.catalogue
        ids = tuple(sorted(self._new_order, key=self._new_order.__getitem__, reverse=True))
        n = len(ids)
        return NewItems(
            ids,
            {item_id: j for j, item_id in enumerate(ids)},
            np.fromiter((cat.item_category.get(i, NO_CATEGORY) for i in ids), np.int32, n),
            np.fromiter((cat.brand_of(i) for i in ids), np.int32, n),
            np.fromiter((cat.price_of(i) for i in ids), np.float64, n),
            np.fromiter((i in cat.unavailable for i in ids), np.bool_, n),
        )

    def _refresh_catalogue(self) -> set[str]:
        cat = self.catalogue
        changes = self.store.read_catalogue_changes(cat.seq)
        rows = self.current.rows
        for entry in changes.items:
            cat.entries[entry.item_id] = entry
            if entry.item_id not in rows and entry.item_id not in self._new_order:
                self._arrivals += 1
                self._new_order[entry.item_id] = self._arrivals
            if entry.category_id is not None:
                cat.item_category[entry.item_id] = cat.code_of(entry.category_id)
            if entry.available:
                cat.unavailable.discard(entry.item_id)
            else:
                cat.unavailable.add(entry.item_id)
        cat.seq = changes.max_seq
        return {e.item_id for e in changes.items}

    def refresh_rules(self) -> None:
        """Reload the merchandising rules when their version moved (one GET otherwise)."""
        if self.store.rules_version() != self.rules.version:
            version, rules = self.store.rules()
            self.rules = RuleSet(version, tuple(rules))

    def refresh_lists(self) -> None:
        """Reload the popular and trending lists (kept as fallbacks when Redis goes away)."""
        popular = self.store.popular(POPULAR_LIST_SIZE) or self.popular
        trending = self.store.trending(100)
        # Only a real change invalidates: the per-user result cache is stamped with this.
        if popular != self.popular or trending != self.trending:
            self.popular, self.trending = popular, trending
            self.lists_generation += 1

    def segment_popular(self, segment: str) -> list[tuple[str, float]]:
        """Popular items within a context segment (cached for a couple of seconds)."""
        now = time.monotonic()
        cached = self._segments.get(segment)
        if cached is not None and now - cached[0] < SEGMENT_CACHE_S:
            return cached[1]
        items = self.store.segment_popular(segment, 200)
        if len(self._segments) > 10_000:  # bounded: segments are few, ids are not trusted
            self._segments.clear()
        self._segments[segment] = (now, items)
        return items

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                self.refresh()
                self.refresh_rules()
                if tick % self._lists_every == 0 or not self.popular:
                    self.refresh_lists()
                self.redis_ok = True
            except Exception:  # any Redis/network failure: keep serving what we have
                if self.redis_ok:
                    log.warning("item index refresh failed; serving the last good state")
                self.redis_ok = False
            tick += 1
            self._stop.wait(self.refresh_interval_s)

    def start(self) -> None:
        """Keep refreshing in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="item-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the refresh thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


def _row_norms(vectors: Vector) -> npt.NDArray[np.float32]:
    """Euclidean norm of each row (float32; one row at a time, no matrix-sized temporary)."""
    return np.sqrt(np.einsum("ij,ij->i", vectors, vectors)).astype(np.float32, copy=False)


def _grow(
    array: npt.NDArray[np.generic], capacity: int, fill: object = 0
) -> npt.NDArray[np.generic]:
    grown = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown
