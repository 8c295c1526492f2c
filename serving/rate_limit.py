"""Per-client rate limit for ingest: a token bucket (GCRA), not a fixed window.

Litestar's built-in limiter counts requests per calendar second, so a client gets up to twice
its limit across a second boundary, and whether the Nth request of a burst is refused depends
on where the boundary falls. The generic cell rate algorithm gives every client a steady
``rate`` with bursts of at most ``burst`` requests, whatever the clock reads, and keeps one
float per client: the time at which its bucket is full again ("theoretical arrival time").
Clients whose bucket is full again are indistinguishable from new ones, so they are pruned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send


class TokenBucketLimiter:
    """Admit at most ``burst`` requests at once and ``rate_per_s`` per second sustained, per client.

    ``clock`` is injectable so the arithmetic is tested without sleeping. Memory is bounded
    by the clients seen within the last ``burst / rate_per_s`` seconds: when the table
    exceeds ``prune_above`` entries, every full bucket is dropped.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        prune_above: int = 10_000,
    ) -> None:
        if not rate_per_s > 0 or not math.isfinite(rate_per_s):
            raise ValueError(f"rate_per_s must be positive and finite, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.interval_s = 1.0 / rate_per_s
        self.burst = burst
        self._window_s = burst * self.interval_s
        self._clock = clock
        self._prune_above = prune_above
        self._full_at: dict[str, float] = {}

    def take(self, client: str) -> float:
        """Spend one token of ``client``: 0.0 if admitted, else seconds until one is free.

        A refused request spends nothing, so a client hammering a closed bucket is admitted
        again at its steady rate, not locked out.
        """
        now = self._clock()
        full_at = max(self._full_at.get(client, now), now)
        wait = full_at + self.interval_s - self._window_s - now
        if wait > 0:
            return wait
        self._full_at[client] = full_at + self.interval_s
        if len(self._full_at) > self._prune_above:
            self._prune(now)
        return 0.0

    def tracked_clients(self) -> int:
        """Clients whose bucket is not full (some may be full already, until the next prune)."""
        return len(self._full_at)

    def _prune(self, now: float) -> None:
        self._full_at = {c: t for c, t in self._full_at.items() if t > now}


class RateLimitMiddleware(ASGIMiddleware):
    """Refuse over-limit requests with 429, a reason and ``Retry-After``; pass the rest on."""

    def __init__(self, limiter: TokenBucketLimiter, client_of: Callable[[Scope], str]) -> None:
        self.limiter = limiter
        self.client_of = client_of

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        wait = self.limiter.take(self.client_of(scope))
        if wait > 0:
            raise TooManyRequestsException(
                detail=(
                    f"Rate limit exceeded: at most {1 / self.limiter.interval_s:g} requests "
                    f"per second (bursts of {self.limiter.burst}) per client. "
                    "Nothing from this request was accepted; retry later."
                ),
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        await next_app(scope, receive, send)


def client_address(scope: Any) -> str:
    """Who a rate limit applies to: the client address.

    Behind a proxy, put the limit there or trust its X-Forwarded-For via a proxy-headers
    middleware: an unchecked header would let anyone pick a fresh identity per request.
    """
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
