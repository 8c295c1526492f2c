"""Outage drills (benchmarks/drills.py) as tests: broker away, Redis away, worker killed meanwhile.

The runbook's drills take each service away for 30 s (``python benchmarks/drills.py``); here
the same code runs with a 6 s outage and a few thousand Taobao events, so the suite stays
fast while every path is taken: ingest's 503 + Retry-After and the client's retries, the
worker's reading of a recreated (empty) topic, serving's fallback, the worker's backoff while
Redis is away, and recovery from a SIGKILL while it is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.drills import broker_drill, format_result, redis_drill

pytestmark = pytest.mark.integration

OUTAGE_S = 6.0
"""Shorter than the runbook's 30 s, to keep the suite fast (the code path is the same)."""
RATE = 400.0


def test_broker_outage_loses_no_accepted_event(tmp_path: Path) -> None:
    result = broker_drill(tmp_path, outage_s=OUTAGE_S, rate=RATE, events=5000, log=print)
    print(format_result(result))
    assert result.unavailable > 0, "ingest must have answered 503 during the outage"
    assert result.accepted == result.events, "the client retried every 503 until accepted"
    assert result.applied == result.accepted, "every accepted event is applied"
    assert result.notes == []


@pytest.mark.parametrize("kill_worker", [False, True], ids=["redis", "redis-kill"])
def test_redis_outage_serves_fallback_and_converges(tmp_path: Path, kill_worker: bool) -> None:
    result = redis_drill(
        tmp_path, outage_s=OUTAGE_S, rate=RATE, events=5000, kill_worker=kill_worker, log=print
    )
    print(format_result(result))
    assert result.fallback_answers > 0
    assert result.non_200_answers == 0, "serving answers 200 while Redis is away"
    assert result.accepted == result.applied == result.events
    assert result.state_matches_no_outage_run is True, result.notes
    assert result.worker_restarts == int(kill_worker)
