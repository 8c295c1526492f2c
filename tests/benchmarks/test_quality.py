"""The quality harness's sessions protocol: V-SKNN by hand, the DIGINETICA split, intervals."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.quality import VSKNN, Event, bootstrap_ci, load_sessions, ranks_of


def view(session: str, item: str, ts: float) -> Event:
    return Event(f"s{session}", item, "view", ts, "?", (), f"e-{session}-{item}-{ts}", session)


def knn(sessions: dict[str, list[str]], **params: int) -> VSKNN:
    model = VSKNN(**params)
    for n, (session, items) in enumerate(sessions.items()):
        for m, item in enumerate(items):
            model.learn(view(session, item, 100.0 * n + m))
    return model


def test_vsknn_votes_with_similarity_over_step() -> None:
    model = knn({"a": ["x", "y"], "b": ["x", "z"], "c": ["w"]})
    model.learn(view("now", "y", 1000.0))
    model.learn(view("now", "x", 1001.0))
    # Weights of the current session: y 1/2, x 2/2; a shares both: (0.5 + 1) / 2 = 0.75,
    # b shares x: 1 / 2 = 0.5; both share the last item (step 1); c shares nothing.
    assert model.neighbours("now") == [("a", 0.75), ("b", 0.5)]
    probe = view("now", "?", 1002.0)
    assert model.recommend(probe, 10, set()) == ["x", "y", "z"]  # x 1.25, y 0.75, z 0.5
    assert model.recommend(probe, 10, {"x"}) == ["y", "z"]
    assert model.recommend(probe, 1, set()) == ["x"]


def test_vsknn_step_discounts_sessions_matched_by_older_items() -> None:
    model = knn({"a": ["x", "p"], "b": ["q", "r"]})
    model.learn(view("now", "x", 1000.0))
    model.learn(view("now", "q", 1001.0))
    # a matches x (weight 1/2, two steps from the end), b matches q (weight 1, step 1).
    assert model.neighbours("now") == [("b", 0.5), ("a", 0.25)]
    assert model.recommend(view("now", "?", 1002.0), 10, set()) == ["q", "r", "p", "x"]


def test_vsknn_samples_the_most_recent_sessions_and_never_itself() -> None:
    model = knn({"old": ["x", "y"], "new": ["x", "z"]}, sample_size=1)
    model.learn(view("now", "x", 1000.0))
    assert model.neighbours("now") == [("new", 1.0)]
    assert model.recommend(view("now", "?", 1001.0), 10, set()) == ["x", "z"]
    assert knn({"only": ["x"]}).recommend(view("only", "?", 5.0), 10, set()) == []
    with pytest.raises(ValueError):
        VSKNN(k=0)


def test_bootstrap_interval_brackets_the_mean_and_resamples_groups() -> None:
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert bootstrap_ci([]) == (0.0, 0.0)
    values = np.random.default_rng(3).random(400)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high
    # Two groups that are all hits or all misses: the interval spans almost everything.
    grouped = bootstrap_ci([1.0] * 50 + [0.0] * 50, ["a"] * 50 + ["b"] * 50)
    assert grouped[0] == 0.0 and grouped[1] == 1.0


def test_ranks_are_one_based_and_zero_when_absent() -> None:
    assert ranks_of([["a", "b"], ["c"]], ["b", "z"]).tolist() == [2, 0]


def test_sessions_split_scores_each_test_view_after_the_first() -> None:
    events, scored, n_sessions = load_sessions(min_item_support=2, test_days=30)
    first_test = scored.index(True) - 1
    train, test = events[:first_test], events[first_test:]
    assert n_sessions == len({e.session for e in test}) > 50
    assert not any(scored[:first_test])
    assert {e.session for e in train}.isdisjoint({e.session for e in test})
    assert {e.item for e in test} <= {e.item for e in train}
    assert [e.ts for e in train] == sorted(e.ts for e in train)
    previous = None
    for e, s in zip(test, scored[first_test:], strict=True):
        assert s == (e.session == previous)
        assert e.user == f"s{e.session}" and e.event_id.startswith("diginetica-")
        previous = e.session
    assert sum(scored) == len(test) - n_sessions
