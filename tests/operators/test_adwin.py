"""ADWIN (Bifet and Gavaldà 2007), native: golden values, river cross-checks, the Python oracle."""

import math
import pickle
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift

from operators import ADWIN
from tests.operators.drift_streams import STREAMS, mean_steps
from tests.oracles import adwin as oracle


def detections(detector: ADWIN, stream: list[float]) -> list[int]:
    return [i for i, x in enumerate(stream) if detector.update(x)]


def assert_same_as_river(params: dict[str, float], stream: list[float]) -> list[int]:
    """Run ours and river's ADWIN side by side; every statistic must agree bit for bit."""
    ours, theirs = ADWIN(**params), drift.ADWIN(**params)
    found = []
    for i, x in enumerate(stream):
        alarm = ours.update(x)
        theirs.update(x)
        assert alarm == theirs.drift_detected
        assert (ours.width, ours.total) == (theirs.width, theirs.total)
        assert ours.sum_squares == theirs.variance  # river's `variance` is the unscaled sum
        assert ours.estimation == theirs.estimation
        if alarm:
            found.append(i)
    return found


# --- golden values -------------------------------------------------------------------------


def test_golden_river_docstring_stream() -> None:
    rng = random.Random(12345)
    stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    assert detections(ADWIN(), stream) == [1023]


@pytest.mark.parametrize(
    ("stream", "expected_indices", "clock_1_indices"),
    [
        ("abrupt_up", [1023], [1010]),
        ("abrupt_down", [1023], [1015]),
        ("gradual_up", [1279, 1823], [1244, 1722, 2443]),
        ("gradual_down", [1375, 1791], [1318, 1689, 2200]),
        ("hit_rate_up", [2079], [2062]),
        ("hit_rate_down", [2175], [2147]),
    ],
)
def test_golden_detections(
    stream: str, expected_indices: list[int], clock_1_indices: list[int]
) -> None:
    values = STREAMS[stream]()
    assert detections(ADWIN(), values) == expected_indices
    assert detections(ADWIN(delta=0.01, clock=1), values) == clock_1_indices


def test_window_statistics_after_an_abrupt_change() -> None:
    detector = ADWIN()
    detections(detector, STREAMS["abrupt_up"]())
    # The window restarted at the update after the alarm at 1023 and holds the rest.
    assert detector.width == 2000 - 1024
    assert detector.estimation == pytest.approx(1.0, abs=0.05)
    assert detector.variance == pytest.approx(0.25, rel=0.1)
    assert detector.variance == pytest.approx(detector.sum_squares / detector.width)


def test_empty_window() -> None:
    detector = ADWIN()
    assert (detector.width, detector.estimation, detector.variance) == (0, 0.0, 0.0)


# --- cross-check against river -------------------------------------------------------------

RIVER_PARAMS = [
    {},
    {"delta": 0.01, "clock": 1},
    {"delta": 0.1, "clock": 5, "max_buckets": 2, "min_window_length": 1, "grace_period": 0},
    {"delta": 1e-5, "clock": 16, "max_buckets": 8, "min_window_length": 20, "grace_period": 100},
]


@pytest.mark.parametrize("params", RIVER_PARAMS, ids=str)
@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_same_detections_and_statistics_as_river(stream: str, params: dict[str, float]) -> None:
    found = assert_same_as_river(params, STREAMS[stream]())
    assert found, "the cross-check must include detections"


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.floats(-1e3, 1e3) | st.sampled_from([0.0, 1.0]) | st.integers(-5, 5).map(float),
        max_size=600,
    ),
    delta=st.floats(1e-6, 0.9),
    clock=st.integers(1, 40),
    max_buckets=st.integers(2, 10),  # river 0.26 panics with max_buckets=1 (see ADWIN's doc)
    min_window_length=st.integers(1, 20),
    grace_period=st.integers(0, 50),
)
def test_same_as_river_on_any_stream(
    values: list[float],
    delta: float,
    clock: int,
    max_buckets: int,
    min_window_length: int,
    grace_period: int,
) -> None:
    params = {
        "delta": delta,
        "clock": clock,
        "max_buckets": max_buckets,
        "min_window_length": min_window_length,
        "grace_period": grace_period,
    }
    assert_same_as_river(params, values)


def test_single_bucket_rows_work() -> None:
    # river 0.26 panics here after its first cut; ours keeps detecting.
    detector = ADWIN(max_buckets=1, clock=1)
    assert detections(detector, mean_steps([0.0, 3.0, 0.0, 3.0])) == [1005, 2006, 3007]


# --- properties ----------------------------------------------------------------------------

detector_params = st.fixed_dictionaries(
    {
        "delta": st.floats(1e-6, 0.5),
        "clock": st.integers(1, 64),
        "max_buckets": st.integers(1, 10),
        "min_window_length": st.integers(1, 20),
        "grace_period": st.integers(0, 100),
    }
)


@settings(max_examples=100, deadline=None)
@given(params=detector_params, value=st.floats(-1e6, 1e6), n=st.integers(0, 3000))
def test_no_alarm_on_a_constant_stream(params: dict[str, float], value: float, n: int) -> None:
    detector = ADWIN(**params)
    assert not any(detector.update(value) for _ in range(n))
    assert detector.width == n


@settings(max_examples=100, deadline=None)
@given(
    params=detector_params,
    level=st.floats(-100.0, 100.0),
    step=st.floats(1.0, 100.0),
    step_sign=st.sampled_from([-1.0, 1.0]),
    n_before=st.integers(100, 2000),
)
def test_alarm_after_a_large_step(
    params: dict[str, float], level: float, step: float, step_sign: float, n_before: int
) -> None:
    detector = ADWIN(**params)
    assert not any(detector.update(level) for _ in range(n_before))
    assert any(detector.update(level + step_sign * step) for _ in range(1000))


@settings(max_examples=100, deadline=None)
@given(
    params=detector_params,
    values=st.lists(st.floats(-1e3, 1e3) | st.sampled_from([0.0, 1.0]), max_size=600),
    cut=st.integers(0, 600),
)
def test_snapshot_restores_identical_future(
    params: dict[str, float], values: list[float], cut: int
) -> None:
    original = ADWIN(**params)
    for x in values[:cut]:
        original.update(x)
    snapshot = pickle.loads(pickle.dumps(original.to_state()))
    assert snapshot == original.to_state()
    restored = ADWIN.from_state(snapshot)
    rest = values[cut:]
    assert detections(restored, rest) == detections(original, rest)
    assert restored.to_state() == original.to_state()


def test_snapshot_is_versioned_bytes_and_buckets_add_up() -> None:
    detector = ADWIN()
    for x in range(100):
        detector.update(float(x % 2))
    state = detector.to_state()
    assert isinstance(state, bytes) and state[:4] == b"ADW\x01"
    assert sum(len(row) << i for i, row in enumerate(detector.buckets)) == detector.width == 100
    with pytest.raises(ValueError, match="truncated"):
        ADWIN.from_state(state[:-1])
    with pytest.raises(ValueError, match="not a ADWIN snapshot"):
        ADWIN.from_state(b"PHK\x01" + state[4:])
    # A histogram that does not add up to the width is refused, not trusted.
    width_and_total = bytes([100]) + struct.pack("<d", 50.0)
    assert state.count(width_and_total) == 1
    bad = state.replace(width_and_total, bytes([99]) + struct.pack("<d", 50.0))
    with pytest.raises(ValueError, match="malformed"):
        ADWIN.from_state(bad)


# --- the native detector against the Python oracle ------------------------------------------


def assert_same_as_oracle(ours: ADWIN, theirs: oracle.ADWIN) -> None:
    s = theirs.to_state()
    assert ours.buckets == s.buckets
    assert (ours.width, ours.total, ours.sum_squares) == (s.width, s.total, s.sum_squares)
    assert (ours.estimation, ours.variance) == (theirs.estimation, theirs.variance)
    assert ours.drift_detected == theirs.drift_detected


@settings(max_examples=300, deadline=None)
@given(
    params=detector_params,
    values=st.lists(
        st.floats(-1e6, 1e6) | st.sampled_from([0.0, 1.0]) | st.integers(-5, 5),
        max_size=600,
    ),
)
def test_same_floats_as_the_oracle_on_any_stream(
    params: dict[str, float], values: list[float]
) -> None:
    # Bit for bit, after every update: every bucket, the window's sums and the alarms.
    ours, theirs = ADWIN(**params), oracle.ADWIN(**params)  # type: ignore[arg-type]
    assert_same_as_oracle(ours, theirs)
    for x in values:
        assert ours.update(x) == theirs.update(x)
        assert_same_as_oracle(ours, theirs)


@settings(max_examples=40, deadline=None)
@given(
    params=detector_params,
    jump=st.floats(-5.0, 5.0),
    noise=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_same_alarms_as_the_oracle_on_long_shifted_streams(
    params: dict[str, float], jump: float, noise: float, seed: int
) -> None:
    rng = random.Random(seed)
    stream = [rng.gauss(0.0, noise) + (jump if 1000 <= i < 2500 else 0.0) for i in range(4000)]
    ours, theirs = ADWIN(**params), oracle.ADWIN(**params)  # type: ignore[arg-type]
    assert detections(ours, stream) == [i for i, x in enumerate(stream) if theirs.update(x)]
    assert_same_as_oracle(ours, theirs)


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"delta": 0.0},
        {"delta": 1.0},
        {"delta": math.nan},
        {"clock": 0},
        {"clock": 1.5},
        {"max_buckets": 0},
        {"min_window_length": 0},
        {"grace_period": -1},
        {"grace_period": True},
        {"clock": 0, "max_buckets": "x"},
        {"min_window_length": None},
    ],
    ids=str,
)
def test_bad_hyperparameters_raise_as_the_oracle_did(params: dict[str, float]) -> None:
    with pytest.raises(ValueError) as theirs:
        oracle.ADWIN(**params)  # type: ignore[arg-type]
    with pytest.raises(ValueError) as ours:
        ADWIN(**params)  # type: ignore[arg-type]
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_value_raises(value: float) -> None:
    detector = ADWIN()
    detector.update(1.0)
    before = detector.to_state()
    with pytest.raises(ValueError) as ours:
        detector.update(value)
    assert detector.to_state() == before
    with pytest.raises(ValueError) as theirs:
        oracle.ADWIN().update(value)
    assert str(ours.value) == str(theirs.value)
