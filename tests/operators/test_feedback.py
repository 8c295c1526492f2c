"""Feedback windows (CTR and conversions per event-time window) and model ids, native."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import CONVERSION_TYPES, FeedbackWindows, WindowCounts, model_of
from tests.oracles import feedback as oracle

EVENT_TYPES = ["rec_impression", "rec_click", "purchase", "add_to_cart", "view", "favourite", "?"]


def test_windows_are_bounded_and_models_parsed() -> None:
    fw = FeedbackWindows(window_s=60, keep=3)
    for minute in range(10):
        fw.add("rec_impression", minute * 60.0)
    assert [w.start_s for w in fw.windows] == [420.0, 480.0, 540.0]
    assert fw.add("view", 0.0) is None
    assert model_of("v12.9f3a") == "v12" and model_of("isgd.a.b") == "isgd.a"
    assert model_of("nodot") == "unknown"
    with pytest.raises(ValueError, match="window_s must be > 0"):
        FeedbackWindows(window_s=0)


def test_counts_rates_and_their_value_semantics() -> None:
    fw = FeedbackWindows()
    for event_type in ["rec_impression"] * 4 + ["rec_click", "rec_click", "purchase"]:
        fw.add(event_type, 1000.0)
    [w] = fw.windows
    assert (w.start_s, w.impressions, w.clicks, w.conversions) == (900.0, 4, 2, 1)
    assert (w.ctr, w.conversion_rate) == (0.5, 0.5)
    assert WindowCounts(0.0).ctr is None and WindowCounts(0.0).conversion_rate is None
    assert w == WindowCounts(900.0, 4, 2, 1) and hash(w) == hash(WindowCounts(900.0, 4, 2, 1))
    assert pickle.loads(pickle.dumps(w)) == w
    assert repr(w) == "WindowCounts(start_s=900.0, impressions=4, clicks=2, conversions=1)"
    assert CONVERSION_TYPES == oracle.CONVERSION_TYPES


def test_snapshot_round_trips_under_its_config() -> None:
    fw = FeedbackWindows(window_s=60.0, keep=5)
    for t, ts in [("rec_impression", 5.0), ("rec_click", 70.0), ("add_to_cart", 130.0)]:
        fw.add(t, ts)
    state = fw.to_state()
    assert state[:4] == b"FBW\x01"
    restored = FeedbackWindows.from_state(state, window_s=60.0, keep=5)
    assert restored.windows == fw.windows and restored.to_state() == state
    with pytest.raises(ValueError, match="not a FeedbackWindows snapshot"):
        FeedbackWindows.from_state(b"ADW\x01")


def test_non_finite_time_is_refused() -> None:
    with pytest.raises(ValueError, match="finite ts_s"):
        FeedbackWindows().add("rec_click", float("nan"))
    assert FeedbackWindows().add("view", float("nan")) is None  # not feedback: never looked at


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(EVENT_TYPES),
            st.floats(-1e5, 1e6) | st.integers(-1000, 10_000).map(float) | st.just(-0.0),
        ),
        max_size=200,
    ),
    window_s=st.floats(0.5, 1000.0) | st.sampled_from([60.0, 300.0, 1.0]),
    keep=st.integers(1, 12),
)
def test_same_windows_as_the_oracle(
    events: list[tuple[str, float]], window_s: float, keep: int
) -> None:
    ours, theirs = FeedbackWindows(window_s, keep), oracle.FeedbackWindows(window_s, keep)
    as_tuple = lambda w: (w.start_s, w.impressions, w.clicks, w.conversions)  # noqa: E731
    for event_type, ts in events:
        a, b = ours.add(event_type, ts), theirs.add(event_type, ts)
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert as_tuple(a) == as_tuple(b)
            assert (a.ctr, a.conversion_rate) == (b.ctr, b.conversion_rate)
    assert [as_tuple(w) for w in ours.windows] == [as_tuple(w) for w in theirs.snapshot()]
    restored = FeedbackWindows.from_state(ours.to_state(), window_s, keep)
    assert restored.windows == ours.windows


@given(st.text(max_size=12, alphabet="ab.-"))
def test_model_of_matches_the_oracle(recommendation_id: str) -> None:
    assert model_of(recommendation_id) == oracle.model_of(recommendation_id)


@pytest.mark.parametrize(("window_s", "keep"), [(0.0, 3), (-1.0, 3), (60.0, 0)])
def test_bad_config_raises_as_the_oracle_did(window_s: float, keep: int) -> None:
    with pytest.raises(ValueError) as theirs:
        oracle.FeedbackWindows(window_s, keep)
    with pytest.raises(ValueError) as ours:
        FeedbackWindows(window_s, keep)
    assert str(ours.value) == str(theirs.value)
