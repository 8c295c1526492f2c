"""Per-user and global recalibration policies, the refit and the category profile (native)."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import (
    CategoryProfile,
    GlobalRecalibration,
    GlobalRecalibrationConfig,
    IsgdParams,
    UserRecalibration,
    UserRecalibrationConfig,
    initial_vector,
    refit_user_vector,
)
from operators._native import _fsum, _ramp
from tests.oracles import isgd as oracle_isgd
from tests.oracles import recalibration as oracle

Vector = np.ndarray

SEED = 3
PARAMS = IsgdParams(factors=8, seed=5)
ORACLE_PARAMS = oracle_isgd.IsgdParams(factors=8, seed=5)
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


def same_error(native: Any, python: Any) -> None:
    """Both calls raise ValueError with the same message."""
    with pytest.raises(ValueError) as theirs:
        python()
    with pytest.raises(ValueError) as ours:
        native()
    assert str(ours.value) == str(theirs.value)


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
    same_error(
        lambda: refit_user_vector(unit(0), [], PARAMS, epochs, multiplier),
        lambda: oracle.refit_user_vector(unit(0), [], ORACLE_PARAMS, epochs, multiplier),
    )


def test_refit_refuses_vectors_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="start has 3 factors, the params say 8"):
        refit_user_vector(np.zeros(3, np.float32), [], PARAMS)
    with pytest.raises(ValueError, match="an item vector has 2 factors"):
        refit_user_vector(unit(0), [(np.zeros(2, np.float32), 1.0)], PARAMS)


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
    asked: list[str] = []

    def lookup(item_id: str) -> Vector | None:
        asked.append(item_id)
        return vectors.get(item_id)

    recent = [("a", 1.0), ("x", 1.0), ("a", 1.0), ("c", 1.0)]  # last 3: x, a, c; x unknown
    decision = policy.recalibrate(unit(5), recent, lookup, np.zeros(8, np.float32), PARAMS)
    assert asked == ["x", "a", "c"]
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
    snap = policy.to_state()
    assert isinstance(snap, bytes) and snap[:4] == b"URC\x01"
    restored = UserRecalibration.from_state(pickle.loads(pickle.dumps(snap)))
    assert restored.to_state() == snap
    assert restored.threshold == policy.threshold
    tail = [0.9, 1.0, 0.2, 0.7] * 10
    assert [restored.update(x) for x in tail] == [policy.update(x) for x in tail]
    assert restored.learning_rate_multiplier == policy.learning_rate_multiplier
    with pytest.raises(ValueError, match="truncated"):
        UserRecalibration.from_state(snap[:-1])


def test_non_finite_loss_is_refused_without_a_trace() -> None:
    policy = UserRecalibration()
    policy.update(0.5)
    before = policy.to_state()
    with pytest.raises(ValueError, match="finite"):
        policy.update(math.nan)
    assert policy.to_state() == before and policy.events == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"refit_events": 0},
        {"refit_epochs": 0},
        {"boost_events": 0},
        {"boost_events": 2.5},
        {"refit_events": True},
        {"shrink": 1.5},
        {"boost": 0.5},
        {"boost": math.inf},
        {"lambda_factor": -1.0},
        {"min_instances": 0},
        {"min_instances": None},
        {"std_alpha": 1.0},
        {"refit_epochs": 0, "shrink": 2.0},
    ],
    ids=str,
)
def test_user_config_rejects_bad_values_as_the_oracle_did(kwargs: dict[str, Any]) -> None:
    same_error(
        lambda: UserRecalibrationConfig(**kwargs),
        lambda: oracle.UserRecalibrationConfig(**kwargs),
    )


def test_user_config_reads_back_and_compares() -> None:
    config = UserRecalibrationConfig(min_instances=7, shrink=0.25, boost_events=9)
    assert (config.min_instances, config.shrink, config.boost_events) == (7, 0.25, 9)
    assert config == UserRecalibrationConfig(min_instances=7, shrink=0.25, boost_events=9)
    assert config != UserRecalibrationConfig()
    assert hash(config) == hash(
        UserRecalibrationConfig(min_instances=7, shrink=0.25, boost_events=9)
    )
    detector = config.build_detector()
    assert (detector.mode, detector.lambda_factor, detector.min_instances) == ("up", 8.0, 7)


# --- UserRecalibration against the oracle ----------------------------------------------------

user_configs = st.fixed_dictionaries(
    {
        "min_instances": st.integers(1, 20),
        "delta": st.floats(0.0, 0.2),
        "lambda_factor": st.floats(0.5, 20.0),
        "std_alpha": st.floats(0.5, 0.999),
        "min_threshold": st.floats(0.01, 2.0),
        "alpha": st.floats(0.9, 1.0),
        "refit_events": st.integers(1, 12),
        "refit_epochs": st.integers(1, 4),
        "shrink": st.floats(0.0, 1.0),
        "boost": st.floats(1.0, 3.0),  # the refit's step stays in ISGD's stable regime
        "boost_events": st.integers(1, 30),
    }
)


#: Calm stretches then bad ones (so most examples alarm and refit), or any losses at all.
shifting_losses = st.lists(
    st.tuples(
        st.lists(st.floats(0.0, 0.4), min_size=5, max_size=40),
        st.lists(st.floats(0.6, 1.0), min_size=3, max_size=20),
    ),
    max_size=4,
).map(lambda stretches: [x for calm, bad in stretches for x in (*calm, *bad)]) | st.lists(
    st.floats(0.0, 1.0) | st.sampled_from([0.0, 1.0]), max_size=150
)


@settings(max_examples=150, deadline=None)
@given(kwargs=user_configs, losses=shifting_losses, seed=st.integers(0, 2**32 - 1))
def test_user_policy_matches_the_oracle(
    kwargs: dict[str, Any], losses: list[float], seed: int
) -> None:
    # Detector, counters, thresholds and multipliers: exactly. The refit vector: to float32
    # rounding, because the oracle's ISGD dot product is numpy's float32 BLAS sum and the
    # native one sums in float64 (crate::isgd, as documented there).
    ours = UserRecalibration(UserRecalibrationConfig(**kwargs))
    theirs = oracle.UserRecalibration(oracle.UserRecalibrationConfig(**kwargs))
    rng = np.random.default_rng(seed)
    items = {f"i{k}": rng.normal(0, 0.3, 8).astype(np.float32) for k in range(6)}
    user = rng.normal(0, 0.3, 8).astype(np.float32)
    initial = initial_vector("u", "user", PARAMS)
    recent: list[tuple[str, float]] = []
    for loss in losses:
        recent.append(
            (f"i{rng.integers(0, 8)}", float(rng.choice([1.0, 2.0, 3.0])))
        )  # i6, i7 unknown
        drifted = ours.update(loss)
        assert drifted == theirs.update(loss)
        assert (ours.events, ours.alarms) == (theirs.events, theirs.alarms)
        assert ours.threshold == theirs.threshold
        assert ours.learning_rate_multiplier == theirs.learning_rate_multiplier
        if drifted:
            a = ours.recalibrate(user, recent, items.get, initial, PARAMS)
            b = theirs.recalibrate(user, recent, items.get, initial, ORACLE_PARAMS)
            assert (a.learning_rate_multiplier, a.boost_events, a.refit_items) == (
                b.learning_rate_multiplier,
                b.boost_events,
                b.refit_items,
            )
            assert (a.threshold, a.event_index) == (b.threshold, b.event_index)
            np.testing.assert_allclose(a.user_vector, b.user_vector, rtol=1e-4, atol=1e-5)
            user = a.user_vector


@settings(max_examples=100, deadline=None)
@given(
    start=st.lists(st.floats(-2, 2, width=32), min_size=8, max_size=8),
    items=st.lists(
        st.tuples(
            st.lists(st.floats(-0.5, 0.5, width=32), min_size=8, max_size=8), st.floats(0.5, 3)
        ),
        max_size=10,
    ),
    epochs=st.integers(1, 4),
    multiplier=st.floats(0.1, 3.0),
)
def test_refit_matches_the_oracle_to_float32_rounding(
    start: list[float], items: list[tuple[list[float], float]], epochs: int, multiplier: float
) -> None:
    # The oracle's dot products are numpy's float32 BLAS sums, ours float64 sums rounded to
    # float32, so the two differ by float32 rounding per step. In the stable regime (step
    # learn_rate x weight x multiplier x |item|^2 < 2, which real vectors are in) the steps
    # contract and those differences stay small; beyond it one ulp can grow without bound.
    pairs = [(np.array(v, np.float32), w) for v, w in items]
    ours = refit_user_vector(np.array(start, np.float32), pairs, PARAMS, epochs, multiplier)
    theirs = oracle.refit_user_vector(
        np.array(start, np.float32), pairs, ORACLE_PARAMS, epochs, multiplier
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_refit_start_is_float32_arithmetic_as_numpy_did() -> None:
    # With no items the refit returns its start: shrink * user + (1 - shrink) * initial in
    # float32, bit for bit what the oracle computed with numpy.
    rng = np.random.default_rng(SEED)
    for shrink in (0.0, 0.3, 0.5, 1.0, 1 / 3):
        user = rng.normal(0, 1, 8).astype(np.float32)
        initial = rng.normal(0, 1, 8).astype(np.float32)
        ours = UserRecalibration(UserRecalibrationConfig(shrink=shrink))
        theirs = oracle.UserRecalibration(oracle.UserRecalibrationConfig(shrink=shrink))
        a = ours.recalibrate(user, [], NO_ITEMS.get, initial, PARAMS).user_vector
        b = theirs.recalibrate(user, [], NO_ITEMS.get, initial, ORACLE_PARAMS).user_vector
        assert a.tobytes() == b.tobytes()


@settings(max_examples=300, deadline=None)
@given(start=st.floats(0.01, 20.0), left=st.integers(-3, 60), length=st.integers(1, 50))
def test_ramp_matches_the_oracle(start: float, left: int, length: int) -> None:
    assert _ramp(start, left, length) == oracle._ramp(start, left, length)


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
    assert len(profile.weights) == 2 and dict(profile.weights)["a"] == 3.0
    snap = profile.to_state()
    assert snap[:4] == b"CAT\x01"
    restored = CategoryProfile.from_state(pickle.loads(pickle.dumps(snap)))
    assert restored.surprise("a") == profile.surprise("a") == pytest.approx(0.25)
    assert (restored.decay, restored.max_categories) == (1.0, 2)
    assert restored.weights == profile.weights
    assert profile.surprise("never-seen") == 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from("abcdefgh"), max_size=60), st.floats(0.5, 1.0))
def test_category_surprise_is_a_probability(categories: list[str], decay: float) -> None:
    profile = CategoryProfile(decay=decay, max_categories=4)
    for c in categories:
        loss = profile.observe(c)
        assert 0.0 <= loss <= 1.0


@settings(max_examples=150, deadline=None)
@given(
    categories=st.lists(st.sampled_from("abcdefghij") | st.text(max_size=3), max_size=120),
    decay=st.floats(0.05, 1.0) | st.sampled_from([1.0, 0.5, 0.9]),
    max_categories=st.integers(1, 8),
)
def test_category_profile_matches_the_oracle(
    categories: list[str], decay: float, max_categories: int
) -> None:
    # Bit for bit, including which of equally light categories is dropped (decay 1 and 0.5
    # make many exact ties) and fsum's exact rounding.
    ours = CategoryProfile(decay=decay, max_categories=max_categories)
    theirs = oracle.CategoryProfile(decay=decay, max_categories=max_categories)
    for c in categories:
        assert ours.surprise(c) == theirs.surprise(c)
        assert ours.observe(c) == theirs.observe(c)
        assert ours.weights == list(theirs.snapshot().weights)


@pytest.mark.parametrize(
    "kwargs",
    [{"decay": 0.0}, {"decay": 1.5}, {"max_categories": 0}, {"max_categories": 2.0}],
    ids=str,
)
def test_category_profile_rejects_bad_values_as_the_oracle_did(kwargs: dict[str, Any]) -> None:
    same_error(lambda: CategoryProfile(**kwargs), lambda: oracle.CategoryProfile(**kwargs))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)
        | st.floats(-1.0, 1.0)
        | st.sampled_from([1e-16, 1.0, 1e16, -0.0, 5e-324]),
        max_size=60,
    )
)
def test_fsum_is_math_fsum(values: list[float]) -> None:
    assert _fsum(values) == math.fsum(values)
    assert math.copysign(1.0, _fsum(values)) == math.copysign(1.0, math.fsum(values))


def test_fsum_special_values() -> None:
    for values in ([math.inf, 1.0], [-math.inf, 2.0], [math.nan, 1.0], [math.inf, -math.inf]):
        try:
            expected = math.fsum(values)
        except ValueError:  # -inf + inf: Python raises, we return nan
            assert math.isnan(_fsum(values))
            continue
        assert _fsum(values) == expected or (math.isnan(expected) and math.isnan(_fsum(values)))


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
    for detector in ("adwin", "page_hinkley"):
        policy = GlobalRecalibration(GlobalRecalibrationConfig(detector=detector))  # type: ignore[arg-type]
        assert all(policy.update(x) is None for x in hit_stream([0.2], 100_000)), detector
        assert policy.ignored == 0


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_global_snapshot_round_trip(detector: str) -> None:
    config = GlobalRecalibrationConfig(detector=detector, warmup_events=500)  # type: ignore[arg-type]
    policy = GlobalRecalibration(config)
    stream = hit_stream([0.3, 0.1])
    for x in stream[:5200]:
        policy.update(x)
    snap = policy.to_state()
    assert snap[:4] == b"GRC\x01"
    restored = GlobalRecalibration.from_state(pickle.loads(pickle.dumps(snap)), config)
    assert restored.to_state() == snap
    tail = stream[5200:]
    assert [restored.update(x) for x in tail] == [policy.update(x) for x in tail]
    assert restored.half_life_factor == policy.half_life_factor


def test_global_snapshot_needs_a_config_of_its_kind() -> None:
    snap = GlobalRecalibration(GlobalRecalibrationConfig(detector="adwin")).to_state()
    with pytest.raises(ValueError, match="not of the config's kind"):
        GlobalRecalibration.from_state(snap, GlobalRecalibrationConfig(detector="page_hinkley"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"detector": "cusum"},
        {"detector": None},
        {"half_life_factor": 0.0},
        {"half_life_factor": 1.5},
        {"boost": 0.9},
        {"warmup_events": 0},
        {"warmup_events": 1.0},
        {"mode": "sideways"},
        {"mode": "sideways", "detector": "page_hinkley"},
        {"adwin_delta": 2.0},
        {"detector": "page_hinkley", "ph_alpha": 0.0},
        {"detector": "page_hinkley", "ph_min_instances": 0},
    ],
    ids=str,
)
def test_global_config_rejects_bad_values_as_the_oracle_did(kwargs: dict[str, Any]) -> None:
    same_error(
        lambda: GlobalRecalibrationConfig(**kwargs),
        lambda: oracle.GlobalRecalibrationConfig(**kwargs),
    )


def test_global_config_keeps_the_other_kinds_values_unchecked() -> None:
    config = GlobalRecalibrationConfig(detector="adwin", ph_delta=-1.0)
    assert (config.detector, config.mode, config.ph_delta) == ("adwin", "down", -1.0)
    assert type(config.build_detector()).__name__ == "ADWIN"
    ph = GlobalRecalibrationConfig(detector="page_hinkley", mode="both").build_detector()
    assert (type(ph).__name__, ph.mode, ph.lambda_factor) == ("PageHinkley", "both", 50.0)


global_configs = st.fixed_dictionaries(
    {
        "detector": st.sampled_from(["adwin", "page_hinkley"]),
        "mode": st.sampled_from(["up", "down", "both"]),
        "adwin_delta": st.floats(0.001, 0.5),
        "ph_delta": st.floats(0.0, 0.2),
        "ph_lambda_factor": st.floats(1.0, 60.0),
        "ph_alpha": st.floats(0.99, 1.0),
        "ph_min_instances": st.integers(1, 200),
        "half_life_factor": st.floats(0.05, 1.0),
        "boost": st.floats(1.0, 4.0),
        "warmup_events": st.integers(1, 300),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    kwargs=global_configs,
    rates=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4),
    n=st.integers(1, 1500),
    seed=st.integers(0, 2**32 - 1),
)
def test_global_policy_matches_the_oracle(
    kwargs: dict[str, Any], rates: list[float], n: int, seed: int
) -> None:
    # Exactly: every warm-up (index, means), the counters and both ramps after each value.
    rng = np.random.default_rng(seed)
    stream = (rng.random(n * len(rates)) < np.repeat(rates, n)).astype(float).tolist()
    ours = GlobalRecalibration(GlobalRecalibrationConfig(**kwargs))
    theirs = oracle.GlobalRecalibration(oracle.GlobalRecalibrationConfig(**kwargs))
    for x in stream:
        a, b = ours.update(x), theirs.update(x)
        if b is None:
            assert a is None
        else:
            assert a is not None
            assert (
                a.half_life_factor,
                a.learning_rate_multiplier,
                a.warmup_events,
                a.event_index,
                a.mean_before,
                a.mean_after,
            ) == (
                b.half_life_factor,
                b.learning_rate_multiplier,
                b.warmup_events,
                b.event_index,
                b.mean_before,
                b.mean_after,
            )
        assert (ours.events, ours.alarms, ours.ignored) == (
            theirs.events,
            theirs.alarms,
            theirs.ignored,
        )
        assert ours.half_life_factor == theirs.half_life_factor
        assert ours.learning_rate_multiplier == theirs.learning_rate_multiplier
