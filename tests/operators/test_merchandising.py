"""The native merchandising (inside ``Ranker.rank`` and ``Ranker.similar_items``) against the
brute-force oracle ``tests/oracles/merchandising.py``, on random catalogues, rules and filters.

Vectors are small integers, popularity terms, evidence and co-visitation weights binary
fractions and every factor a power of two, so float32 arithmetic is exact in any order and
the answers (slots, scores, reasons) must be equal, not close.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import (
    NO_BRAND,
    NO_CATEGORY,
    REASON_NEW_ITEM,
    REASON_PROMOTED,
    REASON_SIMILAR,
    REASON_VIEWED_TOGETHER,
    Merchandising,
    Ranker,
)
from tests.oracles import merchandising as oracle

DIM = 4
INF = math.inf
PRICES = [math.nan, 0.0, 1.0, 2.5, 5.0, 10.0]
WINDOWS = [(-INF, INF), (-INF, 5.0), (0.0, 20.0), (10.0, INF), (10.0, 20.0)]


@st.composite
def catalogues(draw: st.DrawFn) -> oracle.Catalogue:
    size = draw(st.integers(1, 30))
    capacity = size + draw(st.integers(0, 2))  # rows past ``size``: never served
    n_new = draw(st.integers(0, 8))

    def ints(lo: int, hi: int, n: int, dtype: type) -> np.ndarray:
        return np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)), dtype)

    def picks(options: list, n: int, dtype: type) -> np.ndarray:
        return np.array(draw(st.lists(st.sampled_from(options), min_size=n, max_size=n)), dtype)

    return oracle.Catalogue(
        matrix=ints(-3, 3, capacity * DIM, np.float32).reshape(capacity, DIM),
        size=size,
        category_codes=ints(NO_CATEGORY, 3, capacity, np.int32),
        brand_codes=ints(NO_BRAND, 2, capacity, np.int32),
        prices=picks(PRICES, capacity, np.float64),
        unavailable=picks([False, False, True], capacity, np.bool_),
        new_category_codes=ints(NO_CATEGORY, 3, n_new, np.int32),
        new_brand_codes=ints(NO_BRAND, 2, n_new, np.int32),
        new_prices=picks(PRICES, n_new, np.float64),
        new_unavailable=picks([False, False, True], n_new, np.bool_),
    )


@st.composite
def rule_sets(draw: st.DrawFn, c: oracle.Catalogue) -> oracle.Rules:
    slots = c.size + len(c.new_category_codes)
    slot = st.integers(0, slots - 1)
    factor = st.sampled_from([0.25, 0.5, 2.0, 4.0])
    weights = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["item", "category", "brand"]))
        target = draw(slot if kind == "item" else st.integers(0, 3))
        starts, ends = draw(st.sampled_from(WINDOWS))
        weights.append((kind, target, draw(factor), starts, ends))
    pins = []
    for _ in range(draw(st.integers(0, 4))):
        starts, ends = draw(st.sampled_from(WINDOWS))
        pins.append((draw(slot), draw(st.integers(1, 6)), starts, ends))
    return oracle.Rules(weights, pins, draw(st.sampled_from([-1.0, 3.0, 7.0, 12.0, 25.0])))


@st.composite
def filter_sets(draw: st.DrawFn, c: oracle.Catalogue) -> oracle.Filters:
    bounds = sorted(draw(st.lists(st.sampled_from([0.0, 1.0, 2.5, 5.0]), min_size=2, max_size=2)))
    return oracle.Filters(
        excluded_rows=draw(st.lists(st.integers(0, c.size - 1), max_size=5, unique=True)),
        available_only=draw(st.booleans()),
        wanted_categories=draw(st.none() | st.lists(st.integers(-1, 3), min_size=1, max_size=3)),
        unwanted_categories=draw(st.lists(st.integers(-1, 3), max_size=2)),
        max_per_category=draw(st.integers(0, 3)),
        min_price=draw(st.none() | st.just(bounds[0])),
        max_price=draw(st.none() | st.just(bounds[1])),
    )


@st.composite
def requests(draw: st.DrawFn) -> dict:
    c = draw(catalogues())
    n_popular = draw(st.sampled_from([0, 1, 2, 4, 8]))
    popular: list[int | None] = []
    for p in draw(st.lists(st.integers(0, c.size - 1), min_size=n_popular, max_size=n_popular)):
        popular.append(None if p in popular else p)
    covisits = []
    for _ in range(draw(st.integers(0, 3))):
        rows = draw(st.lists(st.integers(0, c.size - 1), max_size=6, unique=True))
        weights = [draw(st.integers(1, 8)) / 8 for _ in rows]
        covisits.append((np.array(rows, np.intp), np.array(weights, np.float64)))
    return {
        "catalogue": c,
        "rules": draw(rule_sets(c)),
        "filters": draw(filter_sets(c)),
        "popular": popular,
        "covisits": covisits,
        "user": np.array(
            draw(st.lists(st.integers(-3, 3), min_size=DIM, max_size=DIM)), np.float32
        ),
        "evidence": draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])),
        "recent_categories": draw(st.lists(st.integers(-1, 3), max_size=5)),
        "new_item_slots": draw(st.integers(0, 3)),
        "k": draw(st.integers(1, 10)),
    }


def _norms(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.norm(matrix.astype(np.float64), axis=1).astype(np.float32)


def _native(c: oracle.Catalogue, rules: oracle.Rules, popular=()) -> tuple[Ranker, Merchandising]:  # type: ignore[no-untyped-def]
    ranker = Ranker(
        c.matrix, c.size, c.category_codes, c.unavailable, _norms(c.matrix), list(popular), [],
        c.prices,
    )  # fmt: skip
    merchandising = Merchandising(
        c.size, c.category_codes, c.brand_codes, c.new_category_codes, c.new_brand_codes,
        c.new_prices, c.new_unavailable, rules.weights, rules.pins, rules.now,
    )  # fmt: skip
    return ranker, merchandising


def _filter_kwargs(f: oracle.Filters) -> dict:
    return {
        "excluded_rows": list(f.excluded_rows), "available_only": f.available_only,
        "wanted_categories": f.wanted_categories, "unwanted_categories": list(f.unwanted_categories),
        "min_price": f.min_price, "max_price": f.max_price,
    }  # fmt: skip


def _raw_scores(r: dict) -> np.ndarray:
    """The ranker's blended score of every row, before the rules (exact here in float64)."""
    c = r["catalogue"]
    popularity = np.zeros(c.size)
    n = max(1, len(r["popular"]))
    for rank, row in enumerate(r["popular"]):
        if row is not None:
            popularity[row] = 1 - rank / n
    boost = np.zeros(c.size)
    for rows, weights in r["covisits"]:
        np.add.at(boost, rows, weights)
    ev = r["evidence"]
    dots = c.matrix[: c.size].astype(np.float64) @ r["user"].astype(np.float64)
    return (ev * dots + (1 - ev) * popularity + boost).astype(np.float32)


def _honest_graph(r: dict):  # type: ignore[no-untyped-def]
    """The exact best rows by inner product, and the lowest one returned (-inf: all)."""
    c = r["catalogue"]
    dots = c.matrix[: c.size].astype(np.float64) @ r["user"].astype(np.float64)
    order = sorted(range(c.size), key=lambda row: (-dots[row], row))

    def nearest(n: int) -> tuple[np.ndarray, float]:
        rows = order[:n]
        bound = -INF if len(rows) == c.size else float(dots[rows[-1]])
        return np.array(rows, np.intp), bound

    return nearest


def native_rank(r: dict, graph: bool = False) -> list[tuple[int, float, int]]:
    c, f = r["catalogue"], r["filters"]
    ranker, merchandising = _native(c, r["rules"], r["popular"])
    slots, scores, reasons = ranker.rank(
        r["user"].tobytes(), r["evidence"], r["k"],
        nearest=_honest_graph(r) if graph else None, covisits=r["covisits"],
        max_per_category=f.max_per_category, recent_rows=[],
        recent_categories=r["recent_categories"], merchandising=merchandising,
        new_item_slots=r["new_item_slots"], **_filter_kwargs(f),
    )  # fmt: skip
    return list(zip(slots, scores, reasons, strict=True))


def oracle_rank(r: dict) -> list[tuple[int, float, str]]:
    return oracle.rank(
        r["catalogue"], _raw_scores(r), r["filters"], r["rules"], r["recent_categories"],
        r["new_item_slots"], r["k"],
    )  # fmt: skip


def _kind(reason: int) -> str:
    assert reason >= -3 or reason in (REASON_NEW_ITEM, REASON_PROMOTED), reason
    return {REASON_NEW_ITEM: "new", REASON_PROMOTED: "pin"}.get(reason, "organic")


@settings(max_examples=500, deadline=None)
@given(requests())
def test_rank_equals_the_brute_force_oracle(r: dict) -> None:
    got = [(slot, score, _kind(reason)) for slot, score, reason in native_rank(r)]
    assert got == oracle_rank(r)


@settings(max_examples=300, deadline=None)
@given(requests())
def test_an_honest_graph_gives_the_brute_force_answer(r: dict) -> None:
    # Without a cap (rows tied at the graph's bound may be picked in another order, and with
    # a cap that changes which categories fill first), the scores and the placed items match.
    r["filters"].max_per_category = 0
    got = native_rank(r, graph=True)
    want = oracle_rank(r)
    assert [score for _, score, _ in got] == [score for _, score, _ in want]
    assert [(s, _kind(why)) for s, _, why in got if why < -3] == [
        (s, kind) for s, _, kind in want if kind != "organic"
    ]


@settings(max_examples=300, deadline=None)
@given(requests())
def test_an_answer_is_never_short_while_enough_items_qualify(r: dict) -> None:
    c, f, rules = r["catalogue"], r["filters"], r["rules"]
    got = native_rank(r, graph=True)
    raw = _raw_scores(r)
    qualifying = [
        row
        for row in range(c.size)
        if oracle.passes(c, f, row)
        and np.isfinite(oracle.adjust(raw[row], oracle.factor(c, rules, row)))
    ]
    # ... at most a cap's worth of each category qualifies.
    per_category: dict[int, int] = {}
    for row in qualifying:
        per_category[c.category(row)] = per_category.get(c.category(row), 0) + 1
    cap = f.max_per_category
    enough = sum(
        n if cap == 0 or code == NO_CATEGORY else min(n, cap) for code, n in per_category.items()
    )
    assert len(got) >= min(r["k"], enough)
    assert len({slot for slot, _, _ in got}) == len(got)
    for slot, _, reason in got:
        assert oracle.passes(c, f, slot)
        if reason == REASON_NEW_ITEM:
            assert slot >= c.size and c.category(slot) in r["recent_categories"]


@pytest.mark.parametrize("seed", range(4))
def test_boosted_rows_far_from_the_user_still_give_the_brute_force_answer(seed: int) -> None:
    """Hundreds of boosted rows (more than a graph round fetches): each request scores them
    all and the proof still accepts most graph answers."""
    rng = np.random.default_rng(seed)
    n = 3000
    c = oracle.Catalogue(
        rng.integers(-3, 4, (n, DIM)).astype(np.float32), n, rng.integers(0, 6, n).astype(np.int32),
        rng.integers(-1, 3, n).astype(np.int32), np.full(n, np.nan), np.zeros(n, np.bool_),
        *(np.zeros(0, t) for t in (np.int32, np.int32, np.float64, np.bool_)),
    )  # fmt: skip
    rules = oracle.Rules(
        weights=[("category", 0, 2.0, -INF, INF), ("brand", 1, 0.5, -INF, INF)]
        + [("item", int(r), 4.0, -INF, INF) for r in rng.choice(n, 50, replace=False)]
    )
    ranker, merchandising = _native(c, rules)
    assert len(merchandising.boosted_rows) > 300, f"seed {seed}"
    for _ in range(20):
        r = {
            "catalogue": c, "rules": rules, "filters": oracle.Filters(), "popular": [],
            "covisits": [], "recent_categories": [], "new_item_slots": 0, "k": 10,
            "user": rng.integers(-3, 4, DIM).astype(np.float32), "evidence": 1.0,
        }  # fmt: skip
        got = native_rank(r, graph=True)
        assert [s for _, s, _ in got] == [s for _, s, _ in oracle_rank(r)], f"seed {seed}"
    ranker, merchandising = _native(c, rules)
    misses = 0
    for _ in range(20):
        user = rng.integers(-3, 4, DIM).astype(np.float32)
        r = {"catalogue": c, "user": user}
        ranker.rank(
            user.tobytes(), 1.0, 10, nearest=_honest_graph(r), covisits=[], excluded_rows=[],
            available_only=False, wanted_categories=None, unwanted_categories=[],
            max_per_category=0, recent_rows=[], recent_categories=[], merchandising=merchandising,
        )  # fmt: skip
    misses = ranker.graph_misses
    assert misses < 20, f"seed {seed}: every answer needed brute force"


@st.composite
def similar_requests(draw: st.DrawFn) -> dict:
    c = draw(catalogues())
    row = draw(st.none() | st.integers(0, c.size - 1))
    neighbours = draw(st.lists(st.integers(0, c.size - 1), max_size=6, unique=True))
    covisits = {n: draw(st.integers(1, 8)) / 8 for n in neighbours}
    f = draw(filter_sets(c))
    f.excluded_rows, f.max_per_category = [], 0
    return {
        "catalogue": c,
        "row": row,
        "covisits": covisits,
        "filters": f,
        "rules": draw(rule_sets(c)),
        "k": draw(st.integers(1, 10)),
    }


@settings(max_examples=400, deadline=None)
@given(similar_requests())
def test_similar_items_equal_the_brute_force_oracle(r: dict) -> None:
    c, f = r["catalogue"], r["filters"]
    ranker, merchandising = _native(c, r["rules"])
    kwargs = _filter_kwargs(f)
    del kwargs["excluded_rows"]
    covisits = r["covisits"]
    slots, scores, reasons = ranker.similar_items(
        r["row"],
        r["k"],
        covisits=(np.array(list(covisits), np.intp), np.array(list(covisits.values())))
        if covisits
        else None,
        merchandising=merchandising,
        **kwargs,
    )
    want = oracle.similar(c, _norms(c.matrix), r["row"], covisits, f, r["rules"], r["k"])
    assert list(zip(slots, scores, reasons, strict=True)) == want


@st.composite
def list_requests(draw: st.DrawFn) -> dict:
    c = draw(catalogues())
    lists = []
    for reason in range(draw(st.integers(1, 3))):
        rows = draw(st.lists(st.integers(0, c.size - 1), max_size=12, unique=True))
        scores = [draw(st.integers(-16, 16)) / 4 for _ in rows]
        lists.append((rows, scores, reason, draw(st.integers(0, 6))))
    return {
        "catalogue": c,
        "lists": lists,
        "filters": draw(filter_sets(c)),
        "rules": draw(rule_sets(c)),
        "k": draw(st.integers(1, 10)),
    }


@settings(max_examples=400, deadline=None)
@given(list_requests())
def test_answers_from_lists_equal_the_brute_force_oracle(r: dict) -> None:
    c, f = r["catalogue"], r["filters"]
    ranker, merchandising = _native(c, r["rules"])
    slots, scores, reasons = ranker.rank_lists(
        [
            (np.array(rows, np.intp), np.array(scores, np.float32), reason, quota)
            for rows, scores, reason, quota in r["lists"]
        ],
        r["k"],
        max_per_category=f.max_per_category,
        merchandising=merchandising,
        **_filter_kwargs(f),
    )
    want = oracle.from_lists(c, r["lists"], f, r["rules"], r["k"])
    assert list(zip(slots, scores, reasons, strict=True)) == want


# --- golden examples ------------------------------------------------------------------------


def _catalogue(n: int, new: int = 0) -> oracle.Catalogue:
    """Row r points along (n - r): inner products n, n-1, ... with the user (1,0,0,0)."""
    matrix = np.zeros((n, DIM), np.float32)
    matrix[:, 0] = np.arange(n, 0, -1)
    return oracle.Catalogue(
        matrix, n, np.arange(n, dtype=np.int32) % 3, np.full(n, NO_BRAND, np.int32),
        np.arange(n, dtype=np.float64), np.zeros(n, np.bool_),
        np.full(new, 1, np.int32), np.full(new, NO_BRAND, np.int32),
        np.full(new, np.nan), np.zeros(new, np.bool_),
    )  # fmt: skip


def _rank(c: oracle.Catalogue, rules: oracle.Rules, k: int, **kwargs):  # type: ignore[no-untyped-def]
    ranker, merchandising = _native(c, rules)
    args = {
        "nearest": None, "covisits": [], "excluded_rows": [], "available_only": True,
        "wanted_categories": None, "unwanted_categories": [], "max_per_category": 0,
        "recent_rows": [], "recent_categories": [], "merchandising": merchandising,
    }  # fmt: skip
    args.update(kwargs)
    user = np.array([1, 0, 0, 0], np.float32).tobytes()
    return ranker.rank(user, 1.0, k, **args)


def test_golden_boost_bury_pin_and_new_item() -> None:
    c = _catalogue(6, new=2)  # inner products 6..1 for rows 0..5; new items 6, 7 in category 1
    rules = oracle.Rules(
        weights=[("item", 4, 4.0, -INF, INF), ("category", 0, 0.5, -INF, INF)],
        pins=[(5, 1, -INF, INF)],
    )
    slots, scores, reasons = _rank(c, rules, 5, recent_categories=[1], new_item_slots=1)
    # Row 5 pinned first (score 1); row 4 boosted 2 -> 8; rows 0 and 3 (category 0) buried
    # 6 -> 3 and 3 -> 1.5; the newest new item (slot 6) at position 5 * 1 // 2 = 2.
    assert slots == [5, 4, 6, 1, 2]
    assert scores == [1.0, 8.0, 0.0, 5.0, 4.0]
    assert reasons[0] == REASON_PROMOTED and reasons[2] == REASON_NEW_ITEM


def test_price_range_and_a_window_that_is_over() -> None:
    c = _catalogue(6)  # prices 0..5
    over = oracle.Rules(pins=[(5, 1, 0.0, 10.0)], now=10.0)  # ended at 10 (exclusive)
    slots, _, _ = _rank(c, over, 3, min_price=2.0, max_price=4.0)
    assert slots == [2, 3, 4]
    with pytest.raises(ValueError, match="min_price 4.0 is above max_price 2.0"):
        _rank(c, over, 3, min_price=4.0, max_price=2.0)


def test_a_selective_filter_still_fills_k_through_the_graph_rounds() -> None:
    """Only the 100 rows priced from 2,900 qualify, and they are the furthest from the user:
    the graph's rounds hold none of them, so the ranker asks for more, then brute-forces."""
    n = 3000
    c = _catalogue(n)  # price = row; inner product n - row
    asked: list[int] = []

    def nearest(k: int) -> tuple[np.ndarray, float]:
        asked.append(k)
        rows = np.arange(min(k, n), dtype=np.intp)
        return rows, float(n - rows[-1])

    slots, _, _ = _rank(c, oracle.Rules(), 10, nearest=nearest, min_price=2900.0)
    assert slots == list(range(2900, 2910))
    assert asked == [30, 240]


def test_similar_items_leave_out_sold_out_items_and_pin() -> None:
    c = _catalogue(5)
    c.matrix[:, 1] = 1.0  # every row at some angle to every other
    c.unavailable[1] = True
    rules = oracle.Rules(pins=[(4, 1, -INF, INF)])
    ranker, merchandising = _native(c, rules)
    slots, _, reasons = ranker.similar_items(
        0, 3, covisits=(np.array([3], np.intp), np.array([1.0])), available_only=True,
        wanted_categories=None, unwanted_categories=[], merchandising=merchandising,
    )  # fmt: skip
    assert slots[0] == 4 and reasons[0] == REASON_PROMOTED
    assert 1 not in slots and reasons[slots.index(3)] == REASON_VIEWED_TOGETHER
    assert all(r in (REASON_PROMOTED, REASON_VIEWED_TOGETHER, REASON_SIMILAR) for r in reasons)


def test_valid_until_is_the_next_window_edge() -> None:
    c = _catalogue(3)
    rules = oracle.Rules(weights=[("item", 0, 2.0, 10.0, 20.0)], pins=[(1, 1, -INF, 15.0)])
    _, merchandising = _native(c, rules)
    assert merchandising.valid_until_s == 10.0
    assert merchandising.factors() == [1.0, 1.0, 1.0]
    rules.now = 12.0
    _, merchandising = _native(c, rules)
    assert merchandising.valid_until_s == 15.0 and merchandising.factors()[0] == 2.0


@pytest.mark.parametrize(
    ("weights", "pins", "message"),
    [
        ([("item", 9, 2.0, -INF, INF)], [], "slot 9 is not in 0..3"),
        ([("shelf", 0, 2.0, -INF, INF)], [], "no weighing rule targets shelf"),
        ([("item", 0, 0.0, -INF, INF)], [], "not > 0"),
        ([], [(0, 1, 5.0, 5.0)], "must start before it ends"),
        ([], [(0, 0, -INF, INF)], "positions start at 1"),
    ],
)
def test_bad_rules_are_value_errors(weights, pins, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        _native(_catalogue(3), oracle.Rules(weights, pins))


def test_merchandising_of_other_items_is_refused() -> None:
    ranker, _ = _native(_catalogue(4), oracle.Rules())
    _, other = _native(_catalogue(3), oracle.Rules())
    with pytest.raises(ValueError, match="compiled for 3 items, the ranker has 4"):
        ranker.similar_items(
            0, 2, covisits=None, available_only=True, wanted_categories=None,
            unwanted_categories=[], merchandising=other,
        )  # fmt: skip
