"""The container smoke run (deploy/smoke.sh), opt-in: FRESHREC_DOCKER_SMOKE=1.

It builds the images and runs the compose cluster on the Docker engine (minutes, and most of
a 2-core machine), so ``./dev test`` leaves it out unless asked; tests/test_deploy_files.py
checks the same files statically on every run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    os.environ.get("FRESHREC_DOCKER_SMOKE") != "1",
    reason="builds images and runs containers: set FRESHREC_DOCKER_SMOKE=1 (needs Docker)",
)


@pytest.mark.timeout(3600)
def test_smoke_run_loses_a_worker_and_applies_every_event_once() -> None:
    run = subprocess.run(
        [str(ROOT / "deploy" / "smoke.sh")], capture_output=True, text=True, timeout=3600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = run.stdout.strip().splitlines()[-1]
    print(summary)  # the measurements, with `pytest -s`
    assert summary.startswith("smoke OK"), summary
    measured = json.loads(re.search(r"\{.*\}$", summary).group(0))  # type: ignore[union-attr]
    assert measured["events"] >= 20_000 and measured["accepted"] == measured["events"]
    assert measured["exactly_once"] == "ok"
    assert measured["rec_requests"] == measured["rec_ok"] > 0
    assert measured["caught_up_after_kill_s"] is not None
    # everything it started is gone: containers, volumes, networks of its compose project
    project = re.search(r"\(project (freshrec-smoke-\w+)", run.stderr).group(1)  # type: ignore[union-attr]
    label = f"label=com.docker.compose.project={project}"
    for kind in ("ps -a", "volume ls", "network ls"):
        listed = subprocess.run(
            ["docker", *kind.split(), "-q", "--filter", label], capture_output=True, text=True
        )
        assert listed.returncode == 0 and listed.stdout.strip() == "", (kind, listed.stdout)
