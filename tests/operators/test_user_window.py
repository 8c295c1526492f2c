"""A user's bounded recent window, seen and purchased lists and type counts, now inside the
native ``UserState``: tested through it, and against the Python oracle
(``tests/oracles/user_window.py``) on random streams."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import IsgdParams, UserConfig, UserState, initial_vector
from tests.oracles.user_window import UserWindow

Interaction = tuple[str, str, float]
INTERACTIONS = ["view", "add_to_cart", "purchase", "favourite", "rec_click"]
PARAMS = IsgdParams(factors=4, seed=11)

interactions = st.lists(
    st.tuples(
        st.sampled_from([f"i{n}" for n in range(12)]),
        st.sampled_from(INTERACTIONS),
        st.floats(0, 1e6),
    ),
    max_size=80,
)
bounds = st.integers(1, 6).flatmap(lambda w: st.tuples(st.just(w), st.integers(w, w + 6)))


def user(window: int = 50, seen_max: int = 500) -> UserState:
    return UserState("u", PARAMS, UserConfig(window=window, seen_max=seen_max))


def vector(item_id: str) -> np.ndarray:
    return initial_vector(item_id, "item", PARAMS)


def fill(state: UserState, events: list[Interaction]) -> UserState:
    for item_id, event_type, ts_s in events:
        state.learn(item_id, vector(item_id), event_type, ts_s)
    return state


def reference_seen(events: list[Interaction], seen_max: int) -> list[str]:
    """Distinct items by their last interaction, oldest first, the newest ``seen_max`` kept."""
    last: dict[str, int] = {}
    for n, (item_id, _, _) in enumerate(events):
        last[item_id] = n
    return sorted(last, key=last.__getitem__)[-seen_max:]


@given(events=interactions, sizes=bounds)
def test_recent_items_are_the_distinct_items_of_the_last_window_most_recent_first(
    events, sizes
) -> None:
    window, seen_max = sizes
    state = fill(user(window, seen_max), events)
    expected: list[str] = []
    for item_id, _, _ in reversed(events[-window:]):
        if item_id not in expected:
            expected.append(item_id)
    assert state.recent_items() == expected
    assert len(state.recent_items()) <= window


@given(events=interactions, sizes=bounds)
def test_seen_is_bounded_and_forgets_the_least_recent_first(events, sizes) -> None:
    window, seen_max = sizes
    state = fill(user(window, seen_max), events)
    assert state.seen == reference_seen(events, seen_max)
    assert len(state.seen) <= seen_max
    # Whatever is in the window is still excluded (seen_max >= window).
    assert set(state.recent_items()) <= set(state.seen)


@given(events=interactions, sizes=bounds)
def test_purchased_is_the_seen_list_of_purchases(events, sizes) -> None:
    window, seen_max = sizes
    state = fill(user(window, seen_max), events)
    purchases = [e for e in events if e[1] == "purchase"]
    assert state.purchased == reference_seen(purchases, seen_max)


@given(events=interactions)
def test_counts_and_last_time_cover_every_interaction(events) -> None:
    state = fill(user(2, 2), events)
    assert state.counts == dict(Counter(t for _, t, _ in events))
    assert state.last_ts_s == max((ts for _, _, ts in events), default=float("-inf"))


def test_golden_example() -> None:
    state = user(window=3, seen_max=4)
    for n, item in enumerate(["a", "b", "a", "c", "d", "e"]):
        state.learn(item, vector(item), "view", float(n))
    assert state.recent_items() == ["e", "d", "c"]
    assert state.seen == ["a", "c", "d", "e"]
    state.learn("a", vector("a"), "purchase", 2.5)  # late event: refreshes "a", time stays
    assert state.seen == ["c", "d", "e", "a"]
    assert state.recent_items() == ["a", "e", "d"]
    assert state.purchased == ["a"]
    assert state.counts == {"view": 6, "purchase": 1}
    assert state.last_ts_s == 5.0
    state.learn("f", vector("f"), "view", 6.0)
    assert state.seen == ["d", "e", "a", "f"]  # "c" was the least recently consumed
    state.observe("g", "rec_impression", 7.0)  # counted, never in the window
    assert state.counts == {"view": 7, "purchase": 1, "rec_impression": 1}
    assert "g" not in state.seen and state.last_ts_s == 7.0


@given(before=interactions, after=interactions, sizes=bounds)
@settings(deadline=None)
def test_restored_window_behaves_identically(before, after, sizes) -> None:
    window, seen_max = sizes
    config = UserConfig(window=window, seen_max=seen_max)
    original = fill(UserState("u", PARAMS, config), before)
    restored = UserState.from_state(original.to_state(), PARAMS, config)
    fill(original, after)
    fill(restored, after)
    assert restored.to_state() == original.to_state()
    assert restored.recent_items() == original.recent_items()
    assert restored.seen == original.seen and restored.purchased == original.purchased
    assert restored.counts == original.counts


def test_snapshot_is_immutable_and_detached() -> None:
    state = fill(user(3, 3), [("a", "view", 1.0), ("b", "view", 2.0)])
    snap = state.to_state()
    assert isinstance(snap, bytes)
    fill(state, [("c", "purchase", 3.0)])
    back = UserState.from_state(snap, PARAMS, UserConfig(window=3, seen_max=3))
    assert back.seen == ["a", "b"] and back.counts == {"view": 2} and back.purchased == []
    assert back.last_ts_s == 2.0


def test_empty_window() -> None:
    state = user()
    assert state.recent_items() == [] and state.counts == {} and state.seen == []
    assert state.purchased == [] and state.last_ts_s == float("-inf")
    config = UserConfig()
    assert UserState.from_state(state.to_state(), PARAMS, config).to_state() == state.to_state()


@pytest.mark.parametrize(("window", "seen_max"), [(0, 5), (-1, 5), (5, 4)])
def test_bad_bounds_raise_value_error_as_the_oracle_did(window: int, seen_max: int) -> None:
    with pytest.raises(ValueError) as theirs:
        UserWindow(window, seen_max)
    with pytest.raises(ValueError) as ours:
        UserConfig(window=window, seen_max=seen_max)
    assert str(ours.value) == str(theirs.value)


# --- native vs the Python oracle -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from([f"i{n}" for n in range(15)]),
            st.sampled_from([*INTERACTIONS, "purchase", "rec_impression"]),
            st.floats(-1e6, 1e6),
        ),
        max_size=120,
    ),
    sizes=bounds,
)
def test_window_matches_the_oracle(events: list[Interaction], sizes: tuple[int, int]) -> None:
    window, seen_max = sizes
    native, oracle = user(window, seen_max), UserWindow(window, seen_max)
    for item_id, event_type, ts_s in events:
        if event_type == "rec_impression":
            native.observe(item_id, event_type, ts_s)
            # what the oracle UserState.observe does to its window
            oracle.counts[event_type] = oracle.counts.get(event_type, 0) + 1
            oracle.last_ts_s = max(oracle.last_ts_s, ts_s)
        else:
            native.learn(item_id, vector(item_id), event_type, ts_s)
            oracle.add(item_id, event_type, ts_s)
        assert native.recent_items() == oracle.recent_items()
        assert native.seen == list(oracle.seen)
        assert native.purchased == list(oracle.purchased)
        assert native.counts == oracle.counts
        assert native.last_ts_s == oracle.last_ts_s
