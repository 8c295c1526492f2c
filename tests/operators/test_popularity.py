"""Forward-decayed popularity in log2 space (Cormode et al. 2009), native, and bit for bit the
Python oracle's on random event streams."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from operators import NO_POPULARITY, add_event, decayed_value
from tests.oracles import popularity as oracle


def stored(events: list[tuple[float, float]], half_life_s: float) -> float:
    score = NO_POPULARITY
    for weight, ts_s in events:
        score = add_event(score, weight, ts_s, half_life_s)
    return score


def naive(events: list[tuple[float, float]], now_s: float, half_life_s: float) -> float:
    return math.fsum(w * 2.0 ** ((t - now_s) / half_life_s) for w, t in events)


weights = st.floats(0.01, 100.0)
times = st.floats(0.0, 1e6)
half_lives = st.floats(60.0, 1e6)
event_lists = st.lists(st.tuples(weights, times), min_size=1, max_size=30)


@given(events=event_lists, half_life_s=half_lives, now_offset=st.floats(-1e6, 1e6))
def test_decayed_value_equals_the_naive_sum(
    events: list[tuple[float, float]], half_life_s: float, now_offset: float
) -> None:
    now_s = max(t for _, t in events) + now_offset
    # Moderate range: the naive sum itself must neither overflow nor underflow.
    assume(all(abs(t - now_s) / half_life_s < 500 for _, t in events))
    expected = naive(events, now_s, half_life_s)
    assert decayed_value(stored(events, half_life_s), now_s, half_life_s) == pytest.approx(
        expected, rel=1e-9
    )


@given(events=event_lists, half_life_s=half_lives)
def test_order_of_events_does_not_matter(
    events: list[tuple[float, float]], half_life_s: float
) -> None:
    forward = stored(events, half_life_s)
    backward = stored(list(reversed(events)), half_life_s)
    assert forward == pytest.approx(backward, rel=1e-12, abs=1e-9)


@given(
    items=st.lists(event_lists, min_size=2, max_size=8),
    half_life_s=half_lives,
    now_s=st.floats(-1e6, 3e6),
)
def test_ranking_by_stored_value_equals_ranking_by_decayed_value(
    items: list[list[tuple[float, float]]], half_life_s: float, now_s: float
) -> None:
    assume(all(abs(t - now_s) / half_life_s < 500 for events in items for _, t in events))
    scores = [stored(events, half_life_s) for events in items]
    decayed = [naive(events, now_s, half_life_s) for events in items]
    for a in range(len(items)):
        for b in range(len(items)):
            # Strictly and clearly more popular in one view is so in the other, at any now.
            if scores[a] > scores[b] + 1e-9:
                assert decayed[a] >= decayed[b] * (1 - 1e-9)
            if decayed[a] > decayed[b] * (1 + 1e-9):
                assert scores[a] > scores[b] - 1e-9


def test_golden_values() -> None:
    # One event of weight 1 at t=0 has decayed to 1/2 after a half-life, 1/4 after two.
    score = add_event(NO_POPULARITY, 1.0, 0.0, 10.0)
    assert score == 0.0
    assert decayed_value(score, 10.0, 10.0) == 0.5
    assert decayed_value(score, 20.0, 10.0) == 0.25
    # A second event one half-life later: 0.5 + 1 at its time, log2(2^0 + 2^1) = log2(3).
    score = add_event(score, 1.0, 10.0, 10.0)
    assert score == pytest.approx(math.log2(3))
    assert decayed_value(score, 10.0, 10.0) == pytest.approx(1.5)
    # Weight 4 adds log2(4) = 2 half-lives' worth.
    assert add_event(NO_POPULARITY, 4.0, 0.0, 10.0) == 2.0


def test_no_popularity_is_zero() -> None:
    assert decayed_value(NO_POPULARITY, 1e9, 60.0) == 0.0


def test_no_overflow_at_real_timestamps_with_a_short_half_life() -> None:
    # 2e9 s / 60 s = 3.3e7 half-lives: 2^(t/h) itself is far beyond any float.
    half_life_s, t = 60.0, 2e9
    score = NO_POPULARITY
    for i in range(1000):
        score = add_event(score, 3.0, t + i, half_life_s)
    assert math.isfinite(score)
    now = t + 999
    expected = math.fsum(3.0 * 2.0 ** ((t + i - now) / half_life_s) for i in range(1000))
    assert score == pytest.approx(now / half_life_s + math.log2(expected), abs=1e-6)
    assert decayed_value(score, now, half_life_s) == pytest.approx(expected, rel=1e-6)
    # An hour of silence later the score has fallen by 60 half-lives, still no overflow.
    assert decayed_value(score, now + 3600, half_life_s) == pytest.approx(
        expected * 2.0**-60, rel=1e-6
    )


def test_late_event_far_in_the_past_barely_counts() -> None:
    score = add_event(NO_POPULARITY, 1.0, 2e9, 60.0)
    assert add_event(score, 1.0, 0.0, 60.0) == score


@pytest.mark.parametrize("weight", [0.0, -1.0])
def test_non_positive_weight_raises(weight: float) -> None:
    with pytest.raises(ValueError, match="weight must be > 0"):
        add_event(NO_POPULARITY, weight, 0.0, 60.0)


@pytest.mark.parametrize("half_life_s", [0.0, -60.0])
def test_non_positive_half_life_raises(half_life_s: float) -> None:
    with pytest.raises(ValueError, match="half_life_s must be > 0"):
        add_event(NO_POPULARITY, 1.0, 0.0, half_life_s)


# --- native vs the Python oracle -------------------------------------------------------------


def test_no_popularity_is_the_oracles() -> None:
    assert NO_POPULARITY == oracle.NO_POPULARITY == -math.inf


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.one_of(weights, st.sampled_from([1.0, 2.0, 3.0])),
            # Steps of event time in half-lives: mostly within a few, where the two terms of
            # a sum are of similar size and every bit of log2(1 + 2^-d) counts.
            st.one_of(st.floats(-2.0, 5.0), st.floats(-1e4, 1e4)),
        ),
        max_size=60,
    ),
    start_s=st.one_of(times, st.floats(1.5e9, 1.8e9)),  # also real unix timestamps
    half_life_s=st.one_of(half_lives, st.sampled_from([60.0, 3600.0, 86_400.0])),
    now_offset=st.floats(-1e6, 1e6),
)
def test_native_equals_the_python_oracle_bit_for_bit(
    events: list[tuple[float, float]], start_s: float, half_life_s: float, now_offset: float
) -> None:
    # Same float operations in the same order, and the same libm (log2, pow): exactly equal.
    ours, theirs = NO_POPULARITY, oracle.NO_POPULARITY
    ts_s = start_s
    for weight, step in events:
        ts_s += step * half_life_s
        ours = add_event(ours, weight, ts_s, half_life_s)
        theirs = oracle.add_event(theirs, weight, ts_s, half_life_s)
        assert ours == theirs
        now_s = ts_s + now_offset
        try:
            expected = oracle.decayed_value(theirs, now_s, half_life_s)
        except OverflowError:  # Python's float pow raises where Rust's returns inf
            expected = math.inf
        assert decayed_value(ours, now_s, half_life_s) == expected
