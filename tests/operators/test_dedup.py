"""Event dedup (native): repeats within the horizon have one effect, memory stays bounded,
and the answers equal the Python oracle's on random streams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import EventDedup
from tests.oracles.dedup import EventDedup as OracleDedup


def test_repeat_within_horizon_is_a_duplicate_and_old_ids_expire() -> None:
    dedup = EventDedup(horizon_s=100.0, max_ids=1000)
    assert not dedup.is_duplicate("e1", 0.0)
    assert dedup.is_duplicate("e1", 10.0)
    for i in range(63):
        dedup.is_duplicate(f"x{i}", 500.0)  # the 64th id triggers expiry of e1
    assert len(dedup) == 63
    assert not dedup.is_duplicate("e1", 500.0)


def test_snapshot_round_trip_and_version_check() -> None:
    dedup = EventDedup()
    for i in range(100):
        dedup.is_duplicate(f"e{i}", float(i))
    back = EventDedup.from_state(dedup.to_state())
    assert len(back) == 100 and back.is_duplicate("e5", 0.0) and not back.is_duplicate("new", 0.0)
    with pytest.raises(ValueError, match="not supported"):
        EventDedup.from_state(b"FRD\x09")
    with pytest.raises(ValueError, match="truncated"):
        EventDedup.from_state(dedup.to_state()[:-3])


def test_bad_hyperparameters_raise_like_python() -> None:
    with pytest.raises(ValueError, match="horizon_s must be > 0, got 0.0"):
        EventDedup(horizon_s=0.0)
    with pytest.raises(ValueError, match="max_ids must be >= 1, got 0"):
        EventDedup(max_ids=0)


@settings(max_examples=300, deadline=None)
@given(
    stream=st.lists(st.tuples(st.integers(0, 40), st.floats(-50.0, 50.0)), max_size=400),
    horizon=st.sampled_from([1.0, 10.0, 100.0]),
    max_ids=st.integers(1, 80),
)
def test_native_equals_the_python_oracle(
    stream: list[tuple[int, float]], horizon: float, max_ids: int
) -> None:
    native, oracle = EventDedup(horizon, max_ids), OracleDedup(horizon, max_ids)
    ts = 0.0
    for event, step in stream:
        ts += step
        assert native.is_duplicate(f"e{event}", ts) == oracle.is_duplicate(f"e{event}", ts)
        assert len(native) == len(oracle)
    assert native.newest_ts_s == oracle.newest_ts_s
