"""The DLQ keeps a large rejected record unchanged (CONTRACT.md section 5).

`gocluster run --create-topics` creates the DLQ topic with a `max.message.bytes`
that holds the largest accepted input plus the DLQ headers, and the relay's
producer may send such a record. Only a broker that still refuses it (a DLQ
topic created small by someone else) gets the copy without its value, with the
`error.value_omitted_bytes` header, counted in a metric. Apache Kafka, real
`gocluster run`.
"""

from __future__ import annotations

import socket
import urllib.request
import uuid
from pathlib import Path

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from consumers.kafka_admin import create_topics
from tests.brokers import Broker
from tests.kafka_fixtures import KafkaTopics, produce, read_all
from tests.service_process import ServiceProcess, header, service_env

pytestmark = pytest.mark.kafka

BIG = 1_040_000  # under GOCLUSTER_MAX_RECORD_BYTES (1 MiB) and Kafka's default message size


def topic_names(bootstrap: str) -> KafkaTopics:
    suffix = uuid.uuid4().hex[:10]
    return KafkaTopics(
        bootstrap,
        *(f"dlqsize.{name}.{suffix}" for name in ("applications", "interviews")),
        *(f"dlqsize.{name}.{suffix}" for name in ("labels", "deadlines", "membership", "dlq")),
        group_id=f"dlqsize-{suffix}",
    )


def not_an_event(size: int) -> bytes:
    """Valid JSON, not a CloudEvent: the consumer rejects it to the DLQ as `decode`."""
    return b'{"pad":"' + b"x" * (size - 10) + b'"}'


def dlq_max_message_bytes(bootstrap: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
    finally:
        admin.close()
    return int(described["topic"][topic]["max.message.bytes"]["value"])


def test_a_rejected_one_mebibyte_record_reaches_the_dlq_unchanged_on_topics_run_created(
    kafka_broker: Broker, sqlite_url: str, tmp_path: Path
) -> None:
    topics = topic_names(kafka_broker.bootstrap)
    env = service_env(topics.env(), {"GOCLUSTER_DATABASE_URL": sqlite_url})
    value = not_an_event(BIG)
    headers = [("origin", b"portal"), ("trace", b"abc")]

    with ServiceProcess(
        env, ("run", "--clock", "event", "--create-topics", "--partitions", "1"), log_dir=tmp_path
    ) as service:
        service.wait_joined()
        produce(topics.bootstrap, topics.applications, [(b"c-big", value, headers)])
        (record,) = read_all(topics.bootstrap, topics.dlq, 1, timeout_s=60, settle_s=1)
        assert service.terminate() == 0

    assert header(record, "error.value_omitted_bytes") is None
    assert record.key == b"c-big"
    assert record.value == value
    assert dlq_max_message_bytes(topics.bootstrap, topics.dlq) >= 1_048_576 + 4096
    assert record.headers[:2] == headers
    assert header(record, "error.class") == "decode"
    assert header(record, "original.topic") == topics.applications


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_dlq_topic_too_small_for_the_record_gets_it_without_its_value_and_counts_it(
    kafka_broker: Broker, sqlite_url: str, tmp_path: Path
) -> None:
    topics = topic_names(kafka_broker.bootstrap)
    admin = {"bootstrap_servers": topics.bootstrap}
    create_topics(admin, {t: 1 for t in (*topics.inputs, *topics.outputs[:3])})
    small = KafkaAdminClient(**admin)
    try:
        small.create_topics(
            {
                topics.dlq: {
                    "num_partitions": 1,
                    "replication_factor": 1,
                    "configs": {"max.message.bytes": "65536"},
                }
            },
            wait_for_metadata=True,
        )
    finally:
        small.close()
    port = _free_port()
    env = service_env(
        topics.env(), {"GOCLUSTER_DATABASE_URL": sqlite_url, "GOCLUSTER_METRICS_PORT": str(port)}
    )
    large = not_an_event(300_000)

    with ServiceProcess(env, log_dir=tmp_path) as service:
        service.wait_joined()
        produce(topics.bootstrap, topics.applications, [(b"c-large", large, [])])
        produce(topics.bootstrap, topics.applications, [(b"c-small", b"{not json", [])])
        records = read_all(topics.bootstrap, topics.dlq, 2, timeout_s=60, settle_s=1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            scraped = response.read().decode()
        assert service.terminate() == 0

    assert [r.key for r in records] == [b"c-large", b"c-small"]
    first, second = records
    assert first.value is None
    assert header(first, "error.value_omitted_bytes") == str(len(large))
    assert header(first, "original.offset") == "0"
    assert second.value == b"{not json"  # the outbox was not blocked behind it
    assert "gocluster_dlq_value_omitted_total 1.0" in scraped
