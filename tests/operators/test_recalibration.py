"""Per-user and global recalibration policies, the refit and the category profile."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.isgd import IsgdParams, Vector, initial_vector
from operators.recalibration import (
    CategoryProfile,
    GlobalDetectorKind,
    GlobalRecalibration,
    GlobalRecalibrationConfig,
    GlobalRecalibrationSnapshot,
    UserRecalibration,
    UserRecalibrationConfig,
    UserRecalibrationSnapshot,
    refit_user_vector,
)

SEED = 3
PARAMS = IsgdParams(factors=8, seed=5)
NO_ITEMS: dict[str, Vector] = {}


def unit(i: int, n: int = 8) -> Vector:
    vec = np.zeros(n, dtype=np.float32)
    vec[i] = 1.0
    return vec


def stationary_then_shift(n_before: int = 40, n_after: int = 15) -> list[float]:
    """Losses around 0.5 (sd 0.1), then at 1.0, seeded with SEED."""
    rng = np.random.default_rng(SEED)
    before = np.clip(rng.normal(0.5, 0.1, n_before), 0, 1)
    return [*before.tolist(), *[1.0] * n_after]


# --- refit_user_vector ---------------------------------------------------------------------


def test_refit_golden_one_step() -> None:
    params = IsgdParams(factors=2, learn_rate=0.1, regularization=0.0)
    item = np.array([1.0, 0.0], dtype=np.float32)
    out = refit_user_vector(np.zeros(2, np.float32), [(item, 1.0)], params, epochs=1)
    # err = 1, step = 0.1 * 1 * item
    assert out.tolist() == pytest.approx([0.1, 0.0])
    out3 = refit_user_vector(np.zeros(2, np.float32), [(item, 1.0)], params, epochs=3)
    # 0.1, then 0.1 + 0.1 * 0.9 = 0.19, then 0.19 + 0.1 * 0.81 = 0.271
    assert out3.tolist() == pytest.approx([0.271, 0.0], abs=1e-6)


def test_refit_leaves_its_inputs_alone() -> None:
    start, item = unit(0), unit(1)
    out = refit_user_vector(start, [(item, 1.0)], PARAMS)
    assert start.tolist() == unit(0).tolist() and item.tolist() == unit(1).tolist()
    assert out is not start and out.dtype == np.float32


@pytest.mark.parametrize(("epochs", "multiplier"), [(0, 1.0), (1, 0.0), (1, math.inf)])
def test_refit_bad_arguments(epochs: int, multiplier: float) -> None:
    with pytest.raises(ValueError):
        refit_user_vector(unit(0), [], PARAMS, epochs, multiplier)


# --- UserRecalibration ---------------------------------------------------------------------


def test_golden_alarm_index() -> None:
    policy = UserRecalibration()
    alarms = [i for i, loss in enumerate(stationary_then_shift()) if policy.update(loss)]
    assert alarms == [43]  # the 4th loss after the change at 40
    assert policy.alarms == 1 and policy.events == 55


def test_steady_user_alarm_rate() -> None:
    # Tuned for histories of ~100 interactions (a sensitive threshold of 8 sigma with a
    # tolerance of 0.02): on a stationary loss it alarms about once per 250 interactions.
    policy = UserRecalibration()
    rng = np.random.default_rng(SEED)
    losses = np.clip(rng.normal(0.5, 0.1, 2000), 0, 1)
    assert sum(policy.update(float(x)) for x in losses) == 8
    assert not any(UserRecalibration().update(float(x)) for x in losses[:100])


def test_refit_vector_is_closer_to_the_new_preference() -> None:
    rng = np.random.default_rng(SEED)
    old_items = [rng.normal(0, 0.3, 8).astype(np.float32) + unit(0) for _ in range(10)]
    new_items = {f"n{k}": rng.normal(0, 0.3, 8).astype(np.float32) + unit(1) for k in range(10)}
    user = unit(0) * np.float32(0.9)
    policy = UserRecalibration()
    recent = [(item_id, 1.0) for item_id in new_items]
    decision = policy.recalibrate(user, recent, new_items.get, np.zeros(8, np.float32), PARAMS)
    new_direction, old_direction = unit(1), unit(0)
    assert decision.user_vector @ new_direction > user @ new_direction + 0.3
    assert decision.user_vector @ old_direction < user @ old_direction
    mean_new = np.mean([decision.user_vector @ v for v in new_items.values()])
    mean_old = np.mean([decision.user_vector @ v for v in old_items])
    assert mean_new > mean_old
    assert decision.refit_items == 10
    assert user.tolist() == (unit(0) * np.float32(0.9)).tolist()  # untouched


def test_refit_uses_the_last_items_and_skips_unknown_ones() -> None:
    policy = UserRecalibration(UserRecalibrationConfig(refit_events=3))
    vectors = {"a": unit(0), "c": unit(2)}
    recent = [("a", 1.0), ("x", 1.0), ("a", 1.0), ("c", 1.0)]  # last 3: x, a, c; x unknown
    decision = policy.recalibrate(unit(5), recent, vectors.get, np.zeros(8, np.float32), PARAMS)
    assert decision.refit_items == 2
    assert decision.user_vector[5] == 0.0  # shrink 0: the old vector is gone
    assert decision.user_vector[0] > 0 and decision.user_vector[2] > 0


def test_shrink_keeps_part_of_the_old_vector() -> None:
    config = UserRecalibrationConfig(shrink=0.5)
    policy = UserRecalibration(config)
    decision = policy.recalibrate(unit(5), [], NO_ITEMS.get, np.zeros(8, np.float32), PARAMS)
    assert decision.user_vector.tolist() == pytest.approx((unit(5) * 0.5).tolist())


def test_learning_rate_multiplier_decays_to_one() -> None:
    config = UserRecalibrationConfig(boost=3.0, boost_events=4)
    policy = UserRecalibration(config)
    assert policy.learning_rate_multiplier == 1.0
    decision = policy.recalibrate(unit(0), [], NO_ITEMS.get, np.zeros(8, np.float32), PARAMS)
    assert decision.learning_rate_multiplier == 3.0 and decision.boost_events == 4
    seen = [policy.learning_rate_multiplier]
    for _ in range(6):
        policy.update(0.5)
        seen.append(policy.learning_rate_multiplier)
    assert seen == [3.0, 2.5, 2.0, 1.5, 1.0, 1.0, 1.0]


@settings(max_examples=100, deadline=None)
@given(
    boost=st.floats(1.0, 20.0),
    boost_events=st.integers(1, 50),
    losses=st.lists(st.floats(-5, 5, allow_nan=False), max_size=80),
)
def test_multiplier_is_monotone_and_bounded(
    boost: float, boost_events: int, losses: list[float]
) -> None:
    policy = UserRecalibration(UserRecalibrationConfig(boost=boost, boost_events=boost_events))
    policy.recalibrate(unit(0), [], NO_ITEMS.get, np.zeros(8, np.float32), PARAMS)
    previous = policy.learning_rate_multiplier
    for n, loss in enumerate(losses, start=1):
        policy.update(loss)
        current = policy.learning_rate_multiplier
        assert 1.0 <= current <= previous <= boost
        if n >= boost_events:
            assert current == 1.0
        previous = current


@settings(max_examples=50, deadline=None)
@given(
    start=st.lists(st.floats(-3, 3), min_size=8, max_size=8),
    items=st.lists(st.lists(st.floats(-3, 3), min_size=8, max_size=8), max_size=12),
)
def test_refit_is_finite_and_bounded(start: list[float], items: list[list[float]]) -> None:
    vectors = {f"i{k}": np.array(v, dtype=np.float32) for k, v in enumerate(items)}
    policy = UserRecalibration()
    decision = policy.recalibrate(
        np.array(start, dtype=np.float32),
        [(item_id, 2.0) for item_id in vectors],
        vectors.get,
        initial_vector("u", "user", PARAMS),
        PARAMS,
    )
    assert np.all(np.isfinite(decision.user_vector))
    assert float(np.linalg.norm(decision.user_vector)) <= PARAMS.max_norm * (1 + 1e-5)


def test_user_snapshot_round_trip() -> None:
    policy = UserRecalibration()
    losses = stationary_then_shift()
    for loss in losses[:43]:
        policy.update(loss)
    policy.recalibrate(unit(0), [], NO_ITEMS.get, np.zeros(8, np.float32), PARAMS)
    policy.update(0.3)
    snap = policy.snapshot()
    assert isinstance(snap, UserRecalibrationSnapshot)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.events = 0  # type: ignore[misc]
    restored = UserRecalibration.restore(pickle.loads(pickle.dumps(snap)))
    assert restored.snapshot() == snap
    tail = [0.9, 1.0, 0.2, 0.7] * 10
    assert [restored.update(x) for x in tail] == [policy.update(x) for x in tail]
    assert restored.learning_rate_multiplier == policy.learning_rate_multiplier


@pytest.mark.parametrize(
    "kwargs",
    [
        {"refit_events": 0},
        {"refit_epochs": 0},
        {"boost_events": 0},
        {"shrink": 1.5},
        {"boost": 0.5},
        {"lambda_factor": -1.0},
        {"min_instances": 0},
    ],
)
def test_user_config_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        UserRecalibrationConfig(**kwargs)  # type: ignore[arg-type]


# --- CategoryProfile -----------------------------------------------------------------------


def test_category_profile_golden() -> None:
    profile = CategoryProfile(decay=0.9)
    assert [round(profile.observe(c), 3) for c in ["a", "a", "b", "a", "c"]] == [
        1.0,
        0.0,
        1.0,
        0.369,
        1.0,
    ]


def test_category_profile_is_bounded_and_round_trips() -> None:
    profile = CategoryProfile(decay=1.0, max_categories=2)
    for c in ["a", "a", "a", "b", "c"]:
        profile.observe(c)
    snap = profile.snapshot()
    assert len(snap.weights) == 2 and dict(snap.weights)["a"] == 3.0
    restored = CategoryProfile.restore(pickle.loads(pickle.dumps(snap)))
    assert restored.surprise("a") == profile.surprise("a") == pytest.approx(0.25)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from("abcdefgh"), max_size=60), st.floats(0.5, 1.0))
def test_category_surprise_is_a_probability(categories: list[str], decay: float) -> None:
    profile = CategoryProfile(decay=decay, max_categories=4)
    for c in categories:
        loss = profile.observe(c)
        assert 0.0 <= loss <= 1.0


# --- GlobalRecalibration -------------------------------------------------------------------


def hit_stream(rates: list[float], n: int = 5000) -> list[float]:
    rng = np.random.default_rng(SEED)
    hits: list[float] = (rng.random(n * len(rates)) < np.repeat(rates, n)).astype(float).tolist()
    return hits


@pytest.mark.parametrize(
    ("detector", "rates", "expected_alarms", "expected_ignored"),
    [
        ("adwin", [0.3, 0.1], [5151], 0),
        ("adwin", [0.1, 0.3], [], 1),
        ("page_hinkley", [0.3, 0.1], [5250], 0),
        ("page_hinkley", [0.1, 0.3], [], 0),
    ],
)
def test_global_golden_warmups_only_on_a_drop(
    detector: str, rates: list[float], expected_alarms: list[int], expected_ignored: int
) -> None:
    policy = GlobalRecalibration(
        GlobalRecalibrationConfig(detector=detector, warmup_events=1000)  # type: ignore[arg-type]
    )
    found = [i for i, x in enumerate(hit_stream(rates)) if policy.update(x) is not None]
    assert found == expected_alarms
    assert policy.ignored == expected_ignored


def test_global_warmup_ramps_back_to_one() -> None:
    policy = GlobalRecalibration(
        GlobalRecalibrationConfig(half_life_factor=0.2, boost=3.0, warmup_events=4)
    )
    stream = hit_stream([0.3, 0.1])
    warmups = ((n, policy.update(x)) for n, x in enumerate(stream))
    n, warmup = next((n, w) for n, w in warmups if w is not None)
    assert warmup is not None and warmup.event_index == n + 1
    assert warmup.mean_after < warmup.mean_before
    ramp = [(policy.half_life_factor, policy.learning_rate_multiplier)]
    for x in stream[n + 1 : n + 6]:
        policy.update(x)
        ramp.append((policy.half_life_factor, policy.learning_rate_multiplier))
    expected = [(0.2, 3.0), (0.4, 2.5), (0.6, 2.0), (0.8, 1.5), (1.0, 1.0), (1.0, 1.0)]
    assert [h for h, _ in ramp] == pytest.approx([h for h, _ in expected])
    assert [m for _, m in ramp] == pytest.approx([m for _, m in expected])


def test_global_no_alarm_on_a_stationary_hit_rate() -> None:
    detectors: tuple[GlobalDetectorKind, ...] = ("adwin", "page_hinkley")
    for detector in detectors:
        policy = GlobalRecalibration(GlobalRecalibrationConfig(detector=detector))
        assert all(policy.update(x) is None for x in hit_stream([0.2], 100_000)), detector
        assert policy.ignored == 0


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_global_snapshot_round_trip(detector: str) -> None:
    config = GlobalRecalibrationConfig(detector=detector, warmup_events=500)  # type: ignore[arg-type]
    policy = GlobalRecalibration(config)
    stream = hit_stream([0.3, 0.1])
    for x in stream[:5200]:
        policy.update(x)
    snap = policy.snapshot()
    assert isinstance(snap, GlobalRecalibrationSnapshot)
    restored = GlobalRecalibration.restore(pickle.loads(pickle.dumps(snap)), config)
    assert restored.snapshot() == snap
    tail = stream[5200:]
    assert [restored.update(x) for x in tail] == [policy.update(x) for x in tail]
    assert restored.half_life_factor == policy.half_life_factor


@pytest.mark.parametrize(
    "kwargs",
    [
        {"detector": "cusum"},
        {"half_life_factor": 0.0},
        {"half_life_factor": 1.5},
        {"boost": 0.9},
        {"warmup_events": 0},
        {"mode": "sideways"},
        {"adwin_delta": 2.0},
    ],
)
def test_global_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GlobalRecalibrationConfig(**kwargs)  # type: ignore[arg-type]
