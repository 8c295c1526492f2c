"""Ingest is rate-limited per client by a token bucket: the excess gets 429 with a reason."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient

from serving.app import create_app
from serving.rate_limit import TokenBucketLimiter
from tests.conftest import unique_settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_steady_rate() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate_per_s=2, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0] * 3
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # other clients are unaffected
    clock.now += 0.49
    assert limiter.take("a") > 0
    clock.now += 0.01
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    clock.now += 10  # idle: the bucket refills to the burst, never beyond
    assert [limiter.take("a") for _ in range(4)].count(0.0) == 3


def test_full_buckets_are_pruned() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate_per_s=10, burst=1, clock=clock, prune_above=5)
    for n in range(5):
        limiter.take(f"c{n}")
    assert limiter.tracked_clients() == 5
    limiter.take("c0")  # refused: a bucket still empty is kept
    clock.now += 1  # all five buckets full again
    limiter.take("new")  # over the bound: full buckets go, the new one stays
    assert limiter.tracked_clients() == 1
    assert [limiter.take("new"), limiter.take("c0")] == [pytest.approx(0.1), 0.0]


@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=300),
)
def test_admitted_never_exceed_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Over any stretch of time t, at most burst + rate * t requests get in."""
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate, burst, clock=clock)
    admitted: list[float] = []
    for gap in gaps:
        clock.now += gap
        for _ in range(3):
            if limiter.take("x") == 0.0:
                admitted.append(clock.now)
    for i in range(len(admitted)):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + rate * (admitted[j] - admitted[i]) + 1e-6


@given(rate=st.floats(0.5, 1000), burst=st.integers(1, 50), gap=st.floats(0, 5))
def test_refused_client_is_admitted_after_the_wait_it_was_told(
    rate: float, burst: int, gap: float
) -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate, burst, clock=clock)
    while limiter.take("x") == 0.0:
        pass
    clock.now += gap
    wait = limiter.take("x")
    if wait > 0:
        clock.now += wait + 1e-9
        assert limiter.take("x") == 0.0


@pytest.mark.integration
def test_ingest_rate_limit_per_client(stack, tmp_path) -> None:
    # One token per 20 s after a burst of 5: the test's own pace cannot refill the bucket.
    settings = unique_settings(stack, tmp_path, ingest_rate_limit_per_s=0.05, ingest_rate_burst=5)
    with TestClient(app=create_app(settings)) as client:
        statuses = [client.post("/v1/events", content=b"{}").status_code for _ in range(8)]
        assert statuses == [422] * 5 + [429] * 3  # validated (and rejected: empty event)
        limited = client.post("/v1/events", content=b"{}")
        assert limited.status_code == 429
        assert "Rate limit exceeded" in limited.json()["detail"]
        assert 1 <= int(limited.headers["Retry-After"]) <= 20
        # Only ingest is limited: reads go on.
        assert all(client.get("/health").status_code == 200 for _ in range(20))
