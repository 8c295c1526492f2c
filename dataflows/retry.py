"""Waiting out a Redis outage in the worker: backpressure instead of a crash."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKOFF_START_S = 0.05
BACKOFF_MAX_S = 2.0


def retry_while_unreachable(call: Callable[[], T]) -> T:
    """Run ``call``; while Redis is unreachable, wait with exponential backoff and retry.

    Only connection-level failures are retried: they leave nothing half-done that a repeat
    of the same idempotent call would not mend. Anything else is a bug and propagates.
    """
    backoff = BACKOFF_START_S
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("redis unreachable (%s); retrying in %.2f s", exc, backoff)
            time.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)
