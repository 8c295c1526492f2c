"""Hedge weights over experts and the score combination."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.ensemble import Hedge, HedgeSnapshot, combine_scores

SEED = 11


# --- golden values -------------------------------------------------------------------------


def test_golden_one_round_is_the_exponential_update() -> None:
    hedge = Hedge(2, learning_rate=1.0)
    hedge.update([0.0, 1.0])
    # w ∝ (1, e^-1): 1 / (1 + e^-1) = 0.7310585786300049
    assert hedge.weights == pytest.approx(
        (1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1)))
    )
    assert hedge.weights[0] == pytest.approx(0.7310585786300049, abs=1e-15)


def test_golden_floor_and_comeback() -> None:
    hedge = Hedge(2, learning_rate=0.5, weight_floor=0.01)
    for _ in range(10):
        hedge.update([0.0, 1.0])
    assert [round(w, 3) for w in hedge.weights] == [0.969, 0.031]
    for _ in range(20):
        hedge.update([1.0, 0.0])
    assert [round(w, 3) for w in hedge.weights] == [0.026, 0.974]
    assert hedge.cumulative_losses == (20.0, 10.0)
    assert hedge.rounds == 30


def test_without_floor_weights_follow_cumulative_losses() -> None:
    rng = np.random.default_rng(SEED)
    losses = rng.random((200, 3))
    hedge = Hedge(3, learning_rate=0.3)
    for row in losses:
        hedge.update(row.tolist())
    expected = np.exp(-0.3 * losses.sum(axis=0))
    expected /= expected.sum()
    np.testing.assert_allclose(hedge.weights, expected, rtol=1e-9)


def test_floor_lets_an_expert_come_back_faster() -> None:
    def rounds_to_lead(floor: float) -> int:
        hedge = Hedge(2, learning_rate=0.5, weight_floor=floor)
        for _ in range(500):
            hedge.update([0.0, 1.0])
        for n in range(1, 10_000):
            hedge.update([1.0, 0.0])
            if hedge.weights[1] > 0.5:
                return n
        raise AssertionError("never came back")

    assert rounds_to_lead(0.01) < 20 < rounds_to_lead(0.0)


def test_losses_are_clipped() -> None:
    a, b = Hedge(2), Hedge(2)
    a.update([-3.0, 7.0])
    b.update([0.0, 1.0])
    assert a.weights == b.weights


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0,), "n_experts"),
        ((2, 0.0), "learning_rate"),
        ((2, math.inf), "learning_rate"),
        ((2, 0.5, 0.5), "weight_floor"),
        ((2, 0.5, -0.1), "weight_floor"),
        ((1, 0.5, 0.1), "weight_floor"),
    ],
)
def test_bad_hyperparameters_raise(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Hedge(*args)  # type: ignore[arg-type]


def test_bad_losses_raise() -> None:
    hedge = Hedge(2)
    with pytest.raises(ValueError, match="expected 2"):
        hedge.update([0.1])
    with pytest.raises(ValueError, match="NaN"):
        hedge.update([math.nan, 0.0])


# --- properties ----------------------------------------------------------------------------

losses_strategy = st.floats(min_value=-10, max_value=10, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    n_experts=st.integers(1, 5),
    learning_rate=st.floats(0.01, 50.0),
    floor_share=st.floats(0.0, 0.99),
    data=st.data(),
)
def test_weights_stay_a_distribution(
    n_experts: int, learning_rate: float, floor_share: float, data: st.DataObject
) -> None:
    floor = 0.0 if n_experts == 1 else floor_share / n_experts
    hedge = Hedge(n_experts, learning_rate, floor)
    rounds = data.draw(
        st.lists(st.lists(losses_strategy, min_size=n_experts, max_size=n_experts), max_size=50)
    )
    for losses in rounds:
        hedge.update(losses)
        weights = hedge.weights
        assert all(math.isfinite(w) and w >= 0 for w in weights)
        assert math.fsum(weights) == pytest.approx(1.0, abs=1e-12)
        assert min(weights) >= floor * (1 - 1e-9)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), gap=st.floats(0.25, 0.5))
def test_the_better_expert_gains_weight(seed: int, gap: float) -> None:
    # 1000 rounds: the cumulative-loss gap (>= 250) is 8 standard deviations from zero.
    rng = np.random.default_rng(seed)
    hedge = Hedge(2, learning_rate=0.1)
    good = rng.random(1000) < 0.5 - gap  # lower loss rate
    bad = rng.random(1000) < 0.5
    for g, b in zip(good, bad, strict=True):
        hedge.update([float(b), float(g)])
    assert hedge.weights[1] > hedge.weights[0], f"seed {seed}"


def test_snapshot_round_trip() -> None:
    hedge = Hedge(3, learning_rate=0.2, weight_floor=0.05)
    for losses in ([0.1, 0.5, 0.9], [0.0, 1.0, 0.3]):
        hedge.update(losses)
    snap = hedge.snapshot()
    assert isinstance(snap, HedgeSnapshot)
    restored = Hedge.restore(pickle.loads(pickle.dumps(snap)))
    assert restored.snapshot() == snap
    hedge.update([0.2, 0.2, 0.9])
    restored.update([0.2, 0.2, 0.9])
    assert restored.weights == hedge.weights
    with pytest.raises(AttributeError):
        snap.rounds = 0  # type: ignore[misc]


# --- combine_scores ------------------------------------------------------------------------


def test_combine_scores_golden() -> None:
    out = combine_scores([0.25, 0.75], [np.array([1.0, 2.0]), np.array([3.0, -1.0])])
    assert out.dtype == np.float32
    assert out.tolist() == [2.5, -0.25]


def test_combine_scores_rejects_mismatches() -> None:
    with pytest.raises(ValueError, match="weights"):
        combine_scores([1.0], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="shape"):
        combine_scores([0.5, 0.5], [[1.0, 2.0], [1.0]])
