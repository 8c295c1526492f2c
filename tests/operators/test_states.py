"""Per-user and per-item state: what one event does, and snapshot/restore."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import popularity
from operators.isgd import IsgdParams, initial_vector, item_step, user_step
from operators.item_state import ItemConfig, ItemState
from operators.user_state import CoVisit, ItemUpdate, UserConfig, UserState

PARAMS = IsgdParams(factors=8, seed=5)
USER_CONFIG = UserConfig(window=4, seen_max=6, session_gap_s=100.0, covisit_span=3)
ITEM_CONFIG = ItemConfig(half_life_s=1000.0, trend_half_life_s=100.0, neighbour_capacity=4)
INTERACTIONS = ("view", "add_to_cart", "purchase", "favourite", "rec_click")


def item_vector(item_id: str) -> np.ndarray:
    return initial_vector(item_id, "item", PARAMS)


def apply(state: UserState, events) -> list[object]:
    """Feed events as the user step of the flow does; return everything it emits."""
    out: list[object] = []
    for event_id, item_id, event_type, ts_s in events:
        if state.is_duplicate(event_id, ts_s):
            out.append(("duplicate", event_id))
            continue
        if event_type in INTERACTIONS:
            update, covisits = state.learn(item_id, item_vector(item_id), event_type, ts_s)
            out.append(update)
            out.extend(covisits)
        else:
            state.observe(item_id, event_type, ts_s)
    return out


# --- UserState -------------------------------------------------------------------------------


def test_new_user_starts_from_the_seeded_vector() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)
    np.testing.assert_array_equal(state.vector, initial_vector("u1", "user", PARAMS))
    assert state.version == 0 and state.duplicates == 0


def test_learn_applies_the_user_half_and_hands_back_the_item_half() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)
    before = state.vector.copy()
    expected = before.copy()
    user_step(expected, item_vector("i1"), 3.0, PARAMS)

    update, covisits = state.learn("i1", item_vector("i1"), "purchase", 10.0)

    np.testing.assert_array_equal(state.vector, expected)
    assert update == ItemUpdate("i1", before.tobytes(), 3.0, 10.0)
    assert covisits == []
    assert state.version == 1
    assert state.window.recent_items() == ["i1"] and state.window.counts == {"purchase": 1}
    assert state.session.session_no == 1 and state.session.items == ("i1",)


def test_observe_counts_without_learning() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)
    before = state.vector.copy()
    state.observe("i1", "rec_impression", 5.0)
    np.testing.assert_array_equal(state.vector, before)
    assert state.version == 1
    assert state.window.counts == {"rec_impression": 1}
    assert state.window.recent_items() == [] and list(state.window.seen) == []
    assert state.window.last_ts_s == 5.0


def test_a_repeated_event_id_has_one_effect() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)
    out = apply(state, [("e1", "i1", "view", 1.0), ("e1", "i1", "view", 1.0)])
    assert out[1] == ("duplicate", "e1")
    assert state.version == 1 and state.duplicates == 1 and len(state.dedup) == 1


def test_covisits_pair_the_new_item_with_the_previous_items_of_the_session() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)  # span 3, gap 100 s
    apply(state, [(f"e{n}", item, "view", float(n)) for n, item in enumerate("abcd")])
    _, covisits = state.learn("e", item_vector("e"), "add_to_cart", 4.0)
    # Nearest previous item counts fully, then 1/2, 1/3; "a" is beyond the span of 3. One
    # message for the new item's owner, one for each earlier item's owner.
    assert covisits == [
        CoVisit("e", ("d", "c", "b"), (2.0, 1.0, 2.0 / 3), 4.0),
        CoVisit("d", ("e",), (2.0,), 4.0),
        CoVisit("c", ("e",), (1.0,), 4.0),
        CoVisit("b", ("e",), (2.0 / 3,), 4.0),
    ]
    # Coming back to an item of the session forms no new pairs ...
    assert state.learn("b", item_vector("b"), "view", 5.0)[1] == []
    # ... nor does the first item of a new session (gap > 100 s).
    _, covisits = state.learn("z", item_vector("z"), "view", 500.0)
    assert covisits == [] and state.session.session_no == 2


def user_events(max_size: int = 40):
    return st.lists(
        st.tuples(
            st.sampled_from([f"e{n}" for n in range(30)]),
            st.sampled_from([f"i{n}" for n in range(8)]),
            st.sampled_from([*INTERACTIONS, "rec_impression"]),
            st.floats(0, 2000),
        ),
        max_size=max_size,
    )


@given(before=user_events(), after=user_events())
@settings(deadline=None)
def test_restored_user_state_behaves_identically(before, after) -> None:
    original = UserState("u1", PARAMS, USER_CONFIG)
    apply(original, before)
    snap = original.snapshot()
    restored = UserState.restore(snap, PARAMS, USER_CONFIG)
    assert restored.snapshot() == snap
    assert apply(restored, after) == apply(original, after)
    assert restored.snapshot() == original.snapshot()
    np.testing.assert_array_equal(restored.vector, original.vector)


def test_user_snapshot_is_immutable_and_detached() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)
    apply(state, [("e1", "i1", "view", 1.0)])
    snap = state.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.version = 9  # type: ignore[misc]
    apply(state, [("e2", "i2", "purchase", 2.0)])
    assert snap.version == 1 and snap.window.seen == ("i1",)
    assert np.frombuffer(snap.vector, dtype=np.float32).tolist() != state.vector.tolist()


# --- ItemState -------------------------------------------------------------------------------


def test_item_learn_applies_the_item_half_and_counts_popularity() -> None:
    state = ItemState("i1", PARAMS, ITEM_CONFIG)
    user_vec = initial_vector("u1", "user", PARAMS)
    expected = initial_vector("i1", "item", PARAMS)
    item_step(expected, user_vec, 2.0, PARAMS)

    state.learn(user_vec, 2.0, 50.0)

    np.testing.assert_array_equal(state.vector, expected)
    assert state.version == 1 and state.last_ts_s == 50.0
    assert state.popularity_log2 == popularity.add_event(
        popularity.NO_POPULARITY, 2.0, 50.0, 1000.0
    )
    assert state.short_popularity_log2 == 50.0 / 100.0 + 1.0


def test_trend_needs_enough_recent_weight_then_compares_rates() -> None:
    state = ItemState("i1", PARAMS, ITEM_CONFIG)  # trend_min_events 3
    user_vec = initial_vector("u1", "user", PARAMS)
    state.learn(user_vec, 1.0, 0.0)
    state.learn(user_vec, 1.0, 0.0)
    assert state.trend_log2() is None
    state.learn(user_vec, 2.0, 0.0)
    # Four units of weight just now in both views: rate ratio = long / short half-life.
    assert state.trend_log2() == pytest.approx(math.log2(1000.0 / 100.0))


def test_covisits_keep_the_strongest_neighbours() -> None:
    state = ItemState("i1", PARAMS, ITEM_CONFIG)  # capacity 4
    for n, weight in enumerate([5.0, 1.0, 4.0, 2.0, 3.0]):
        state.covisit(f"n{n}", weight, 0.0)
    assert state.covisit_version == 5
    assert [i for i, _ in state.neighbours.top(10)] == ["n0", "n2", "n4", "n3"]
    assert state.neighbours.top(1) == [("n0", math.log2(5.0))]
    assert state.version == 0  # co-visits do not touch the factors


item_messages = st.lists(
    st.one_of(
        st.tuples(
            st.just("learn"),
            st.sampled_from(["u1", "u2", "u3"]),
            st.sampled_from([1.0, 2.0, 3.0]),
            st.floats(0, 5000),
        ),
        st.tuples(
            st.just("covisit"),
            st.sampled_from([f"n{n}" for n in range(7)]),
            st.floats(0.1, 3.0),
            st.floats(0, 5000),
        ),
    ),
    max_size=40,
)


def apply_items(state: ItemState, messages) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for kind, other, weight, ts_s in messages:
        if kind == "learn":
            state.learn(initial_vector(other, "user", PARAMS), weight, ts_s)
        else:
            state.covisit(other, weight, ts_s)
        out.append(
            (
                state.vector.tobytes(),
                state.popularity_log2,
                state.trend_log2(),
                state.neighbours.top(3),
            )
        )
    return out


@given(before=item_messages, after=item_messages)
@settings(deadline=None)
def test_restored_item_state_behaves_identically(before, after) -> None:
    original = ItemState("i1", PARAMS, ITEM_CONFIG)
    apply_items(original, before)
    snap = original.snapshot()
    restored = ItemState.restore(snap, PARAMS, ITEM_CONFIG)
    assert restored.snapshot() == snap
    assert apply_items(restored, after) == apply_items(original, after)
    assert restored.snapshot() == original.snapshot()
