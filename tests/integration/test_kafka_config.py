"""Kafka client settings pass-through (FRESHREC_KAFKA_CONFIG) and ``freshrec topics``.

The embedded Tansu broker speaks plaintext only, so the pass-through is shown the other way
round: ``security.protocol=SSL`` passed through makes every client fail against it, where the
same call without it succeeds. A property that was dropped on the way would not fail.
"""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
from confluent_kafka.admin import AdminClient

from dataflows.kafka_io import build_dlq_sink, build_source
from freshrec.cli import main as cli_main
from freshrec.replay import ReplayError, iter_dataset_events, send_to_kafka
from freshrec.settings import load_settings, settings_env
from freshrec.stack import wait_for_kafka
from serving.producer import BrokerUnavailable, EventProducer, OutRecord

pytestmark = pytest.mark.integration

# Fail within seconds instead of librdkafka's 5 minute default.
TLS_TO_PLAINTEXT = {"security.protocol": "SSL", "message.timeout.ms": "2000"}


def test_kafka_config_loads_from_json_and_survives_child_env() -> None:
    text = (
        '{"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", "retries": 5, "x.y": true}'
    )
    settings = load_settings(environ={"FRESHREC_KAFKA_CONFIG": text})
    assert settings.kafka_config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "PLAIN",
        "retries": "5",
        "x.y": "true",
    }
    assert load_settings(environ=settings_env(settings)).kafka_config == settings.kafka_config
    assert load_settings(environ={"FRESHREC_KAFKA_CONFIG": ""}).kafka_config == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{security.protocol: SSL}", "FRESHREC_KAFKA_CONFIG is not JSON"),
        ('["security.protocol"]', "must be a JSON object"),
        ('{"sasl.password": {"k": 1}}', "'sasl.password' must be a string, number or boolean"),
        ('{"bootstrap.servers": "other:9092"}', "use kafka_bootstrap"),
    ],
)
def test_bad_kafka_config_is_a_clear_error(text: str, message: str, capsys) -> None:
    with pytest.raises(ValueError, match=message):
        load_settings(environ={"FRESHREC_KAFKA_CONFIG": text})


def test_bad_setting_on_the_command_line_is_a_message_not_a_trace(monkeypatch, capsys) -> None:
    monkeypatch.setenv("FRESHREC_KAFKA_CONFIG", "{oops")
    assert cli_main(["topics", "--wait-s", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("freshrec: FRESHREC_KAFKA_CONFIG is not JSON") and "Traceback" not in err


def test_dataflow_clients_get_the_properties_under_their_own(make_settings) -> None:
    settings = msgspec.structs.replace(
        make_settings(), kafka_config={"security.protocol": "SSL", "acks": "1"}
    )
    source, sink = build_source(settings), build_dlq_sink(settings)
    assert source._add_config["security.protocol"] == "SSL"
    assert sink._add_config["security.protocol"] == "SSL"
    assert sink._add_config["acks"] == "all", "the sink's own settings win"


def test_admin_and_producers_use_the_properties(make_settings) -> None:
    settings = make_settings()
    wait_for_kafka(settings.kafka_bootstrap, 5.0, {})
    with pytest.raises(TimeoutError):
        wait_for_kafka(settings.kafka_bootstrap, 2.0, TLS_TO_PLAINTEXT)

    events = list(iter_dataset_events("taobao", limit=5))
    assert send_to_kafka(events, settings, progress=False).accepted == 5
    tls = msgspec.structs.replace(settings, kafka_config=TLS_TO_PLAINTEXT)
    with pytest.raises(ReplayError):
        send_to_kafka(events, tls, progress=False)

    producer = EventProducer(
        settings.kafka_bootstrap, linger_ms=1, timeout_s=2.0, client_config=TLS_TO_PLAINTEXT
    )
    try:
        with pytest.raises(BrokerUnavailable):
            asyncio.run(producer.produce([OutRecord(settings.events_topic, b"k", b"v")]))
    finally:
        producer.close()


def test_topics_command_creates_topics_once_and_refuses_a_different_count(
    make_settings, monkeypatch, capsys
) -> None:
    settings = make_settings()
    env = {
        "FRESHREC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FRESHREC_EVENTS_TOPIC": settings.events_topic + "-cli",
        "FRESHREC_DLQ_TOPIC": settings.dlq_topic + "-cli",
        "FRESHREC_EVENTS_PARTITIONS": "3",
        "FRESHREC_RUN_DIR": settings.run_dir,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli_main(["topics", "--wait-s", "10"]) == 0
    assert cli_main(["topics", "--wait-s", "10"]) == 0  # existing topics are kept
    metadata = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=5)
    assert len(metadata.topics[env["FRESHREC_EVENTS_TOPIC"]].partitions) == 3
    assert len(metadata.topics[env["FRESHREC_DLQ_TOPIC"]].partitions) == 1
    capsys.readouterr()
    monkeypatch.setenv("FRESHREC_EVENTS_PARTITIONS", "5")
    assert cli_main(["topics", "--wait-s", "10"]) == 1
    assert "partitions" in capsys.readouterr().err
    monkeypatch.setenv("FRESHREC_KAFKA_CONFIG", json.dumps(TLS_TO_PLAINTEXT))
    assert cli_main(["topics", "--wait-s", "1"]) == 1
