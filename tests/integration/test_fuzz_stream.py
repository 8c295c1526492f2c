"""Fuzzing the stream in the suite: 30,000 hostile and valid messages straight onto the topic.

The harness of ``benchmarks/fuzz_stream.py`` (which runs it with 1,000,000): the worker runs
as a real process; every valid event is applied exactly once, every duplicate dropped, every
invalid message dead-lettered with its reason, and the worker is alive at the end.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks.fuzz_stream import Expected, HostileStream, print_report, run_fuzz
from freshrec.events import Event, decode_event
from freshrec.replay import iter_dataset_events

SEED = int(os.environ.get("FUZZ_STREAM_SEED", "20261129"))
MESSAGES = int(os.environ.get("FUZZ_STREAM_MESSAGES", "30000"))


def test_oracle_never_raises_and_agrees_with_the_generator() -> None:
    """Every generated message gets a verdict (no exception) matching its intended class."""
    now = datetime.now(UTC)
    stream = HostileStream(
        list(iter_dataset_events("taobao", limit=5000)), SEED, now=now, dedup_horizon_s=86_400
    )
    expected = Expected(86_400, 10_000)
    for n, msg in enumerate(stream, start=1):
        expected.account(msg, now, 3600)
        if n == 20_000:
            break
    print(f"FUZZ_STREAM_SEED={SEED}", dict(expected.sent))
    assert not expected.mismatches, expected.examples
    assert len(expected.sent) >= 25, "every class of message was generated"
    # Found by this fuzzer: invalid UTF-8 inside a string escaped as UnicodeDecodeError.
    assert not isinstance(decode_event(b'{"event_id": "a\xed\xa0\x80"}'), Event)


@pytest.mark.integration
def test_worker_survives_hostile_stream(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    print(f"\nFUZZ_STREAM_SEED={SEED}")
    report = run_fuzz(settings, tmp_path, MESSAGES, SEED, base_limit=20_000, huge_every=1000)
    print_report(report)
    assert report["worker_alive"]
    assert report["valid_applied"] == report["expected_valid_distinct"] > MESSAGES // 3
    assert report["duplicates_dropped"] == report["expected_duplicates"] > 0
    assert report["dead_letters"] == report["expected_invalid"] > MESSAGES // 4
    assert report["failures"] == 0, report
