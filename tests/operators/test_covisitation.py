"""Co-visitation: neighbours, session gap, decay, memory bounds."""

from __future__ import annotations

import pytest

from operators.covisitation import CoVisitation


def test_recommends_items_co_visited_with_recent_ones() -> None:
    cv = CoVisitation(half_life_s=3600.0)
    for user in ("a", "b", "c"):
        cv.learn(user, "phone", 0.0)
        cv.learn(user, "case", 10.0)
    cv.learn("d", "tv", 0.0)
    cv.learn("d", "cable", 1.0)
    cv.learn("z", "phone", 100.0)
    assert cv.recommend("z", 3, exclude={"phone"}) == ["case"]


def test_session_gap_separates_visits() -> None:
    cv = CoVisitation(session_gap_s=60.0)
    cv.learn("a", "x", 0.0)
    cv.learn("a", "y", 1000.0)
    assert cv.scores("a") == {}


def test_recent_co_visits_outweigh_old_ones() -> None:
    cv = CoVisitation(half_life_s=10.0, session_gap_s=1e9)
    cv.learn("a", "x", 0.0)
    cv.learn("a", "old", 1.0)
    cv.learn("b", "x", 100.0)
    cv.learn("b", "new", 101.0)
    cv.learn("c", "x", 102.0)
    assert cv.recommend("c", 2, exclude={"x"}) == ["new", "old"]


def test_memory_is_bounded() -> None:
    cv = CoVisitation(history=3, neighbours=4, max_items=10, max_users=5, session_gap_s=1e9)
    for t in range(500):
        cv.learn(f"u{t % 17}", f"i{t % 31}", float(t))
    assert len(cv.item_neighbours) <= 10
    assert len(cv.user_history) <= 5
    assert all(len(n.scores) <= 4 for n in cv.item_neighbours.values())
    assert all(len(h) <= 3 for h in cv.user_history.values())


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        CoVisitation(half_life_s=0)
    with pytest.raises(ValueError):
        CoVisitation().learn("a", "x", 0.0, weight=0.0)
