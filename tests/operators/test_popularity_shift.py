from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.popularity_shift import PopularityShift, js_divergence


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


def test_no_alarm_while_stationary_then_alarm_on_a_shift() -> None:
    import random

    rng = random.Random(5)
    shift = PopularityShift(window=200, min_windows=5)
    stationary = [f"a{min(int(rng.expovariate(0.3)), 30)}" for _ in range(200 * 30)]
    assert [a for a in map(shift.add, stationary) if a is not None] == []
    shifted = [f"b{min(int(rng.expovariate(0.3)), 30)}" for _ in range(200 * 3)]
    alarms = [a for a in map(shift.add, shifted) if a is not None]
    assert alarms and alarms[0] > 0.5
