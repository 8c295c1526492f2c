"""ImplicitMF: gradients against finite differences, determinism, no NaN/inf on bad streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.implicit_mf import (
    ImplicitMF,
    ImplicitMFParams,
    pair_gradients,
    pair_loss,
    top_k,
)

SEED = 1234


def _numeric_grad(f, x: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    grad = np.zeros_like(x, dtype=np.float64)
    for j in range(x.size):
        up, down = x.astype(np.float64).copy(), x.astype(np.float64).copy()
        up[j] += eps
        down[j] -= eps
        grad[j] = (f(up) - f(down)) / (2 * eps)
    return grad


@pytest.mark.parametrize("target", [0.0, 1.0])
def test_pair_gradients_match_finite_differences(target: float) -> None:
    rng = np.random.default_rng(SEED)
    p = rng.normal(0, 0.5, 8)
    q = rng.normal(0, 0.5, 8)
    b, w, reg = 0.3, 2.0, 0.05
    g_p, g_q, g_b = pair_gradients(p, q, b, target, w, reg)
    num_p = _numeric_grad(lambda x: pair_loss(x, q, b, target, w, reg), p)
    num_q = _numeric_grad(lambda x: pair_loss(p, x, b, target, w, reg), q)
    num_b = _numeric_grad(lambda x: pair_loss(p, q, float(x[0]), target, w, reg), np.array([b]))
    np.testing.assert_allclose(g_p, num_p, rtol=1e-3, atol=1e-4, err_msg=f"seed {SEED}")
    np.testing.assert_allclose(g_q, num_q, rtol=1e-3, atol=1e-4)
    assert g_b == pytest.approx(num_b[0], rel=1e-3, abs=1e-4)


def test_positive_step_is_a_gradient_step() -> None:
    params = ImplicitMFParams(
        factors=4, negatives=0, lr_decay_events=0.0, init_from_neighbours=False
    )
    mf = ImplicitMF(params)
    mf.learn("u0", "i0")  # creates both
    u, i = mf.user_index["u0"], mf.item_index["i0"]
    p, q, b = mf.user_factors[u].copy(), mf.item_factors[i].copy(), float(mf.item_bias[i])
    g_p, g_q, _ = pair_gradients(p, q, b, 1.0, 1.0, params.regularization)
    mf.learn("u0", "i0")
    np.testing.assert_allclose(
        mf.user_factors[u], p - params.learn_rate * g_p, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        mf.item_factors[i], q - params.learn_rate * g_q, rtol=1e-5, atol=1e-6
    )


def _stream(seed: int, n: int = 400) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(seed)
    kinds = ["view", "add_to_cart", "favourite", "purchase"]
    return [
        (f"u{rng.integers(20)}", f"i{rng.integers(50)}", kinds[rng.integers(4)]) for _ in range(n)
    ]


@pytest.mark.parametrize("sampling", ["recency", "popularity", "none"])
def test_same_seed_same_model(sampling: str) -> None:
    params = ImplicitMFParams(factors=8, negative_sampling=sampling, lr_decay_events=20.0)
    a, b = ImplicitMF(params), ImplicitMF(params)
    for user, item, kind in _stream(SEED):
        a.learn(user, item, kind)
        b.learn(user, item, kind)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    assert a.recommend("u1", 5) == b.recommend("u1", 5)


def test_learns_a_preference() -> None:
    mf = ImplicitMF(ImplicitMFParams(factors=8, negatives=2))
    for _ in range(100):
        mf.learn("a", "x", "purchase")
        mf.learn("b", "y", "view")
        mf.learn("b", "z", "view")
    assert mf.recommend("a", 1) == ["x"]
    assert mf.recommend("a", 3, exclude={"x"})[0] in {"y", "z"}


def test_bad_hyperparameters_raise() -> None:
    with pytest.raises(ValueError):
        ImplicitMFParams(learn_rate=2.0)
    with pytest.raises(ValueError):
        ImplicitMFParams(negative_sampling="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ImplicitMFParams(event_weights={"view": float("nan")})


def test_top_k_excludes_and_breaks_ties_by_index() -> None:
    scores = np.array([1.0, 3.0, 3.0, np.nan, 2.0])
    assert top_k(scores, 3) == [1, 2, 4]
    assert top_k(scores, 3, [1]) == [2, 4, 0]
    assert top_k(scores, 10, [0, 1, 2, 4]) == []


events = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(["i1", "i2", "i3", "i4"]),
        st.sampled_from(["view", "add_to_cart", "favourite", "purchase", "unknown"]),
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=40, deadline=None)
@given(events, st.floats(0.01, 0.99), st.floats(1.0, 1e4))
def test_no_nan_or_inf_on_adversarial_streams(stream, rate: float, weight: float) -> None:
    params = ImplicitMFParams(
        factors=4,
        learn_rate=rate,
        bias_learn_rate=rate,
        negatives=3,
        event_weights={"view": weight, "purchase": weight * 10},
    )
    mf = ImplicitMF(params)
    for user, item, kind in stream:
        mf.learn(user, item, kind)
    n = mf.n_items
    assert np.isfinite(mf.item_factors[:n]).all()
    assert np.isfinite(mf.user_factors[: len(mf.user_index)]).all()
    assert np.isfinite(mf.item_bias[:n]).all()
    assert np.isfinite(mf.scores("u1")).all()
