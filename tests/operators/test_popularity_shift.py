"""Windowed JS divergence of item popularity and its Page-Hinkley alarm (native)."""

import pickle
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import PopularityShift, js_divergence
from tests.oracles import popularity_shift as oracle

counts = st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 50))


@given(st.dictionaries(st.text(min_size=1, max_size=3), st.integers(1, 50), min_size=1))
def test_js_divergence_of_a_distribution_with_itself_is_zero(counts) -> None:
    c = Counter(counts)
    assert js_divergence(c, c) == pytest.approx(0.0, abs=1e-12)


def test_js_divergence_bounds_and_symmetry() -> None:
    a, b = Counter({"x": 10}), Counter({"y": 3})
    assert js_divergence(a, b) == pytest.approx(1.0)
    p, q = Counter({"x": 3, "y": 1}), Counter({"x": 1, "y": 3})
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    assert 0 < js_divergence(p, q) < 1
    assert js_divergence(Counter(), p) == 0.0


@settings(max_examples=300, deadline=None)
@given(p=counts, q=counts)
def test_js_divergence_matches_the_oracle(p: dict[str, int], q: dict[str, int]) -> None:
    # Not bit for bit: Python sums over a set union whose order depends on string hashing
    # (PYTHONHASHSEED), so even two runs of the oracle differ in the last bits; we sum in
    # first-seen order. Each term is the same float, so only the summation order differs.
    assert js_divergence(p, q) == pytest.approx(
        oracle.js_divergence(Counter(p), Counter(q)), rel=1e-12, abs=1e-15
    )


def stationary_then_shifted(seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    stationary = [f"a{min(int(rng.expovariate(0.3)), 30)}" for _ in range(200 * 30)]
    shifted = [f"b{min(int(rng.expovariate(0.3)), 30)}" for _ in range(200 * 3)]
    return stationary, shifted


def test_no_alarm_while_stationary_then_alarm_on_a_shift() -> None:
    stationary, shifted = stationary_then_shifted(5)
    shift = PopularityShift(window=200, min_windows=5)
    assert [a for a in map(shift.add, stationary) if a is not None] == []
    alarms = [a for a in map(shift.add, shifted) if a is not None]
    assert alarms and alarms[0] > 0.5


def test_snapshot_round_trips() -> None:
    stationary, shifted = stationary_then_shifted(6)
    shift = PopularityShift(window=200, min_windows=5)
    for item in stationary[:1234]:
        shift.add(item)
    state = shift.to_state()
    assert state[:4] == b"PSH\x01"
    restored = PopularityShift.from_state(pickle.loads(pickle.dumps(state)))
    assert (restored.current, restored.previous) == (shift.current, shift.previous)
    assert restored.last_divergence == shift.last_divergence
    rest = stationary[1234:] + shifted
    assert [restored.add(i) for i in rest] == [shift.add(i) for i in rest]
    assert restored.to_state() == shift.to_state()


@pytest.mark.parametrize("kwargs", [{"window": 9}, {"min_windows": 0}, {"min_windows": 1.5}])
def test_bad_arguments_raise_as_the_oracle_did(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError) as theirs:
        oracle.PopularityShift(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError) as ours:
        PopularityShift(**kwargs)  # type: ignore[arg-type]
    assert str(ours.value) == str(theirs.value)


@settings(max_examples=60, deadline=None)
@given(
    window=st.integers(10, 60),
    min_windows=st.integers(1, 6),
    phases=st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(1, 12), st.integers(20, 400)),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_same_alarms_as_the_oracle(
    window: int, min_windows: int, phases: list[tuple[str, int, int]], seed: int
) -> None:
    # Alarms at the same events; the divergences agree to rounding (summation order, above).
    rng = random.Random(seed)
    stream = [f"{prefix}{rng.randrange(spread)}" for prefix, spread, n in phases for _ in range(n)]
    ours = PopularityShift(window=window, min_windows=min_windows)
    theirs = oracle.PopularityShift(window=window, min_windows=min_windows)
    for item in stream:
        a, b = ours.add(item), theirs.add(item)
        assert (a is None) == (b is None)
        if a is not None:
            assert a == pytest.approx(b, rel=1e-12, abs=1e-15)
        assert ours.last_divergence == pytest.approx(theirs.last_divergence, rel=1e-12, abs=1e-15)
    assert ours.current == dict(theirs.current) and ours.previous == dict(theirs.previous)
