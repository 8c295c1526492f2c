"""Merchandising by brute force: every rule applied one at a time, every row scored, sorted.

Reference oracle for the native ``Merchandising`` inside ``Ranker.rank`` and
``Ranker.similar_items`` (``operators/src/merchandising.rs``, ``ranking.rs``, ``similar.rs``),
written from the rules as ``serving/rules.py`` and the API document them, not from the native
code: a rule's factor multiplies a score >= 0 and divides a negative one, and the factors of
every active rule matching an item multiply; pins take their position (or the next free one)
in order of position then rule; new items take up to the exploration slots at evenly spread
positions, in the user's recent categories, then fill what the organic picks leave; the
category cap counts pins and new items first. Slots: a row below ``size``, else
``size + j`` for the new item ``j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

NO_CATEGORY = -1
NO_BRAND = -1
REASON_NEW_ITEM, REASON_PROMOTED = -4, -5
REASON_VIEWED_TOGETHER, REASON_SIMILAR = -6, -7
COSINE_WEIGHT = np.float32(0.5)
NORM_EPSILON = np.float32(1e-9)


@dataclass
class Catalogue:
    """Rows with factors and the new items, with everything the filters and rules read."""

    matrix: npt.NDArray[np.float32]
    size: int
    category_codes: npt.NDArray[np.int32]
    brand_codes: npt.NDArray[np.int32]
    prices: npt.NDArray[np.float64]
    unavailable: npt.NDArray[np.bool_]
    new_category_codes: npt.NDArray[np.int32]
    new_brand_codes: npt.NDArray[np.int32]
    new_prices: npt.NDArray[np.float64]
    new_unavailable: npt.NDArray[np.bool_]

    def category(self, slot: int) -> int:
        if slot < self.size:
            return int(self.category_codes[slot])
        return int(self.new_category_codes[slot - self.size])


@dataclass
class Rules:
    """Weights (target kind, slot or code, factor, starts, ends) and pins (slot, position,
    starts, ends), windows in seconds, active at ``now``."""

    weights: list[tuple[str, int, float, float, float]] = field(default_factory=list)
    pins: list[tuple[int, int, float, float]] = field(default_factory=list)
    now: float = 0.0


@dataclass
class Filters:
    excluded_rows: Sequence[int] = ()
    available_only: bool = False
    wanted_categories: Sequence[int] | None = None
    unwanted_categories: Sequence[int] = ()
    max_per_category: int = 0
    min_price: float | None = None
    max_price: float | None = None


def factor(c: Catalogue, rules: Rules, slot: int) -> np.float32:
    """The product of the factors of every active rule matching the slot."""
    category = c.category(slot)
    brand = int(c.brand_codes[slot] if slot < c.size else c.new_brand_codes[slot - c.size])
    product = 1.0
    for kind, target, f, starts, ends in rules.weights:
        if not starts <= rules.now < ends:
            continue
        if (
            (kind == "item" and target == slot)
            or (kind == "category" and category != NO_CATEGORY and target == category)
            or (kind == "brand" and brand != NO_BRAND and target == brand)
        ):
            product *= f
    return np.float32(min(max(product, 1e-9), 1e9))


def adjust(score: np.float32, f: np.float32) -> np.float32:
    return np.float32(score * f) if score >= 0 else np.float32(score / f)


def passes(c: Catalogue, filters: Filters, slot: int) -> bool:
    if slot < c.size:
        if slot in filters.excluded_rows:
            return False
        unavailable, price = bool(c.unavailable[slot]), float(c.prices[slot])
    else:
        unavailable = bool(c.new_unavailable[slot - c.size])
        price = float(c.new_prices[slot - c.size])
    if filters.available_only and unavailable:
        return False
    category = c.category(slot)
    if filters.wanted_categories is not None and category not in filters.wanted_categories:
        return False
    if category in filters.unwanted_categories:
        return False
    if filters.min_price is not None and not price >= filters.min_price:
        return False
    return filters.max_price is None or price <= filters.max_price  # NaN fails


class _Answer:
    """k positions, a per-category count and the cap."""

    def __init__(self, c: Catalogue, k: int, cap: int) -> None:
        self.c, self.cap = c, cap
        self.positions: list[tuple[int, float, int] | None] = [None] * k
        self.counts: dict[int, int] = {}

    def placed(self) -> set[int]:
        return {p[0] for p in self.positions if p is not None}

    def full(self, slot: int) -> bool:
        code = self.c.category(slot)
        return self.cap > 0 and code != NO_CATEGORY and self.counts.get(code, 0) >= self.cap

    def count(self, slot: int) -> None:
        code = self.c.category(slot)
        if code != NO_CATEGORY:
            self.counts[code] = self.counts.get(code, 0) + 1

    def free(self, start: int = 0) -> list[int]:
        return [at for at in range(start, len(self.positions)) if self.positions[at] is None]

    def pin(self, rules: Rules, ok, score_of) -> None:  # type: ignore[no-untyped-def]
        active = [(s, p) for s, p, a, b in rules.pins if a <= rules.now < b]
        for slot, position in sorted(active, key=lambda sp: sp[1]):  # stable: rule order
            if slot in self.placed() or not ok(slot):
                continue
            free = self.free(position - 1)
            if free:
                score = score_of(slot)
                self.positions[free[0]] = (
                    slot,
                    score if np.isfinite(score) else 0.0,
                    REASON_PROMOTED,
                )
                self.count(slot)

    def take(self, candidates: list[int], n: int) -> list[int]:
        taken = []
        while candidates and len(taken) < n:
            slot = candidates.pop(0)
            if self.full(slot):
                continue
            self.count(slot)
            taken.append(slot)
        return taken

    def finish(self, organic: list[tuple[int, float, int]], candidates: list[int]) -> list:  # type: ignore[type-arg]
        free = self.free()
        for at, pick in zip(free, organic, strict=False):
            self.positions[at] = pick
        left = self.free()
        for at, slot in zip(left, self.take(candidates, len(left)), strict=False):
            self.positions[at] = (slot, 0.0, REASON_NEW_ITEM)
        return [p for p in self.positions if p is not None]


def _organic(
    c: Catalogue, answer: _Answer, scores: dict[int, np.float32], n: int
) -> list[tuple[int, np.float32]]:
    """The best ``n`` of ``scores`` (finite), ties to the lower row, honouring the cap."""
    ranked = sorted(
        ((row, s) for row, s in scores.items() if np.isfinite(s)), key=lambda rs: (-rs[1], rs[0])
    )
    picked = []
    for row, score in ranked:
        if len(picked) == n:
            break
        if answer.full(row):
            continue
        answer.count(row)
        picked.append((row, score))
    return picked


def rank(
    c: Catalogue,
    raw_scores: npt.NDArray[np.float32],
    filters: Filters,
    rules: Rules,
    recent_categories: Sequence[int],
    new_item_slots: int,
    k: int,
) -> list[tuple[int, float, str]]:
    """A personal answer: (slot, score, "pin" | "new" | "organic"), in order.

    ``raw_scores[row]``: the blended score of every row before the rules (the ranker's).
    """
    answer = _Answer(c, k, filters.max_per_category)
    adjusted = {row: adjust(raw_scores[row], factor(c, rules, row)) for row in range(c.size)}
    answer.pin(
        rules,
        lambda slot: passes(c, filters, slot),
        lambda slot: adjusted[slot] if slot < c.size else 0.0,
    )
    # New items: distinct recent categories in order; within one, highest factor then newest.
    candidates: list[int] = []
    for code in dict.fromkeys(recent_categories):
        if code == NO_CATEGORY:
            continue
        in_category = [
            c.size + j
            for j in range(len(c.new_category_codes))
            if c.new_category_codes[j] == code and factor(c, rules, c.size + j) >= 1
        ]
        in_category.sort(key=lambda slot: (-factor(c, rules, slot), slot))
        candidates += [s for s in in_category if passes(c, filters, s) and s not in answer.placed()]
    chosen = answer.take(candidates, min(new_item_slots, len(answer.free())))
    for i, slot in enumerate(chosen):
        target = (i + 1) * k // (len(chosen) + 1)
        at = (answer.free(target) or answer.free())[0]
        answer.positions[at] = (slot, 0.0, REASON_NEW_ITEM)
    placed = answer.placed()
    eligible = {
        row: s for row, s in adjusted.items() if row not in placed and passes(c, filters, row)
    }
    organic = _organic(c, answer, eligible, len(answer.free()))
    done = answer.finish([(row, s, 0) for row, s in organic], candidates)
    kinds = {REASON_PROMOTED: "pin", REASON_NEW_ITEM: "new", 0: "organic"}
    return [(slot, float(score), kinds[reason]) for slot, score, reason in done]


def similar(
    c: Catalogue,
    norms: npt.NDArray[np.float32],
    row: int | None,
    covisits: dict[int, float],
    filters: Filters,
    rules: Rules,
    k: int,
) -> list[tuple[int, float, int]]:
    """Items next to ``row``: (slot, score, reason code), pins first."""

    def blended(r: int) -> np.float32:
        covisit = covisits.get(r)
        if row is None:
            score = np.float32(np.nan) if covisit is None else np.float32(covisit)
        else:
            dot = np.float32(0.0)
            for x, y in zip(c.matrix[r], c.matrix[row], strict=True):
                dot = np.float32(dot + np.float32(x * y))
            norm = np.float32(norms[r] + NORM_EPSILON) * np.float32(norms[row] + NORM_EPSILON)
            score = np.float32(COSINE_WEIGHT * np.float32(dot / norm))
            score = np.float32(score + np.float32(covisit or 0.0))
        return adjust(score, factor(c, rules, r))

    answer = _Answer(c, k, 0)
    answer.pin(
        rules,
        lambda slot: slot != row and passes(c, filters, slot),
        lambda slot: blended(slot) if slot < c.size else 0.0,
    )
    placed = answer.placed()
    rows = range(c.size) if row is not None else covisits
    eligible = {
        r: blended(r)
        for r in rows
        if r != row and r not in placed and passes(c, filters, r) and r < c.size
    }
    organic = [
        (r, s, REASON_VIEWED_TOGETHER if r in covisits else REASON_SIMILAR)
        for r, s in _organic(c, answer, eligible, len(answer.free()))
    ]
    return [(slot, float(score), reason) for slot, score, reason in answer.finish(organic, [])]


def from_lists(
    c: Catalogue,
    lists: Sequence[tuple[Sequence[int], Sequence[float], int, int]],
    filters: Filters,
    rules: Rules,
    k: int,
) -> list[tuple[int, float, int]]:
    """An answer from ranked lists (cold start): pins, then each list in turn, re-weighed
    (ties in the list's order), up to its quota: (slot, score, reason code)."""

    def adjusted(row: int, score: float) -> np.float32:
        return adjust(np.float32(score), factor(c, rules, row))

    def listed_score(row: int) -> float:
        for rows, scores, _, _ in lists:
            if row in rows:
                return float(adjusted(row, scores[list(rows).index(row)]))
        return 0.0

    answer = _Answer(c, k, filters.max_per_category)
    answer.pin(
        rules,
        lambda slot: passes(c, filters, slot),
        lambda slot: listed_score(slot) if slot < c.size else 0.0,
    )
    taken = answer.placed()
    want = len(answer.free())
    chosen: list[tuple[int, float, int]] = []
    for rows, scores, reason, quota in lists:
        order = sorted(
            ((adjusted(r, s), r) for r, s in zip(rows, scores, strict=True)), key=lambda sr: -sr[0]
        )
        added = 0
        for score, row in order:
            if len(chosen) == want or added == quota:
                break
            if row in taken or not passes(c, filters, row) or answer.full(row):
                continue
            answer.count(row)
            taken.add(row)
            chosen.append((row, float(score), reason))
            added += 1
    return [(slot, float(score), reason) for slot, score, reason in answer.finish(chosen, [])]
