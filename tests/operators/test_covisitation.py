"""Co-visitation (the harness's model, native): neighbours, session gap, decay, memory bounds,
and the same answers as the Python oracle on random streams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import CoVisitation
from tests.oracles.covisitation import CoVisitation as OracleCoVisitation


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
    assert cv.sizes == (10, 5)
    longest_neighbours, longest_history = cv.longest
    assert longest_neighbours <= 4 and longest_history <= 3


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        CoVisitation(half_life_s=0)
    with pytest.raises(ValueError):
        CoVisitation().learn("a", "x", 0.0, weight=0.0)


streams = st.lists(
    st.tuples(
        st.sampled_from([f"u{i}" for i in range(6)]),
        st.sampled_from([f"i{i}" for i in range(12)]),
        st.floats(0.0, 50.0),
        st.sampled_from([1.0, 2.0, 3.0]),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(
    stream=streams,
    history=st.integers(1, 4),
    neighbours=st.integers(1, 5),
    max_items=st.integers(1, 8),
    max_users=st.integers(1, 4),
)
def test_native_equals_the_python_oracle(
    stream: list[tuple[str, str, float, float]],
    history: int,
    neighbours: int,
    max_items: int,
    max_users: int,
) -> None:
    args = dict(
        half_life_s=20.0,
        history=history,
        neighbours=neighbours,
        session_gap_s=10.0,
        recency_decay=0.7,
        max_items=max_items,
        max_users=max_users,
    )
    native, oracle = CoVisitation(**args), OracleCoVisitation(**args)
    ts = 0.0
    for user, item, step, weight in stream:
        ts += step
        native.learn(user, item, ts, weight)
        oracle.learn(user, item, ts, weight)
    for user in {u for u, *_ in stream}:
        assert native.last_items(user) == oracle.last_items(user)
        assert native.scores(user, ts + 5.0) == oracle.scores(user, ts + 5.0)
        assert native.recommend(user, 4, {"i0"}) == oracle.recommend(user, 4, exclude={"i0"})
