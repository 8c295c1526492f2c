"""Smoke check of the soak harness (benchmarks/soak.py): a short run yields samples, a report
and a plot.

The soak itself runs ≥ 30 min at a fixed rate (``python benchmarks/soak.py``); this run lasts
a minute at a low rate on the suite's shared machine, so it checks the harness — processes
started and stopped, memory and backlog sampled, events re-keyed per loop, figures computed,
PNG and JSON written — not the figures themselves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.soak import format_report, main, plot, run_soak

pytestmark = pytest.mark.integration


def test_a_short_soak_samples_memory_and_backlog(tmp_path: Path) -> None:
    report = run_soak(minutes=1.0, rate=300, sample_s=5, idle_ttl_s=20, run_dir=tmp_path)
    assert report.error == ""
    assert len(report.samples) >= 10
    first, last = report.samples[0], report.samples[-1]
    assert last.sent > first.sent > 0
    assert all(
        s.worker_rss_mb > 0 and s.api_rss_mb > 0 and s.redis_used_mb > 0 for s in report.samples
    )
    assert report.accepted == report.sent > 0
    assert report.applied == report.accepted, "the backlog drains once the load stops"
    assert report.backlog_final == 0
    assert report.reads > 0
    assert set(report.growth) == {"worker_rss_mb", "api_rss_mb", "redis_used_mb", "redis_rss_mb"}
    assert all(math.isfinite(g) for g in report.growth.values())
    assert "growth after warm-up" in format_report(report)
    png = tmp_path / "soak.png"
    plot(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_line_writes_json_and_png(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    png = tmp_path / "soak.png"
    args = ["--minutes", "0.25", "--rate", "200", "--sample-s", "3", "--json", str(out)]
    assert main([*args, "--png", str(png)]) == 0
    data = json.loads(out.read_text())
    assert len(data["samples"]) >= 4
    assert {"worker_rss_mb", "api_rss_mb", "redis_used_mb", "backlog"} <= set(data["samples"][0])
    assert png.exists()
