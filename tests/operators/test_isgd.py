"""ISGD (Vinagre et al. 2014), native: the steps are gradient steps, deterministic and stable,
and agree with the Python oracle (initial vectors bit for bit, steps to float32 rounding)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import (
    DEFAULT_EVENT_WEIGHTS,
    IncrementalMF,
    IsgdParams,
    initial_vector,
    item_step,
    user_step,
)
from tests.oracles import isgd as oracle

SEED = 20140707


def loss(own: np.ndarray, other: np.ndarray, regularization: float) -> float:
    """The per-event objective of one half: 0.5 (1 - own.other)^2 + 0.5 lambda |own|^2."""
    err = 1.0 - float(own @ other)
    return 0.5 * err * err + 0.5 * regularization * float(own @ own)


def numeric_gradient(own: np.ndarray, other: np.ndarray, regularization: float) -> np.ndarray:
    h = 1e-6
    grad = np.empty_like(own)
    for j in range(own.size):
        plus, minus = own.copy(), own.copy()
        plus[j] += h
        minus[j] -= h
        grad[j] = (loss(plus, other, regularization) - loss(minus, other, regularization)) / (2 * h)
    return grad


small_vectors = st.integers(min_value=0, max_value=2**32 - 1).map(
    lambda seed: np.random.default_rng(seed).normal(0.0, 0.3, size=(2, 6)).astype(np.float32)
)


@pytest.mark.parametrize("step", [user_step, item_step], ids=["user_step", "item_step"])
@given(
    pair=small_vectors,
    weight=st.floats(0.1, 3.0),
    learn_rate=st.floats(0.001, 0.5),
    regularization=st.floats(0.0, 0.5),
)
def test_step_is_a_gradient_step_on_the_squared_error(
    step, pair: np.ndarray, weight: float, learn_rate: float, regularization: float
) -> None:
    own, other = pair[0].copy(), pair[1].copy()
    exact_own, exact_other = own.astype(np.float64), other.astype(np.float64)
    assert abs(1.0 - exact_own @ exact_other) < 4  # no clipping in this regime
    params = IsgdParams(factors=6, learn_rate=learn_rate, regularization=regularization)
    gradient = numeric_gradient(exact_own, exact_other, regularization)
    expected = exact_own - learn_rate * weight * gradient
    other_before = other.copy()

    err = step(own, other, weight, params)  # float32 arrays, updated in place

    # float32 arithmetic (the dot rounded to float32, the update in float32): to its rounding.
    assert err == pytest.approx(1.0 - exact_own @ exact_other, abs=1e-6)
    np.testing.assert_allclose(own, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(other, other_before)  # the other side is only read


def test_step_golden_values() -> None:
    params = IsgdParams(factors=2, learn_rate=0.1, regularization=0.5)
    user = np.array([1.0, 0.0], dtype=np.float32)
    item = np.array([0.5, 2.0], dtype=np.float32)
    # err = 1 - 0.5 = 0.5; user += 0.1 * 2 * (0.5 * item - 0.5 * user) = [0.95, 0.2]
    assert user_step(user, item, 2.0, params) == 0.5
    np.testing.assert_allclose(user, [0.95, 0.2], rtol=1e-6)
    # err = 1 - (0.95*0.5 + 0.2*2) = 0.125; item += 0.1 * (0.125 * user - 0.5 * item)
    assert item_step(item, user, 1.0, params) == pytest.approx(0.125, abs=1e-6)
    np.testing.assert_allclose(
        item, [0.5 + 0.1 * (0.125 * 0.95 - 0.25), 2.0 + 0.1 * (0.025 - 1.0)], rtol=1e-5
    )


def test_large_errors_are_clipped_to_four() -> None:
    params = IsgdParams(factors=1, learn_rate=0.1, regularization=0.0)
    user = np.array([10.0], dtype=np.float32)
    item = np.array([10.0], dtype=np.float32)
    assert user_step(user, item, 1.0, params) == -4.0  # 1 - 100, clipped
    np.testing.assert_allclose(user, [10.0 - 0.1 * 4.0 * 10.0])


def test_steps_keep_float32() -> None:
    params = IsgdParams(factors=4)
    user, item = initial_vector("u", "user", params), initial_vector("i", "item", params)
    user_step(user, item, 3.0, params)
    item_step(item, user, 3.0, params)
    assert user.dtype == np.float32 and item.dtype == np.float32


# --- initial vectors -------------------------------------------------------------------------


def test_initial_vector_is_deterministic_per_seed_kind_and_id() -> None:
    params = IsgdParams(factors=16, seed=7)
    a = initial_vector("42", "item", params)
    assert a.dtype == np.float32 and a.shape == (16,)
    np.testing.assert_array_equal(a, initial_vector("42", "item", IsgdParams(factors=16, seed=7)))
    assert not np.array_equal(a, initial_vector("43", "item", params))
    assert not np.array_equal(a, initial_vector("42", "user", params))
    assert not np.array_equal(a, initial_vector("42", "item", IsgdParams(factors=16, seed=8)))


def test_initial_vector_golden_values() -> None:
    # Pinned: changing the derivation silently re-initialises every deployed model, and the
    # worker's replica and the item owner must agree on it.
    params = IsgdParams(factors=4, seed=42, init_std=0.1)
    np.testing.assert_allclose(
        initial_vector("1002166", "user", params),
        [-0.06221216544508934, 0.13147304952144623, -0.08493088185787201, -0.0897357389330864],
        rtol=1e-7,
    )
    np.testing.assert_allclose(
        initial_vector("4274395", "item", params),
        [-0.12618717551231384, 0.0593736506998539, -0.0007320935255847871, 0.006483136210590601],
        rtol=1e-7,
    )


@given(st.lists(st.text(min_size=1, max_size=20), min_size=2, max_size=20, unique=True))
def test_initial_vectors_differ_across_ids(entity_ids: list[str]) -> None:
    params = IsgdParams(factors=8)
    vectors = {initial_vector(i, "item", params).tobytes() for i in entity_ids}
    assert len(vectors) == len(entity_ids)


def test_initial_vectors_have_the_configured_spread() -> None:
    params = IsgdParams(factors=64, init_std=0.25)
    sample = np.stack([initial_vector(str(i), "item", params) for i in range(500)])
    assert abs(float(sample.mean())) < 0.01
    assert float(sample.std()) == pytest.approx(0.25, rel=0.03)


# --- the sequential model --------------------------------------------------------------------


def random_stream(seed: int, n: int, users: int, items: int) -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(seed)
    weights = list(DEFAULT_EVENT_WEIGHTS.values())
    return [
        (f"u{rng.integers(users)}", f"i{rng.integers(items)}", float(rng.choice(weights)))
        for _ in range(n)
    ]


def train(params: IsgdParams, stream: list[tuple[str, str, float]]) -> IncrementalMF:
    mf = IncrementalMF(params)
    for user_id, item_id, weight in stream:
        mf.learn(user_id, item_id, weight)
    return mf


def vectors(mf: IncrementalMF, stream: list[tuple[str, str, float]]) -> dict[str, np.ndarray]:
    """Every vector the stream created, keyed "user:<id>" / "item:<id>"."""
    out: dict[str, np.ndarray] = {}
    for user_id, item_id, _ in stream:
        for key, vec in (
            (f"user:{user_id}", mf.user_vector(user_id)),
            (f"item:{item_id}", mf.item_vector(item_id)),
        ):
            assert vec is not None
            out[key] = vec
    return out


def test_incremental_mf_is_deterministic_with_a_seed() -> None:
    stream = random_stream(SEED, 2000, users=30, items=60)
    first = vectors(train(IsgdParams(factors=8, seed=3), stream), stream)
    second = vectors(train(IsgdParams(factors=8, seed=3), stream), stream)
    assert first.keys() == second.keys()
    for key, vec in first.items():
        np.testing.assert_array_equal(vec, second[key])
    other_seed = train(IsgdParams(factors=8, seed=4), stream)
    assert not np.array_equal(first["user:u0"], other_seed.user_vector("u0"))


def test_vectors_exist_only_once_learned_and_are_copies() -> None:
    mf = IncrementalMF(IsgdParams(factors=4))
    assert mf.user_vector("u") is None and mf.item_vector("i") is None
    mf.learn("u", "i")
    vec = mf.user_vector("u")
    assert vec is not None and vec.dtype == np.float32 and vec.shape == (4,)
    vec[:] = 0.0
    assert mf.user_vector("u").tolist() != [0.0] * 4  # type: ignore[union-attr]


def test_learn_equals_the_two_halves_from_the_same_starting_vectors() -> None:
    params = IsgdParams(factors=8)
    mf = IncrementalMF(params)
    user, item = initial_vector("u", "user", params), initial_vector("i", "item", params)
    err = mf.learn("u", "i", 2.0)
    user_before = user.copy()
    assert user_step(user, item, 2.0, params) == err
    item_step(item, user_before, 2.0, params)
    np.testing.assert_array_equal(mf.user_vector("u"), user)
    np.testing.assert_array_equal(mf.item_vector("i"), item)


def test_learning_raises_the_score_of_trained_pairs() -> None:
    params = IsgdParams(factors=16, seed=SEED % 1000)
    rng = np.random.default_rng(SEED)
    pairs = [(f"u{u}", f"i{rng.integers(200)}") for u in range(20) for _ in range(3)]
    mf = IncrementalMF(params)

    def initial_score(user_id: str, item_id: str) -> float:
        user = initial_vector(user_id, "user", params)
        return float(user @ initial_vector(item_id, "item", params))

    before = {p: initial_score(*p) for p in pairs}
    for _ in range(30):
        for user_id, item_id in pairs:
            mf.learn(user_id, item_id)
    after = {p: mf.score(p[0], [p[1]])[0] for p in pairs}
    assert all(after[p] > before[p] for p in pairs)
    assert np.mean(list(after.values())) > 0.8
    # ... and more than for items the user never touched (known to the model through others).
    untouched = [f"i{i}" for i in range(200) if all(f"i{i}" != it for _, it in pairs)][:20]
    for item_id in untouched:
        mf.learn("someone else", item_id)
    assert all(mf.item_vector(i) is not None for i in untouched)
    assert np.mean(list(after.values())) > np.mean(mf.score("u0", untouched)) + 0.5


def test_error_shrinks_with_repetition() -> None:
    mf = IncrementalMF(IsgdParams(factors=8, seed=1))
    errors = [mf.learn("alice", "shoes") for _ in range(300)]
    assert errors[0] > 0.9 and errors[50] < errors[0] and abs(errors[150]) < 0.02
    # L2 regularisation keeps the score a little below the target 1.
    assert mf.score("alice", ["shoes", "unknown"]) == [pytest.approx(0.99, abs=0.005), 0.0]
    assert mf.score("nobody", ["shoes"]) == [0.0]


# --- stability -------------------------------------------------------------------------------


def assert_finite(mf: IncrementalMF, stream: list[tuple[str, str, float]]) -> None:
    for vec in vectors(mf, stream).values():
        assert np.isfinite(vec).all()


stable_params = st.builds(
    IsgdParams,
    factors=st.integers(1, 16),
    # The regime the flow runs in (defaults 0.05 / 0.01 / 0.1, weights <= 3), generously:
    # learn_rate * weight * (|u|^2 + |i|^2) well below 2, where a gradient step cannot overshoot.
    learn_rate=st.floats(0.001, 0.1),
    regularization=st.floats(0.0, 1.0),
    init_std=st.floats(0.001, 0.3),
    seed=st.integers(0, 2**31),
)
events = st.tuples(
    st.sampled_from([f"u{i}" for i in range(5)]),
    st.sampled_from([f"i{i}" for i in range(5)]),
    st.sampled_from([0.01, 0.5, 1.0, 2.0, 3.0]),
)


@given(params=stable_params, stream=st.lists(events, max_size=300))
@settings(max_examples=60, deadline=None)
def test_no_nan_or_inf_on_random_streams(params: IsgdParams, stream) -> None:
    mf = train(params, stream)
    assert_finite(mf, stream)


@given(params=stable_params, weight=st.sampled_from(sorted(DEFAULT_EVENT_WEIGHTS.values())))
@settings(max_examples=30, deadline=None)
def test_no_nan_or_inf_when_one_pair_repeats(params: IsgdParams, weight: float) -> None:
    mf = IncrementalMF(params)
    for _ in range(2000):
        mf.learn("u", "i", weight)
    assert_finite(mf, [("u", "i", weight)])
    assert abs(mf.score("u", ["i"])[0]) < 5


# Regression (found by these tests in the Python operator, now tests/oracles/isgd.py; fixed
# there with max_norm, kept natively): clipping the error to [-4, 4] does not stop "one
# adversarial pair" from blowing vectors up, and the hyperparameter checks accepted
# hyperparameters under which it happens: the change of u.i per step is about
# learn_rate * weight * err * (|u|^2 + |i|^2), so once that factor reaches ~2 every step
# overshoots further and both vectors reach inf/NaN within a few hundred repeats of one pair
# (the flow would then write NaN factors to Redis). Found by hypothesis: learn_rate=0.25,
# init_std=1.0, an add_to_cart (weight 2) repeated; by hand: learn_rate=0.9 and a repeated
# purchase (weight 3); weight 50 or regularization 50 likewise.
@pytest.mark.parametrize(
    ("params", "weight"),
    [
        (IsgdParams(factors=3, learn_rate=0.25, regularization=0.0, init_std=1.0, seed=0), 2.0),
        (IsgdParams(factors=8, learn_rate=0.9), DEFAULT_EVENT_WEIGHTS["purchase"]),
    ],
    ids=["init_std1-cart", "lr0.9-purchase"],
)
def test_any_valid_params_keep_vectors_finite(params: IsgdParams, weight: float) -> None:
    mf = IncrementalMF(params)
    for _ in range(2000):
        mf.learn("u", "i", weight)
    assert_finite(mf, [("u", "i", weight)])


# --- hyperparameter validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"factors": 0},
        {"factors": -3},
        {"learn_rate": 0.0},
        {"learn_rate": 1.0},
        {"learn_rate": -0.1},
        {"learn_rate": math.nan},
        {"regularization": -0.01},
        {"init_std": 0.0},
        {"init_std": -1.0},
        {"event_weights": {"view": 0.0}},
        {"event_weights": {"view": 1.0, "purchase": -2.0}},
    ],
    ids=repr,
)
def test_bad_hyperparameters_raise_value_error(kwargs) -> None:
    with pytest.raises(ValueError):
        IsgdParams(**kwargs)


def test_weight_of_uses_the_table_and_defaults_to_a_view() -> None:
    params = IsgdParams()
    assert params.weight_of("purchase") == 3.0
    assert params.weight_of("add_to_cart") == 2.0
    assert params.weight_of("rec_impression") == 1.0
    assert IsgdParams(event_weights={"view": 0.5}).weight_of("view") == 0.5


# Regression (found by these tests in the Python operator, fixed): the same checks let
# non-finite values through, since every comparison with NaN is false: regularization=nan,
# init_std=nan/inf and NaN/inf event weights were accepted and turned every vector they touch
# into NaN.
@pytest.mark.parametrize(
    "kwargs",
    [
        {"regularization": math.nan},
        {"init_std": math.inf},
        {"event_weights": {"view": math.nan}},
    ],
    ids=repr,
)
def test_non_finite_hyperparameters_raise_value_error(kwargs) -> None:
    with pytest.raises(ValueError):
        IsgdParams(**kwargs)


# --- native vs the Python oracle -------------------------------------------------------------


def both_params(**kwargs) -> tuple[IsgdParams, oracle.IsgdParams]:
    return IsgdParams(**kwargs), oracle.IsgdParams(**kwargs)


def test_default_event_weights_are_the_oracles() -> None:
    assert dict(DEFAULT_EVENT_WEIGHTS) == dict(oracle.DEFAULT_EVENT_WEIGHTS)
    ours, theirs = both_params()
    assert ours.event_weights == dict(theirs.event_weights)
    for name in ("factors", "learn_rate", "regularization", "init_std", "seed", "max_norm"):
        assert getattr(ours, name) == getattr(theirs, name)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"factors": 0},
        {"learn_rate": 1.0},
        {"learn_rate": 1.5},
        {"regularization": -0.01},
        {"init_std": 0.0},
        {"max_norm": 0.0},
        {"learn_rate": math.nan},
        {"event_weights": {"view": 0.0}},
    ],
    ids=repr,
)
def test_bad_hyperparameters_say_what_the_oracle_said(kwargs) -> None:
    with pytest.raises(ValueError) as theirs:
        oracle.IsgdParams(**kwargs)
    with pytest.raises(ValueError) as ours:
        IsgdParams(**kwargs)
    assert str(ours.value) == str(theirs.value)


@settings(max_examples=300, deadline=None)
@given(
    entity_id=st.text(max_size=30),
    kind=st.sampled_from(["user", "item"]),
    factors=st.integers(1, 96),
    init_std=st.floats(1e-4, 10.0),
    seed=st.integers(-(2**40), 2**40),
)
def test_initial_vectors_are_the_oracles_bit_for_bit(
    entity_id: str, kind: str, factors: int, init_std: float, seed: int
) -> None:
    # The same SHAKE128 bytes and the same float32 operations: identical bits.
    ours, theirs = both_params(factors=factors, init_std=init_std, seed=seed)
    native = initial_vector(entity_id, kind, ours)  # type: ignore[arg-type]
    python = oracle.initial_vector(entity_id, kind, theirs)
    assert native.dtype == python.dtype == np.float32
    assert native.tobytes() == python.tobytes()


def float32_vectors(factors: int, bound: float):
    return st.lists(st.floats(-bound, bound, width=32), min_size=factors, max_size=factors).map(
        lambda xs: np.array(xs, dtype=np.float32)
    )


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    factors=st.integers(1, 64),
    weight=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    learn_rate=st.floats(0.001, 0.3),
    regularization=st.floats(0.0, 0.5),
    max_norm=st.sampled_from([0.5, 2.0, 10.0]),
)
def test_one_step_is_the_oracles_to_float32_rounding(
    data, factors: int, weight: float, learn_rate: float, regularization: float, max_norm: float
) -> None:
    # The update itself is the same float32 arithmetic in the same order; only the dot
    # products differ: numpy's BLAS sums float32 products in float32 (in an order of its own),
    # the native step sums them in float64 and rounds once. So the errors agree to float32
    # rounding of the dot, and the vectors to float32 rounding (also through the norm limit,
    # whose scale comes from a dot too).
    own = data.draw(float32_vectors(factors, 1.0))
    other = data.draw(float32_vectors(factors, 1.0))
    ours, theirs = both_params(
        factors=factors, learn_rate=learn_rate, regularization=regularization, max_norm=max_norm
    )
    magnitude = 1.0 + float(np.abs(own.astype(np.float64)) @ np.abs(other.astype(np.float64)))
    for native_step, oracle_step in ((user_step, oracle.user_step), (item_step, oracle.item_step)):
        a, b = own.copy(), own.copy()
        err_a = native_step(a, other, weight, ours)
        err_b = oracle_step(b, other.copy(), weight, theirs)
        assert err_a == pytest.approx(err_b, abs=4e-7 * magnitude)
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    factors=st.integers(1, 8),
    weight=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    learn_rate=st.sampled_from([0.5, 0.25, 0.125, 0.0625]),
    regularization=st.sampled_from([0.0, 0.5, 0.25]),
)
def test_one_step_is_the_oracles_bit_for_bit_when_dots_are_exact(
    data, factors: int, weight: float, learn_rate: float, regularization: float
) -> None:
    # Eighths in [-1, 1] over at most 8 factors: every product and partial sum is exact in
    # float32, so the dots agree exactly and so must every bit of the update.
    eighths = st.integers(-8, 8).map(lambda k: k / 8)
    vec = st.lists(eighths, min_size=factors, max_size=factors).map(
        lambda xs: np.array(xs, dtype=np.float32)
    )
    own, other = data.draw(vec), data.draw(vec)
    ours, theirs = both_params(
        factors=factors, learn_rate=learn_rate, regularization=regularization
    )
    for native_step, oracle_step in ((user_step, oracle.user_step), (item_step, oracle.item_step)):
        a, b = own.copy(), own.copy()
        assert native_step(a, other, weight, ours) == oracle_step(b, other, weight, theirs)
        assert a.tobytes() == b.tobytes()


def test_steps_update_rows_of_a_matrix_in_place() -> None:
    # The offline harness keeps vectors as rows of C-contiguous matrices.
    params = IsgdParams(factors=4)
    users = np.stack([initial_vector(f"u{n}", "user", params) for n in range(3)])
    items = np.stack([initial_vector(f"i{n}", "item", params) for n in range(3)])
    expected = users[1].copy()
    user_step(expected, items[2], 1.0, params)
    user_step(users[1], items[2], 1.0, params)
    np.testing.assert_array_equal(users[1], expected)
    np.testing.assert_array_equal(users[0], initial_vector("u0", "user", params))


def test_steps_refuse_wrong_lengths_and_dtypes() -> None:
    params = IsgdParams(factors=4)
    with pytest.raises(ValueError, match="factors"):
        user_step(np.zeros(3, np.float32), np.zeros(4, np.float32), 1.0, params)
    with pytest.raises(ValueError, match="factors"):
        item_step(np.zeros(4, np.float32), np.zeros(5, np.float32), 1.0, params)
    with pytest.raises(TypeError):
        user_step(np.zeros(4), np.zeros(4, np.float32), 1.0, params)  # float64: not float32
    with pytest.raises(ValueError):
        user_step(np.zeros((4, 2), np.float32)[:, 0], np.zeros(4, np.float32), 1.0, params)


@settings(max_examples=100, deadline=None)
@given(params=stable_params, stream=st.lists(events, max_size=120))
def test_incremental_mf_is_the_oracles_to_float32_rounding(
    params: IsgdParams, stream: list[tuple[str, str, float]]
) -> None:
    # Step after step the float32 rounding differences of the dots (see above) carry over;
    # in the stable regime the steps contract, so they stay at a few float32 ulps.
    theirs = oracle.IsgdParams(
        factors=params.factors,
        learn_rate=params.learn_rate,
        regularization=params.regularization,
        init_std=params.init_std,
        seed=params.seed,
    )
    native, python = IncrementalMF(params), oracle.IncrementalMF(theirs)
    for user_id, item_id, weight in stream:
        err = native.learn(user_id, item_id, weight)
        assert err == pytest.approx(python.learn(user_id, item_id, weight), abs=1e-5)
    for user_id, item_id, _ in stream:
        np.testing.assert_allclose(
            native.user_vector(user_id), python.user_vectors[user_id], rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            native.item_vector(item_id), python.item_vectors[item_id], rtol=1e-4, atol=1e-5
        )
    items = sorted({i for _, i, _ in stream} | {"unknown"})
    for user_id in sorted({u for u, _, _ in stream} | {"nobody"}):
        np.testing.assert_allclose(
            native.score(user_id, items), python.score(user_id, items), rtol=1e-4, atol=1e-5
        )
