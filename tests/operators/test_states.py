"""Per-user and per-item state (native): what one event does, snapshot/restore, and the same
answers as the Python oracles (``tests/oracles/user_state.py``, ``item_state.py``) on random
event streams."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import (
    NO_POPULARITY,
    IsgdParams,
    ItemConfig,
    ItemState,
    UserConfig,
    UserRecalibrationConfig,
    UserState,
    add_event,
    initial_vector,
    item_step,
    user_step,
)
from tests.oracles import isgd as oracle_isgd
from tests.oracles import item_state as oracle_item
from tests.oracles import popularity as oracle_popularity
from tests.oracles import recalibration as oracle_recalibration
from tests.oracles import user_state as oracle_user

PARAMS = IsgdParams(factors=8, seed=5)
USER_CONFIG = UserConfig(window=4, seen_max=6, session_gap_s=100.0, covisit_span=3)
ITEM_CONFIG = ItemConfig(half_life_s=1000.0, trend_half_life_s=100.0, neighbour_capacity=4)
INTERACTIONS = ("view", "add_to_cart", "purchase", "favourite", "rec_click")

ORACLE_PARAMS = oracle_isgd.IsgdParams(factors=8, seed=5)

#: Vectors agree to float32 rounding: the oracle's dot products are numpy's float32 BLAS sums,
#: the native ones float64 sums rounded to float32 (``operators/src/isgd.rs``); in ISGD's
#: stable regime (the defaults) the steps contract and the differences stay a few ulps.
RTOL, ATOL = 1e-4, 1e-5


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
    assert state.user_id == "u1" and state.session == (0, -math.inf, -math.inf, 0, [])


def test_learn_applies_the_user_half_and_hands_back_the_item_half() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)
    before = state.vector.copy()
    expected = before.copy()
    user_step(expected, item_vector("i1"), 3.0, PARAMS)

    update, covisits = state.learn("i1", item_vector("i1"), "purchase", 10.0)

    np.testing.assert_array_equal(state.vector, expected)
    # (item_id, user vector before the step as float32 bytes, weight, ts_s, category_id)
    assert update == ("i1", before.tobytes(), 3.0, 10.0, None)
    assert covisits == []
    assert state.version == 1
    assert state.recent_items() == ["i1"] and state.counts == {"purchase": 1}
    assert state.purchased == ["i1"]
    session_no, _, _, _, items = state.session
    assert session_no == 1 and items == ["i1"]


def test_observe_counts_without_learning() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)
    before = state.vector.copy()
    state.observe("i1", "rec_impression", 5.0)
    np.testing.assert_array_equal(state.vector, before)
    assert state.version == 1
    assert state.counts == {"rec_impression": 1}
    assert state.recent_items() == [] and state.seen == []
    assert state.last_ts_s == 5.0


def test_a_repeated_event_id_has_one_effect() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)
    out = apply(state, [("e1", "i1", "view", 1.0), ("e1", "i1", "view", 1.0)])
    assert out[1] == ("duplicate", "e1")
    assert state.version == 1 and state.duplicates == 1 and state.dedup_ids == 1


def test_covisits_pair_the_new_item_with_the_previous_items_of_the_session() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)  # span 3, gap 100 s
    apply(state, [(f"e{n}", item, "view", float(n)) for n, item in enumerate("abcd")])
    _, covisits = state.learn("e", item_vector("e"), "add_to_cart", 4.0)
    # Nearest previous item counts fully, then 1/2, 1/3; "a" is beyond the span of 3. One
    # message (item_id, other_ids, weights, ts_s) for the new item's owner, one for each
    # earlier item's owner.
    assert covisits == [
        ("e", ("d", "c", "b"), (2.0, 1.0, 2.0 / 3), 4.0),
        ("d", ("e",), (2.0,), 4.0),
        ("c", ("e",), (1.0,), 4.0),
        ("b", ("e",), (2.0 / 3,), 4.0),
    ]
    # Coming back to an item of the session forms no new pairs ...
    assert state.learn("b", item_vector("b"), "view", 5.0)[1] == []
    # ... nor does the first item of a new session (gap > 100 s).
    _, covisits = state.learn("z", item_vector("z"), "view", 500.0)
    assert covisits == [] and state.session[0] == 2


def test_unknown_event_types_and_wrong_vectors_are_refused() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)
    with pytest.raises(ValueError, match="unknown event type"):
        state.learn("i1", item_vector("i1"), "teleport", 1.0)
    with pytest.raises(ValueError, match="factors"):
        state.learn("i1", np.zeros(3, np.float32), "view", 1.0)
    assert state.version == 0


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
    snap = original.to_state()
    restored = UserState.from_state(snap, PARAMS, USER_CONFIG)
    assert restored.to_state() == snap
    assert apply(restored, after) == apply(original, after)
    assert restored.to_state() == original.to_state()
    np.testing.assert_array_equal(restored.vector, original.vector)


def test_user_snapshot_is_immutable_and_detached() -> None:
    state = UserState("u1", PARAMS, USER_CONFIG)
    apply(state, [("e1", "i1", "view", 1.0)])
    snap = state.to_state()
    assert isinstance(snap, bytes)  # immutable
    apply(state, [("e2", "i2", "purchase", 2.0)])
    back = UserState.from_state(snap, PARAMS, USER_CONFIG)
    assert back.version == 1 and back.seen == ["i1"]
    assert back.vector.tolist() != state.vector.tolist()


def test_user_snapshot_is_versioned_and_checked() -> None:
    snap = UserState("u1", PARAMS, USER_CONFIG).to_state()
    assert snap[:4] == b"FRU\x01"
    with pytest.raises(ValueError):
        UserState.from_state(snap[:-2], PARAMS, USER_CONFIG)
    with pytest.raises(ValueError, match="factors"):
        UserState.from_state(snap, IsgdParams(factors=4), USER_CONFIG)


# --- ItemState -------------------------------------------------------------------------------


def test_item_learn_applies_the_item_half_and_counts_popularity() -> None:
    state = ItemState("i1", PARAMS, ITEM_CONFIG)
    user_vec = initial_vector("u1", "user", PARAMS)
    expected = initial_vector("i1", "item", PARAMS)
    item_step(expected, user_vec, 2.0, PARAMS)

    state.learn(user_vec, 2.0, 50.0)

    np.testing.assert_array_equal(state.vector, expected)
    assert state.version == 1 and state.last_ts_s == 50.0
    assert state.popularity_log2 == add_event(NO_POPULARITY, 2.0, 50.0, 1000.0)
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
    assert [i for i, _ in state.top_neighbours(10)] == ["n0", "n2", "n4", "n3"]
    assert state.top_neighbours(1) == [("n0", math.log2(5.0))]
    assert state.version == 0  # co-visits do not touch the factors


def test_segment_hits_keep_a_popularity_per_segment() -> None:
    state = ItemState("i1", PARAMS, ITEM_CONFIG)
    assert state.segment_hit("mobile|evening|DE", 2.0, 0.0) == 1.0
    assert state.segment_hit("desktop|night|FR", 1.0, 1000.0) == 1.0
    assert state.segment_hit("mobile|evening|DE", 2.0, 0.0) == 2.0
    assert state.segments == [("mobile|evening|DE", 2.0), ("desktop|night|FR", 1.0)]
    assert state.version == 0 and state.popularity_log2 == NO_POPULARITY


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
        st.tuples(
            st.just("segment"),
            st.sampled_from(["mobile|evening|DE", "desktop|night|FR", "unknown|morning|"]),
            st.sampled_from([1.0, 2.0, 3.0]),
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
        elif kind == "covisit":
            state.covisit(other, weight, ts_s)
        else:
            state.segment_hit(other, weight, ts_s)
        out.append(
            (
                state.vector.tobytes(),
                state.popularity_log2,
                state.trend_log2(),
                state.top_neighbours(3),
                state.segments,
            )
        )
    return out


@given(before=item_messages, after=item_messages)
@settings(deadline=None)
def test_restored_item_state_behaves_identically(before, after) -> None:
    original = ItemState("i1", PARAMS, ITEM_CONFIG)
    apply_items(original, before)
    snap = original.to_state()
    restored = ItemState.from_state(snap, PARAMS, ITEM_CONFIG)
    assert restored.to_state() == snap
    assert apply_items(restored, after) == apply_items(original, after)
    assert restored.to_state() == original.to_state()


def test_item_snapshot_is_versioned_and_checked() -> None:
    snap = ItemState("i1", PARAMS, ITEM_CONFIG).to_state()
    assert snap[:4] == b"FRI\x01"
    with pytest.raises(ValueError):
        ItemState.from_state(snap + b"\x00", PARAMS, ITEM_CONFIG)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0},
        {"window": 5, "seen_max": 4},
        {"session_gap_s": 0.0},
        {"covisit_span": 0},
        {"dedup_horizon_s": 0.0},
        {"dedup_max_ids": 0},
    ],
    ids=repr,
)
def test_bad_user_config_raises_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        UserConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"half_life_s": 0.0},
        {"trend_half_life_s": math.inf},
        {"trend_min_events": -1.0},
        {"covisit_half_life_s": 0.0},
        {"neighbour_capacity": 0},
    ],
    ids=repr,
)
def test_bad_item_config_raises_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ItemConfig(**kwargs)


# --- native vs the Python oracles --------------------------------------------------------------

#: Random user streams: repeated event ids (dedup), gaps across the session cut, every type.
oracle_user_events = st.lists(
    st.tuples(
        st.sampled_from([f"e{n}" for n in range(40)]),
        st.sampled_from([f"i{n}" for n in range(10)]),
        st.sampled_from([*INTERACTIONS, "purchase", "rec_impression"]),
        st.floats(-5.0, 120.0),  # step of event time: out of order, within and beyond the gap
        st.one_of(st.none(), st.sampled_from(["shoes", "books", "toys"])),
        st.sampled_from([1.0, 1.0, 2.0]),  # global learning-rate boost
    ),
    max_size=80,
)

user_configs = st.fixed_dictionaries(
    {
        "window": st.integers(1, 6),
        "extra_seen": st.integers(0, 6),
        "dedup_horizon_s": st.sampled_from([30.0, 500.0, 86_400.0]),
        "dedup_max_ids": st.integers(1, 70),
        "session_gap_s": st.sampled_from([10.0, 100.0]),
        "covisit_span": st.integers(1, 4),
        "drift": st.booleans(),
    }
)


def both_user_configs(kwargs: dict[str, Any]) -> tuple[UserConfig, oracle_user.UserConfig]:
    kwargs = dict(kwargs)
    kwargs["seen_max"] = kwargs["window"] + kwargs.pop("extra_seen")
    drift = kwargs.pop("drift")
    # A sensitive policy (alarms within a few events) so the refit path runs often.
    policy = {"min_instances": 3, "delta": 0.0, "min_threshold": 0.01, "lambda_factor": 0.5}
    native = UserConfig(
        **kwargs, recalibration=UserRecalibrationConfig(**policy) if drift else None
    )
    python = oracle_user.UserConfig(
        **kwargs,
        recalibration=oracle_recalibration.UserRecalibrationConfig(**policy) if drift else None,
    )
    return native, python


def assert_same_user(native: UserState, python: oracle_user.UserState) -> None:
    window = python.window
    assert native.recent_items() == window.recent_items()
    assert native.seen == list(window.seen)
    assert native.purchased == list(window.purchased)
    assert native.counts == window.counts
    assert native.last_ts_s == window.last_ts_s
    s = python.session
    assert native.session == (s.session_no, s.start_ts_s, s.last_ts_s, s.event_count, list(s.items))
    assert (native.version, native.duplicates) == (python.version, python.duplicates)
    assert native.dedup_ids == len(python.dedup)
    assert native.last_surprise == python.last_surprise
    assert native.last_error == pytest.approx(python.last_error, abs=1e-5)
    np.testing.assert_allclose(native.vector, python.vector, rtol=RTOL, atol=ATOL)


@settings(max_examples=300, deadline=None)
@given(config=user_configs, stream=oracle_user_events)
def test_user_state_matches_the_oracle(config: dict[str, Any], stream) -> None:
    # Exactly: dedup answers, window, seen/purchased, counts, session, co-visit messages,
    # versions, category surprise, drift alarms. To float32 rounding: vectors, ISGD errors and
    # what follows from them (the detector's threshold when a loss is an ISGD error).
    native_config, python_config = both_user_configs(config)
    native = UserState("u1", PARAMS, native_config)
    python = oracle_user.UserState("u1", ORACLE_PARAMS, python_config)
    vectors = {f"i{n}": initial_vector(f"i{n}", "item", PARAMS) for n in range(10)}
    ts = 1000.0
    for event_id, item_id, event_type, step, category, boost in stream:
        ts += step
        duplicate = native.is_duplicate(event_id, ts)
        assert duplicate == python.is_duplicate(event_id, ts)
        if duplicate:
            continue
        if event_type == "rec_impression":
            native.observe(item_id, event_type, ts)
            python.observe(item_id, event_type, ts)
        else:
            vec = vectors[item_id]
            update, covisits = native.learn(item_id, vec, event_type, ts, category, boost)
            expected, expected_covisits = python.learn(
                item_id, vec.copy(), event_type, ts, category, boost
            )
            item, before, weight, ts_s, category_id = update
            assert (item, weight, ts_s, category_id) == (
                expected.item_id,
                expected.weight,
                expected.ts_s,
                expected.category_id,
            )
            np.testing.assert_allclose(
                np.frombuffer(before, np.float32),
                np.frombuffer(expected.user_vector, np.float32),
                rtol=RTOL,
                atol=ATOL,
            )
            assert covisits == [dataclasses.astuple(c) for c in expected_covisits]
            decision = native.check_drift(vectors.get)
            expected_decision = python.check_drift(vectors.get)
            assert (decision is None) == (expected_decision is None)
            if decision is not None and expected_decision is not None:
                for name in ("learning_rate_multiplier", "boost_events", "refit_items"):
                    assert decision[name] == getattr(expected_decision, name)
                # The detector's losses are the category surprise (exact) or, without a
                # category, the ISGD error (float32 rounding): its threshold follows them.
                assert decision["threshold"] == pytest.approx(expected_decision.threshold)
                assert decision["event_index"] == expected_decision.event_index
                np.testing.assert_allclose(
                    decision["user_vector"], expected_decision.user_vector, rtol=RTOL, atol=ATOL
                )
            # Vectors drift apart by float32 rounding only: run the oracle on from ours, so
            # a long stream checks each step, not an accumulation.
            python.vector = native.vector.copy()
        assert_same_user(native, python)


item_configs = st.fixed_dictionaries(
    {
        "half_life_s": st.sampled_from([60.0, 1000.0, 86_400.0]),
        "trend_half_life_s": st.sampled_from([10.0, 100.0]),
        "trend_min_events": st.sampled_from([0.5, 1.0, 3.0]),  # 0: log2(0) in the oracle
        "covisit_half_life_s": st.sampled_from([50.0, 7 * 86_400.0]),
        "neighbour_capacity": st.integers(1, 5),
    }
)

oracle_item_messages = st.lists(
    st.one_of(
        st.tuples(
            st.just("learn"),
            st.sampled_from(["u1", "u2", "u3"]),
            st.sampled_from([0.5, 1.0, 2.0, 3.0]),
            st.floats(-50.0, 400.0),
            st.one_of(st.none(), st.sampled_from(["shoes", "books"])),
        ),
        st.tuples(
            st.just("covisit"),
            st.sampled_from([f"n{n}" for n in range(8)]),
            st.floats(0.1, 3.0),
            st.floats(-50.0, 400.0),
            st.none(),
        ),
        st.tuples(
            st.just("segment"),
            st.sampled_from(["mobile|evening|DE", "desktop|night|FR", "bot|morning|"]),
            st.sampled_from([1.0, 2.0, 3.0]),
            st.floats(-50.0, 400.0),
            st.none(),
        ),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(config=item_configs, messages=oracle_item_messages)
def test_item_state_matches_the_oracle(config: dict[str, Any], messages) -> None:
    # Popularity, trend, neighbours, segments, counters: exactly (the same float operations on
    # the same libm). The vector: to float32 rounding (ISGD's dot products, see RTOL).
    native = ItemState("i1", PARAMS, ItemConfig(**config))
    python = oracle_item.ItemState("i1", ORACLE_PARAMS, oracle_item.ItemConfig(**config))
    # The flow's segment popularity before it moved into the item state: one add_event per
    # (segment, item) with the long half-life.
    segments: dict[str, float] = {}
    ts = 1000.0
    for kind, other, weight, step, category in messages:
        ts += step
        if kind == "learn":
            user_vec = initial_vector(other, "user", PARAMS)
            native.learn(user_vec, weight, ts, category)
            python.learn(user_vec.copy(), weight, ts, category)
        elif kind == "covisit":
            native.covisit(other, weight, ts)
            python.covisit(other, weight, ts)
        else:
            expected = oracle_popularity.add_event(
                segments.get(other, oracle_popularity.NO_POPULARITY),
                weight,
                ts,
                config["half_life_s"],
            )
            segments[other] = expected
            assert native.segment_hit(other, weight, ts) == expected
        assert (native.version, native.covisit_version) == (python.version, python.covisit_version)
        assert native.popularity_log2 == python.popularity_log2
        assert native.short_popularity_log2 == python.short_popularity_log2
        assert native.last_ts_s == python.last_ts_s
        assert native.trend_log2() == python.trend_log2()
        assert native.category_id == python.category_id
        assert native.neighbour_scores == list(python.neighbours.scores.items())
        assert native.top_neighbours(3) == python.neighbours.top(3)
        assert native.segments == list(segments.items())
        np.testing.assert_allclose(native.vector, python.vector, rtol=RTOL, atol=ATOL)
        python.vector = native.vector.copy()  # compare each step, not an accumulation
