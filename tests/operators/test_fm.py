"""Online FM: prediction identity, gradients by finite differences, determinism, robustness."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.fm import FMParams, OnlineFM, fm_gradients, fm_loss, fm_predict

SEED = 99


def test_predict_equals_explicit_pairwise_sum() -> None:
    rng = np.random.default_rng(SEED)
    w = rng.normal(size=4).astype(np.float32)
    v = rng.normal(size=(4, 3)).astype(np.float32)
    explicit = (
        0.5 + w.sum() + sum(float(v[a] @ v[b]) for a, b in itertools.combinations(range(4), 2))
    )
    assert fm_predict(0.5, w, v) == pytest.approx(explicit, rel=1e-5)


def test_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(SEED)
    w = rng.normal(0, 0.3, 3)
    v = rng.normal(0, 0.3, (3, 4))
    b, target, weight, reg = 0.1, 1.0, 1.5, 0.02
    g_b, g_w, g_v = fm_gradients(b, w, v, target, weight, reg)
    eps = 1e-4
    for j in range(3):
        up, down = w.copy(), w.copy()
        up[j] += eps
        down[j] -= eps
        num = (
            fm_loss(b, up, v, target, weight, reg) - fm_loss(b, down, v, target, weight, reg)
        ) / (2 * eps)
        assert g_w[j] == pytest.approx(num, rel=1e-3, abs=1e-5), f"seed {SEED}"
    for j, f in itertools.product(range(3), range(4)):
        up, down = v.copy(), v.copy()
        up[j, f] += eps
        down[j, f] -= eps
        num = (
            fm_loss(b, w, up, target, weight, reg) - fm_loss(b, w, down, target, weight, reg)
        ) / (2 * eps)
        assert g_v[j, f] == pytest.approx(num, rel=1e-3, abs=1e-5)
    num_b = (
        fm_loss(b + eps, w, v, target, weight, reg) - fm_loss(b - eps, w, v, target, weight, reg)
    ) / (2 * eps)
    assert g_b == pytest.approx(num_b, rel=1e-3, abs=1e-5)


def test_score_items_matches_predict() -> None:
    fm = OnlineFM(FMParams(factors=4, seed=SEED))
    for i in range(30):
        fm.learn(["u:a", f"i:{i % 5}", f"c:{i % 2}", "tod:1"], float(i % 2))
    items = [["i:0", "c:0"], ["i:3", "c:1"], ["i:new", "c:0"]]
    scores = fm.score_items(["u:a", "tod:1"], items)
    for s, feats in zip(scores, items, strict=True):
        assert s == pytest.approx(fm.predict(["u:a", "tod:1", *feats]), rel=1e-4, abs=1e-5)


def test_same_seed_same_model() -> None:
    a, b = OnlineFM(FMParams(seed=SEED)), OnlineFM(FMParams(seed=SEED))
    for i in range(100):
        feats = [f"u:{i % 7}", f"i:{i % 11}", f"dev:{i % 3}"]
        a.learn(feats, 1.0)
        b.learn(feats, 1.0)
    np.testing.assert_array_equal(a.factors, b.factors)
    assert a.bias == b.bias


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4),
            st.floats(-1e6, 1e6),
            st.floats(0.0, 1e4),
        ),
        min_size=1,
        max_size=100,
    ),
    st.floats(0.01, 0.99),
)
def test_no_nan_or_inf_on_adversarial_streams(stream, rate: float) -> None:
    fm = OnlineFM(FMParams(factors=3, learn_rate=rate))
    for feats, target, weight in stream:
        fm.learn(feats, target, weight)
    assert np.isfinite(fm.factors).all() and np.isfinite(fm.weights).all()
    assert np.isfinite(fm.bias)
    assert np.isfinite(fm.score_items(["a"], [["b"], ["c", "d"]])).all()
