"""Candidate generation (HNSW snapshot + delta, exact re-scoring) against brute force.

A synthetic 20k x 32 catalogue (gaussian clusters, seeded) is written to the session's real
Redis through the store; two recommenders serve it: one with the graph (``ann_min_items``
lowered so it is built) and one that always brute-forces. The graph's answers must match.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from serving.item_index import ItemIndex, ItemMatrix
from serving.recommender import Filters, Recommender
from state.records import NeighboursRecord, UserRecord, vector_to_bytes
from state.store import ItemWrite, RedisStore
from tests.conftest import unique_settings

pytestmark = pytest.mark.integration

SEED = 20240611
N_ITEMS, FACTORS, N_CLUSTERS, N_USERS = 20_000, 32, 64, 200


def _user(rng: np.random.Generator, centers: np.ndarray, version: int) -> UserRecord:
    vector = centers[rng.integers(len(centers))] + 0.8 * rng.normal(size=FACTORS)
    seen = [f"i{n}" for n in rng.integers(0, N_ITEMS, 10)]
    vector_bytes = vector_to_bytes((0.1 * vector).astype(np.float32))
    return UserRecord(version, 0.0, 0.0, vector_bytes, seen, seen, {"view": version})


def _wait_graph(index: ItemIndex) -> None:
    deadline = time.monotonic() + 60
    while index.current.candidates is None:
        index.candidates.wait_built(1.0)
        index.refresh()
        assert time.monotonic() < deadline, f"graph not built (seed {SEED})"


def _graph_and_exact(store: RedisStore) -> tuple[Recommender, Recommender]:
    """A recommender on the HNSW graph (built, waited for) and one on brute force."""
    graph_index = ItemIndex(store, 0.1, ann_min_items=1000)
    exact_index = ItemIndex(store, 0.1, ann_min_items=10**9)
    for index in (graph_index, exact_index):
        index.refresh()
        index.refresh_lists()
    _wait_graph(graph_index)
    assert exact_index.current.candidates is None
    return Recommender(store, graph_index), Recommender(store, exact_index)


@pytest.fixture(scope="module")
def served(stack, tmp_path_factory) -> Iterator[tuple[RedisStore, Recommender, Recommender]]:
    settings = unique_settings(stack, tmp_path_factory.mktemp("cand"), factors=FACTORS)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, FACTORS)
    rng = np.random.default_rng(SEED)
    centers = rng.normal(size=(N_CLUSTERS, FACTORS))
    cluster = rng.integers(0, N_CLUSTERS, N_ITEMS)
    vectors = 0.1 * (centers[cluster] + 0.8 * rng.normal(size=(N_ITEMS, FACTORS)))
    popularity = rng.normal(size=N_ITEMS)
    writes = [
        ItemWrite(
            f"i{n}",
            1,
            vector_to_bytes(vectors[n].astype(np.float32)),
            float(popularity[n]),
            None,
            f"c{cluster[n] % 16}",
        )
        for n in range(N_ITEMS)
    ]
    for start in range(0, N_ITEMS, 1000):
        store.write_items(writes[start : start + 1000])
    users = [(f"u{n}", _user(rng, centers, int(rng.integers(1, 50)))) for n in range(N_USERS)]
    store.write_users(users)
    yield store, *_graph_and_exact(store)
    store.delete_namespace()


def _ids(recommender: Recommender, user_id: str, k: int = 10, **filters: object) -> list[str]:
    return [i.item_id for i in recommender.recommend(user_id, k, Filters(**filters)).items]


def test_recall_at_10_against_brute_force(served) -> None:
    _, graph, exact = served
    hits = [len(set(_ids(graph, f"u{n}")) & set(_ids(exact, f"u{n}"))) / 10 for n in range(N_USERS)]
    assert np.mean(hits) >= 0.95, f"recall {np.mean(hits):.3f} (seed {SEED})"


def test_updated_and_new_items_are_served_before_the_next_rebuild(served) -> None:
    store, graph, exact = served
    user = store.get_user("u1")
    assert user is not None
    generation = graph.index.current.candidates.generation
    boosted = 50 * np.frombuffer(user.vector, np.float32)
    store.write_items(
        [
            ItemWrite("i7", 2, vector_to_bytes(boosted), 0.0, None, "c1"),
            ItemWrite("brand-new", 1, vector_to_bytes(0.9 * boosted), 0.0, None, "c1"),
        ]
    )
    graph.index.refresh()
    exact.index.refresh()
    assert graph.index.current.candidates.generation == generation  # no rebuild yet
    assert _ids(graph, "u1", exclude="none")[:2] == ["i7", "brand-new"]
    assert _ids(graph, "u1", exclude="none") == _ids(exact, "u1", exclude="none")


def test_a_matrix_with_short_per_row_arrays_is_refused() -> None:
    ids = ("a", "b")
    with pytest.raises(ValueError, match="norms"):
        ItemMatrix(
            ids, {"a": 0, "b": 1}, np.zeros((2, 4), np.float32), np.zeros(2, np.int32),
            np.zeros(2, np.bool_), 0, norms=np.zeros(1, np.float32),
        )  # fmt: skip


def test_row_norms_follow_updated_and_new_items(stack, tmp_path) -> None:
    """Cosine similarity reads norms kept per row: updated, new and grown rows included."""
    factors = 8
    settings = unique_settings(stack, tmp_path, factors=factors)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, factors)
    rng = np.random.default_rng(SEED + 3)

    def items(ids: list[str], version: int) -> list[ItemWrite]:
        vectors = rng.normal(size=(len(ids), factors)).astype(np.float32)
        return [
            ItemWrite(i, version, vector_to_bytes(v), 0.0)
            for i, v in zip(ids, vectors, strict=True)
        ]

    try:
        index = ItemIndex(store, 0.1)
        store.write_items(items([f"i{n}" for n in range(1000)], 1))
        index.refresh()
        capacity = index.current.matrix.shape[0]
        # i9 updated; new items one past the arrays' capacity, so they grow.
        grown = [f"new-{n}" for n in range(capacity - index.current.size + 1)]
        store.write_items(items(["i9", *grown], 2))
        index.refresh()
        matrix = index.current
        assert matrix.matrix.shape[0] > capacity, "the arrays did not grow"
        expected = np.linalg.norm(matrix.vectors().astype(np.float64), axis=1)
        np.testing.assert_allclose(matrix.norms[: matrix.size], expected, rtol=1e-5)
        row = matrix.rows["i9"]
        cosine = matrix.vectors() @ matrix.matrix[row] / (expected * expected[row])
        cosine[row] = -np.inf
        best = [matrix.item_ids[r] for r in np.argsort(-cosine)[:5]]
        similar = Recommender(store, index).similar("i9", 5).items
        assert [it.item_id for it in similar] == best, f"seed {SEED + 3}"
    finally:
        store.delete_namespace()


@pytest.mark.parametrize(
    "filters",
    [
        {"categories": frozenset({"c3"})},
        {"exclude_categories": frozenset({"c0", "c1", "c2"})},
        {"max_per_category": 2},
        {"exclude": "none", "available_only": False},
    ],
)
def test_filters_hold_exactly(served, filters) -> None:
    store, graph, exact = served
    categories = graph.index.catalogue
    for n in range(0, N_USERS, 20):
        user = store.get_user(f"u{n}")
        got = _ids(graph, f"u{n}", k=10, **filters)
        assert len(got) == 10
        if filters.get("exclude", "seen") == "seen":
            assert not set(got) & set(user.seen)
        cats = [categories.category_of(i) for i in got]
        if "categories" in filters:
            assert set(cats) <= filters["categories"]
        if "exclude_categories" in filters:
            assert not set(cats) & filters["exclude_categories"]
        if "max_per_category" in filters:
            assert max(cats.count(c) for c in cats) <= filters["max_per_category"]
        overlap = len(set(got) & set(_ids(exact, f"u{n}", k=10, **filters)))
        assert overlap >= 8, f"user u{n} {filters} overlap {overlap} (seed {SEED})"


def test_result_cache_is_invalidated_by_the_user_version(served) -> None:
    store, graph, exact = served
    first = graph.recommend("u5", 10)
    hits = graph.result_cache_hits
    again = graph.recommend("u5", 10)
    assert graph.result_cache_hits == hits + 1  # served from the per-user cache
    assert again.items == first.items
    assert again.recommendation_id != first.recommendation_id
    old = store.get_user("u5")
    flipped = -np.frombuffer(old.vector, np.float32)
    newer = UserRecord(
        old.version + 1, 0.0, 0.0, vector_to_bytes(flipped), old.recent, old.seen,
        {"view": old.version + 1},
    )  # fmt: skip
    assert store.write_users([("u5", newer)]) == 1
    fresh = graph.recommend("u5", 10)
    assert graph.result_cache_hits == hits + 1
    assert [i.item_id for i in fresh.items] == _ids(exact, "u5")


# --- bounded candidates on a planted example --------------------------------------------------
PLANTED_ITEMS, PLANTED_FACTORS, PLANTED_SEEN = 3_000, 16, 80


@pytest.fixture(scope="module")
def planted(stack, tmp_path_factory) -> Iterator[tuple[RedisStore, Recommender, Recommender]]:
    """Popularity strictly by id (i0 the most popular); users whose answer lies deep in it.

    ``heavy-seen`` has almost no evidence (version 1: popularity weighs 5/6) and has seen the
    80 most popular items, so every popular candidate of the first round is excluded and only
    the popular bound can tell that the graph's rows are not the answer. ``planted`` has
    plenty of evidence and a vector pointing at one unpopular item.
    """
    settings = unique_settings(stack, tmp_path_factory.mktemp("planted"), factors=PLANTED_FACTORS)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, PLANTED_FACTORS)
    rng = np.random.default_rng(SEED + 1)
    vectors = (0.1 * rng.normal(size=(PLANTED_ITEMS, PLANTED_FACTORS))).astype(np.float32)
    store.write_items(
        [
            ItemWrite(f"i{n}", 1, vector_to_bytes(vectors[n]), float(PLANTED_ITEMS - n), None)
            for n in range(PLANTED_ITEMS)
        ]
    )
    most_popular = [f"i{n}" for n in range(PLANTED_SEEN)]
    random_vector = (0.1 * rng.normal(size=PLANTED_FACTORS)).astype(np.float32)
    users = [
        (
            "heavy-seen",
            UserRecord(1, 0.0, 0.0, vector_to_bytes(random_vector), [], most_popular, {"view": 1}),
        ),
        (
            "planted",
            UserRecord(
                10_000, 0.0, 0.0, vector_to_bytes(30 * vectors[2500]), [], [], {"view": 10_000}
            ),
        ),
        (
            "middle",
            UserRecord(
                5, 0.0, 0.0, vector_to_bytes(random_vector), [], most_popular[:20], {"view": 5}
            ),
        ),
    ]
    store.write_users(users)
    yield store, *_graph_and_exact(store)
    store.delete_namespace()


@pytest.mark.parametrize("user_id", ["heavy-seen", "planted", "middle"])
def test_bounded_candidates_return_the_brute_force_top_k(planted, user_id) -> None:
    _, graph, exact = planted
    graph._results.clear()
    ranker = graph._ranker(graph.index.current)
    misses = ranker.graph_misses
    got = _ids(graph, user_id)
    assert graph._ranker(graph.index.current) is ranker
    assert ranker.graph_misses == misses, "served by brute force, not the candidates"
    assert got == _ids(exact, user_id), f"{user_id} (seed {SEED + 1})"


def test_popular_bound_reaches_past_the_first_round(planted) -> None:
    _, graph, _ = planted
    got = _ids(graph, "heavy-seen")
    ranks = sorted(int(i[1:]) for i in got)
    # Popularity dominates: the next most popular items the user has not seen.
    assert ranks[0] >= PLANTED_SEEN and ranks[-1] < PLANTED_SEEN + 30, ranks
    assert _ids(graph, "planted")[0] == "i2500"


def test_unchanged_lists_keep_the_result_cache(planted) -> None:
    _, graph, _ = planted
    first = graph.recommend("middle", 10)
    generation, hits = graph.index.lists_generation, graph.result_cache_hits
    graph.index.refresh_lists()  # same popular and trending lists
    assert graph.index.lists_generation == generation
    assert graph.recommend("middle", 10).items == first.items
    assert graph.result_cache_hits == hits + 1


def test_co_visitation_boosts_and_explains_by_the_most_recent_source(served) -> None:
    """Boosts of one item from several sources add up; its reason names the most recent."""
    store, graph, exact = served
    recent = ["i101", "i202"]  # most recent first
    store.write_neighbours(
        [
            # ghost: no factors (ignored); i303: seen (excluded); i404 from both sources.
            ("i101", NeighboursRecord(1, ["i404", "ghost", "i303"], [5.0, 4.0, 3.0])),
            ("i202", NeighboursRecord(1, ["i505", "i404"], [9.0, 6.0])),
        ]
    )
    # A zero vector with much evidence: only co-visitation separates items.
    user = UserRecord(
        1000,
        0.0,
        0.0,
        vector_to_bytes(np.zeros(FACTORS, np.float32)),
        recent,
        [*recent, "i303"],
        {"view": 1000},
    )
    store.write_users([("u-covisit", user)])
    for recommender in (graph, exact):
        items = recommender.recommend("u-covisit", 5).items
        top = {i.item_id: i for i in items[:2]}
        assert set(top) == {"i404", "i505"}, items
        assert top["i404"].reason == "because you viewed i101"
        assert top["i505"].reason == "because you viewed i202"
        # i404: 0.3 (top of i101's list) + 0.3 * 2^(6 - 9); i505: 0.3 (top of i202's list).
        assert top["i404"].score - top["i505"].score == pytest.approx(0.0375, abs=0.01)
        assert "i303" not in {i.item_id for i in items}


def test_impressions_are_no_evidence_of_taste(served) -> None:
    """The popularity blend weighs a user's vector by their interactions with items: the
    impressions a storefront sends for every panel shown train nothing."""
    store, graph, _ = served
    old = store.get_user("u7")
    assert old is not None

    def user(version: int, counts: dict[str, int]) -> UserRecord:
        return UserRecord(version, 0.0, 0.0, old.vector, old.recent, old.seen, counts)

    store.write_users(
        [
            ("viewed-2", user(2, {"view": 2})),
            ("viewed-2-shown-38", user(40, {"view": 2, "rec_impression": 38})),
            ("viewed-40", user(40, {"view": 40})),
        ]
    )

    def answer(user_id: str) -> list[tuple[str, float]]:
        return [(it.item_id, it.score) for it in graph.recommend(user_id, 10).items]

    assert answer("viewed-2-shown-38") == answer("viewed-2")
    assert answer("viewed-40") != answer("viewed-2")  # the evidence does move the answer
