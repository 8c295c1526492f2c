"""benchmarks/live_quality.py on a tiny slice, against the real stack (embedded broker and Redis).

A real Tansu broker and redis-server (the session's), the worker under ``python -m
bytewax.run`` and the API under granian; MovieLens events posted through the API and scored
test-then-train, next to the harness's in-process served model on the same events.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.live_quality import measure, print_report, select_events
from freshrec.processes import running_pipeline

pytestmark = pytest.mark.integration

WARMUP = 300
SCORED = 25


def test_live_and_offline_score_the_same_events(make_settings, tmp_path: Path, capsys) -> None:
    events, scored = select_events("movielens", WARMUP, SCORED)
    assert sum(scored) == SCORED and not any(scored[:WARMUP])
    settings = make_settings()
    with running_pipeline(settings, tmp_path) as pipe:
        result = measure(
            pipe.settings,
            pipe.api_url,
            events,
            scored,
            dataset="movielens",
            harness=("popularity (decayed)",),
        )

    assert {"live", "offline", "difference", "per_event", "control", "harness"} <= set(result)
    sides = [result["live"], result["offline"], *result["harness"]]
    for side in sides:
        assert side["scored_events"] == SCORED
        for key in ("HR@10", "recall@10", "recall@10_per_user"):
            assert 0.0 <= side[key] <= 1.0
        low, high = side["HR@10_ci95"]
        assert low <= side["HR@10"] <= high
    difference = result["difference"]
    assert math.isclose(
        difference["HR@10"], result["live"]["HR@10"] - result["offline"]["HR@10"], abs_tol=1e-12
    )
    assert 0.0 <= result["per_event"]["identical_top10_share"] <= 1.0
    assert result["control"]["waits"] == SCORED
    json.dumps(result)  # the benchmark's --json output

    print_report(result, "# tiny slice")
    out = capsys.readouterr().out
    assert "live: API" in out and "paired bootstrap 95% CI" in out
