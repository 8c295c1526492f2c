"""Page-Hinkley (Page 1954), native: golden values, river cross-checks, the Python oracle."""

import math
import pickle
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift

from operators import PageHinkley
from tests.operators.drift_streams import STREAMS, mean_steps
from tests.oracles import page_hinkley as oracle


def detections(detector: PageHinkley, stream: list[float]) -> list[int]:
    return [i for i, x in enumerate(stream) if detector.update(x)]


def river_detections(detector: drift.PageHinkley, stream: list[float]) -> list[int]:
    found = []
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            found.append(i)
    return found


# --- golden values -------------------------------------------------------------------------


def test_golden_river_docstring_stream() -> None:
    rng = random.Random(12345)
    stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    assert detections(PageHinkley(), stream) == [1006]
    assert detections(PageHinkley(lambda_factor=50.0), stream) == [1002]


@pytest.mark.parametrize(
    ("stream", "mode", "expected_indices"),
    [
        ("abrupt_up", "both", [1023]),
        ("abrupt_up", "down", []),
        ("abrupt_down", "both", [1049]),
        ("abrupt_down", "up", []),
        ("gradual_up", "up", [1231, 1751, 2582]),
        ("gradual_down", "down", [1351, 1771, 2757]),
        ("hit_rate_up", "both", [2265]),
        ("hit_rate_down", "both", [2190]),
    ],
)
def test_golden_fixed_threshold(stream: str, mode: str, expected_indices: list[int]) -> None:
    assert detections(PageHinkley(mode=mode), STREAMS[stream]()) == expected_indices


@pytest.mark.parametrize(
    ("stream", "expected_indices"),
    [
        ("abrupt_up", [960, 1027]),
        ("abrupt_down", [960, 1020]),
        ("hit_rate_up", [2037]),
        ("hit_rate_down", [2068]),
    ],
)
def test_golden_adaptive_threshold(stream: str, expected_indices: list[int]) -> None:
    detector = PageHinkley(delta=0.05, lambda_factor=25.0)
    assert detections(detector, STREAMS[stream]()) == expected_indices


def test_adaptive_threshold_follows_the_spread() -> None:
    detector = PageHinkley(lambda_factor=10.0, min_threshold=0.5)
    assert detector.current_threshold == 0.5
    for x in mean_steps([0.0], n=3000, sd=2.0):
        detector.update(x)
    assert detector.current_threshold == pytest.approx(20.0, rel=0.1)
    for x in mean_steps([0.0], n=5000, sd=0.01):  # spread far below the floor
        detector.update(x)
    assert detector.current_threshold == 0.5


# --- cross-check against river -------------------------------------------------------------

RIVER_PARAMS = [
    {},
    {"mode": "up"},
    {"mode": "down"},
    {"min_instances": 5, "delta": 0.05, "threshold": 20.0, "alpha": 1.0},
    {"min_instances": 100, "delta": 0.0, "threshold": 10.0, "alpha": 0.999, "mode": "up"},
]


@pytest.mark.parametrize("params", RIVER_PARAMS, ids=str)
@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_same_detections_as_river(stream: str, params: dict[str, object]) -> None:
    values = STREAMS[stream]()
    ours = detections(PageHinkley(**params), values)
    assert ours == river_detections(drift.PageHinkley(**params), values)


def test_cross_check_finds_something() -> None:
    # Guards the cross-check above from passing vacuously.
    assert all(detections(PageHinkley(threshold=10.0), STREAMS[s]()) for s in STREAMS)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(-1e3, 1e3), max_size=400),
    min_instances=st.integers(1, 50),
    delta=st.floats(0.0, 1.0),
    threshold=st.floats(0.1, 100.0),
    alpha=st.floats(0.9, 1.0),
    mode=st.sampled_from(["up", "down", "both"]),
)
def test_same_detections_as_river_on_any_stream(
    values: list[float],
    min_instances: int,
    delta: float,
    threshold: float,
    alpha: float,
    mode: str,
) -> None:
    params = {
        "min_instances": min_instances,
        "delta": delta,
        "threshold": threshold,
        "alpha": alpha,
        "mode": mode,
    }
    ours = detections(PageHinkley(**params), values)
    assert ours == river_detections(drift.PageHinkley(**params), values)


# --- properties ----------------------------------------------------------------------------

detector_params = st.fixed_dictionaries(
    {
        "min_instances": st.integers(1, 100),
        "delta": st.floats(0.0, 1.0),
        "threshold": st.floats(1.0, 100.0),
        "alpha": st.floats(0.999, 1.0),
        "mode": st.sampled_from(["up", "down", "both"]),
        "lambda_factor": st.none() | st.floats(1.0, 50.0),
        "std_alpha": st.floats(0.9, 0.9999),
        "min_threshold": st.floats(0.1, 10.0),
    }
)


@settings(max_examples=100, deadline=None)
@given(params=detector_params, value=st.floats(-1e6, 1e6), n=st.integers(0, 3000))
def test_no_alarm_on_a_constant_stream(params: dict[str, object], value: float, n: int) -> None:
    detector = PageHinkley(**params)
    assert not any(detector.update(value) for _ in range(n))


step_cases = {
    "params": detector_params,
    "level": st.floats(-100.0, 100.0),
    "step_sign": st.sampled_from([-1.0, 1.0]),
    "n_before": st.integers(100, 1000),
}


def step_alarms(params: dict[str, object], level: float, step_sign: float, n_before: int) -> bool:
    """Feed a constant ``level`` (no alarm allowed), then a step of 10 thresholds."""
    detector = PageHinkley(**params)
    step = step_sign * 10.0 * max(detector.threshold, detector.min_threshold)
    assert not any(detector.update(level) for _ in range(n_before))
    return any(detector.update(level + step) for _ in range(2000))


@settings(max_examples=100, deadline=None)
@given(**step_cases, two_sided=st.booleans())
def test_alarm_after_a_large_step_in_the_watched_direction(
    params: dict[str, object], level: float, step_sign: float, n_before: int, two_sided: bool
) -> None:
    mode = "both" if two_sided else ("up" if step_sign > 0 else "down")
    assert step_alarms({**params, "mode": mode}, level, step_sign, n_before)


@settings(max_examples=100, deadline=None)
@given(**step_cases)
def test_no_alarm_after_a_step_in_the_other_direction_without_forgetting(
    params: dict[str, object], level: float, step_sign: float, n_before: int
) -> None:
    # With alpha < 1 the faded sum recovering from a large drop does look like an increase
    # (river behaves the same), so the one-sided guarantee holds only without forgetting.
    params = {**params, "alpha": 1.0, "mode": "down" if step_sign > 0 else "up"}
    assert not step_alarms(params, level, step_sign, n_before)


@settings(max_examples=100, deadline=None)
@given(
    params=detector_params,
    values=st.lists(st.floats(-1e3, 1e3), max_size=300),
    cut=st.integers(0, 300),
)
def test_snapshot_restores_identical_future(
    params: dict[str, object], values: list[float], cut: int
) -> None:
    original = PageHinkley(**params)
    for x in values[:cut]:
        original.update(x)
    snapshot = pickle.loads(pickle.dumps(original.to_state()))
    assert snapshot == original.to_state()
    restored = PageHinkley.from_state(snapshot)
    assert restored.current_threshold == original.current_threshold
    rest = values[cut:]
    assert detections(restored, rest) == detections(original, rest)
    assert restored.to_state() == original.to_state()


def test_snapshot_is_versioned_bytes() -> None:
    state = PageHinkley(lambda_factor=3.0).to_state()
    assert isinstance(state, bytes) and state[:4] == b"PHK\x01"
    assert PageHinkley.from_state(state).lambda_factor == 3.0
    with pytest.raises(ValueError, match="truncated"):
        PageHinkley.from_state(state[:-1])
    with pytest.raises(ValueError, match="trailing"):
        PageHinkley.from_state(state + b"\x00")
    with pytest.raises(ValueError, match="not a PageHinkley snapshot"):
        PageHinkley.from_state(b"ADW\x01" + state[4:])
    with pytest.raises(ValueError, match="format 9 is not supported"):
        PageHinkley.from_state(b"PHK\x09" + state[4:])


# --- the native detector against the Python oracle ------------------------------------------


def decode_state(snapshot: bytes) -> tuple[object, ...]:
    """The learned numbers of a native snapshot (layout: operators/src/page_hinkley.rs)."""
    pos = 4

    def varint() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            byte = snapshot[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    varint()  # min_instances
    pos += 3 * 8 + 1  # delta, threshold, alpha, mode
    pos += 1 + 8 * snapshot[pos]  # lambda_factor
    pos += 2 * 8  # std_alpha, min_threshold
    n = varint()
    numbers = struct.unpack_from("<7d", snapshot, pos)
    return (n, *numbers, bool(snapshot[pos + 56]))


def oracle_state(detector: oracle.PageHinkley) -> tuple[object, ...]:
    s = detector.to_state()
    return (
        s.n,
        s.mean,
        s.sum_increase,
        s.sum_decrease,
        s.min_increase,
        s.max_decrease,
        s.spread_mean,
        s.spread_variance,
        s.drift_detected,
    )


@settings(max_examples=300, deadline=None)
@given(
    params=detector_params,
    values=st.lists(
        st.floats(-1e6, 1e6) | st.sampled_from([0.0, 1.0]) | st.integers(-3, 3),
        max_size=400,
    ),
)
def test_same_floats_as_the_oracle_on_any_stream(
    params: dict[str, object], values: list[float]
) -> None:
    # Bit for bit: every learned number after every update, not just the alarms.
    ours, theirs = PageHinkley(**params), oracle.PageHinkley(**params)  # type: ignore[arg-type]
    assert decode_state(ours.to_state()) == oracle_state(theirs)
    for x in values:
        assert ours.update(x) == theirs.update(x)
        assert decode_state(ours.to_state()) == oracle_state(theirs)
        assert ours.current_threshold == theirs.current_threshold
        assert (ours.n, ours.mean) == (theirs.to_state().n, theirs.to_state().mean)


@settings(max_examples=50, deadline=None)
@given(
    params=detector_params,
    level=st.floats(-10.0, 10.0),
    jump=st.floats(-20.0, 20.0),
    noise=st.floats(0.0, 5.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_same_alarms_as_the_oracle_on_long_shifted_streams(
    params: dict[str, object], level: float, jump: float, noise: float, seed: int
) -> None:
    rng = random.Random(seed)
    stream = [level + rng.gauss(0.0, noise) + (jump if i >= 1500 else 0.0) for i in range(3000)]
    ours, theirs = PageHinkley(**params), oracle.PageHinkley(**params)  # type: ignore[arg-type]
    assert detections(ours, stream) == [i for i, x in enumerate(stream) if theirs.update(x)]
    assert decode_state(ours.to_state()) == oracle_state(theirs)


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"min_instances": 0},
        {"min_instances": 2.5},
        {"min_instances": True},
        {"delta": -0.1},
        {"delta": math.nan},
        {"threshold": 0.0},
        {"threshold": math.inf},
        {"alpha": 0.0},
        {"alpha": 1.01},
        {"mode": "sideways"},
        {"lambda_factor": 0.0},
        {"lambda_factor": -1.0},
        {"std_alpha": 1.0},
        {"std_alpha": 0.0},
        {"min_threshold": 0.0},
        {"min_threshold": math.nan},
    ],
    ids=str,
)
def test_bad_hyperparameters_raise_as_the_oracle_did(params: dict[str, object]) -> None:
    with pytest.raises(ValueError) as theirs:
        oracle.PageHinkley(**params)  # type: ignore[arg-type]
    with pytest.raises(ValueError) as ours:
        PageHinkley(**params)  # type: ignore[arg-type]
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_value_raises(value: float) -> None:
    detector = PageHinkley()
    detector.update(1.0)
    before = detector.to_state()
    with pytest.raises(ValueError) as ours:
        detector.update(value)
    assert detector.to_state() == before
    with pytest.raises(ValueError) as theirs:
        oracle.PageHinkley().update(value)
    assert str(ours.value) == str(theirs.value)
