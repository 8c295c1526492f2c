"""A user's bounded recent window and seen set."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.user_window import UserWindow, UserWindowSnapshot

Interaction = tuple[str, str, float]

interactions = st.lists(
    st.tuples(
        st.sampled_from([f"i{n}" for n in range(12)]),
        st.sampled_from(["view", "add_to_cart", "purchase", "favourite", "rec_click"]),
        st.floats(0, 1e6),
    ),
    max_size=80,
)
bounds = st.integers(1, 6).flatmap(lambda w: st.tuples(st.just(w), st.integers(w, w + 6)))


def fill(window: UserWindow, events: list[Interaction]) -> UserWindow:
    for item_id, event_type, ts_s in events:
        window.add(item_id, event_type, ts_s)
    return window


def reference_seen(events: list[Interaction], seen_max: int) -> list[str]:
    """Distinct items by their last interaction, oldest first, the newest ``seen_max`` kept."""
    last: dict[str, int] = {}
    for n, (item_id, _, _) in enumerate(events):
        last[item_id] = n
    return sorted(last, key=last.__getitem__)[-seen_max:]


@given(events=interactions, sizes=bounds)
def test_window_keeps_the_last_interactions_in_order(events, sizes) -> None:
    window, seen_max = sizes
    uw = fill(UserWindow(window, seen_max), events)
    assert list(uw.recent) == events[-window:]
    assert len(uw.recent) <= window


@given(events=interactions, sizes=bounds)
def test_recent_items_are_distinct_and_most_recent_first(events, sizes) -> None:
    window, seen_max = sizes
    uw = fill(UserWindow(window, seen_max), events)
    expected: list[str] = []
    for item_id, _, _ in reversed(events[-window:]):
        if item_id not in expected:
            expected.append(item_id)
    assert uw.recent_items() == expected


@given(events=interactions, sizes=bounds)
def test_seen_is_bounded_and_forgets_the_least_recent_first(events, sizes) -> None:
    window, seen_max = sizes
    uw = fill(UserWindow(window, seen_max), events)
    assert list(uw.seen) == reference_seen(events, seen_max)
    assert len(uw.seen) <= seen_max
    # Whatever is in the window is still excluded (seen_max >= window).
    assert set(uw.recent_items()) <= set(uw.seen)


@given(events=interactions)
def test_counts_and_last_time_cover_every_interaction(events) -> None:
    uw = fill(UserWindow(2, 2), events)
    assert uw.counts == dict(Counter(t for _, t, _ in events))
    assert uw.last_ts_s == max((ts for _, _, ts in events), default=float("-inf"))


def test_golden_example() -> None:
    uw = UserWindow(window=3, seen_max=4)
    for n, item in enumerate(["a", "b", "a", "c", "d", "e"]):
        uw.add(item, "view", float(n))
    assert uw.recent_items() == ["e", "d", "c"]
    assert list(uw.seen) == ["a", "c", "d", "e"]
    uw.add("a", "purchase", 2.5)  # late event: refreshes "a", time stays the newest
    assert list(uw.seen) == ["c", "d", "e", "a"]
    assert uw.recent_items() == ["a", "e", "d"]
    assert uw.counts == {"view": 6, "purchase": 1}
    assert uw.last_ts_s == 5.0
    uw.add("f", "view", 6.0)
    assert list(uw.seen) == ["d", "e", "a", "f"]  # "c" was the least recently consumed


@given(before=interactions, after=interactions, sizes=bounds)
def test_restored_window_behaves_identically(before, after, sizes) -> None:
    window, seen_max = sizes
    original = fill(UserWindow(window, seen_max), before)
    snap = original.snapshot()
    restored = UserWindow.restore(snap, window, seen_max)
    assert restored.snapshot() == snap
    fill(original, after)
    fill(restored, after)
    assert restored.snapshot() == original.snapshot()
    assert restored.recent_items() == original.recent_items()
    assert list(restored.seen) == list(original.seen)


def test_snapshot_is_immutable_and_detached() -> None:
    uw = fill(UserWindow(3, 3), [("a", "view", 1.0), ("b", "view", 2.0)])
    snap = uw.snapshot()
    assert isinstance(snap, UserWindowSnapshot)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.last_ts_s = 0.0  # type: ignore[misc]
    assert isinstance(snap.recent, tuple) and isinstance(snap.seen, tuple)
    uw.add("c", "purchase", 3.0)
    assert snap.seen == ("a", "b") and snap.counts == (("view", 2),)
    assert snap.last_ts_s == 2.0


def test_empty_window() -> None:
    uw = UserWindow()
    assert uw.recent_items() == [] and uw.counts == {} and uw.last_ts_s == float("-inf")
    assert UserWindow.restore(uw.snapshot()).snapshot() == uw.snapshot()


@pytest.mark.parametrize(("window", "seen_max"), [(0, 5), (-1, 5), (5, 4)])
def test_bad_bounds_raise_value_error(window: int, seen_max: int) -> None:
    with pytest.raises(ValueError):
        UserWindow(window, seen_max)
