"""Pytest plugin: a real Apache Kafka broker and per-test topics.

Registered from tests/conftest.py (``pytest_plugins = ["tests.kafka_fixtures"]``).
Shape per KAFKA_TESTING.md: one broker per session, a fresh uuid-suffixed topic
set and group id per test, a broker of its own for tests that kill or restart
it, and consumer timings short enough that a killed member's partitions move
within about two seconds (the broker allows sessions down to 0.5 s).
The broker is Apache Kafka via scripts/apache-kafka; GOCLUSTER_TEST_BROKER=tansu
selects the demo's embedded broker for quick local loops, never in CI.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers.config import Settings
from consumers.kafka_admin import create_topics, delete_topics
from tests.brokers import (
    APACHE,
    TANSU,
    Broker,
    BrokerError,
    kafka_version,
    make_broker,
    selected_broker,
)
from tests.dbutil import in_ci

# Test-only: Kafka's default minimum session is 6 s; the test broker allows 0.5 s.
FAST_CONSUMER_SETTINGS: dict[str, Any] = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 300,
    "max_poll_interval_ms": 10000,
    "fetch_max_wait_ms": 100,
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
}
INPUT_PARTITIONS = 3
OUTPUT_PARTITIONS = 3

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class KafkaTopics:
    """One test's private topic set and consumer group on one broker."""

    bootstrap: str
    applications: str
    interviews: str
    labels: str
    deadlines: str
    membership: str
    dlq: str
    group_id: str

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.applications, self.interviews)

    @property
    def outputs(self) -> tuple[str, str, str, str]:
        return (self.labels, self.deadlines, self.membership, self.dlq)

    def env(self) -> dict[str, str]:
        """GOCLUSTER_* variables pointing a service (or CLI subprocess) at these topics."""
        return {
            "GOCLUSTER_KAFKA_BOOTSTRAP": self.bootstrap,
            "GOCLUSTER_GROUP_ID": self.group_id,
            "GOCLUSTER_TOPIC_APPLICATIONS": self.applications,
            "GOCLUSTER_TOPIC_INTERVIEWS": self.interviews,
            "GOCLUSTER_TOPIC_LABELS": self.labels,
            "GOCLUSTER_TOPIC_DEADLINES": self.deadlines,
            "GOCLUSTER_TOPIC_MEMBERSHIP": self.membership,
            "GOCLUSTER_TOPIC_DLQ": self.dlq,
        }

    def settings(self, **overrides: Any) -> Settings:
        """Settings for these topics with the fast test consumer timings."""
        values: dict[str, Any] = {
            "kafka_bootstrap": self.bootstrap,
            "group_id": self.group_id,
            "topic_applications": self.applications,
            "topic_interviews": self.interviews,
            "topic_labels": self.labels,
            "topic_deadlines": self.deadlines,
            "topic_membership": self.membership,
            "topic_dlq": self.dlq,
            "kafka_session_timeout_ms": FAST_CONSUMER_SETTINGS["session_timeout_ms"],
            "kafka_heartbeat_interval_ms": FAST_CONSUMER_SETTINGS["heartbeat_interval_ms"],
            "kafka_max_poll_interval_ms": FAST_CONSUMER_SETTINGS["max_poll_interval_ms"],
            "kafka_fetch_max_wait_ms": FAST_CONSUMER_SETTINGS["fetch_max_wait_ms"],
        }
        return Settings(**(values | overrides))


def create_topic_set(
    bootstrap: str, *, input_partitions: int = INPUT_PARTITIONS, prefix: str = "test"
) -> KafkaTopics:
    """Create a fresh topic set on ``bootstrap`` (also after a broker restart wiped it)."""
    suffix = uuid.uuid4().hex[:10]
    topics = KafkaTopics(
        bootstrap=bootstrap,
        applications=f"{prefix}.applications.{suffix}",
        interviews=f"{prefix}.interviews.{suffix}",
        labels=f"{prefix}.labels.{suffix}",
        deadlines=f"{prefix}.deadlines.{suffix}",
        membership=f"{prefix}.membership.{suffix}",
        dlq=f"{prefix}.dlq.{suffix}",
        group_id=f"{prefix}-group-{suffix}",
    )
    wanted = {name: input_partitions for name in topics.inputs}
    wanted |= {name: OUTPUT_PARTITIONS for name in topics.outputs}
    create_topics({"bootstrap_servers": bootstrap}, wanted)
    return topics


def pytest_report_header() -> str:
    choice = _choice()
    if choice == TANSU:
        return "kafka broker: Tansu 0.6 (GOCLUSTER_TEST_BROKER=tansu, embedded, local loops only)"
    return f"kafka broker: Apache Kafka {kafka_version()} (KRaft, scripts/apache-kafka)"


def _choice() -> str:
    choice = selected_broker()
    if choice == TANSU and in_ci():
        raise pytest.UsageError(
            "CI runs the Kafka tests on Apache Kafka: unset GOCLUSTER_TEST_BROKER"
        )
    return choice


def _started(broker: Broker) -> Broker:
    try:
        return broker.start()
    except BrokerError as error:
        pytest.fail(f"{broker.name} did not start: {error}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_broker(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Broker]:
    broker = _started(make_broker(tmp_path_factory.mktemp("kafka"), _choice()))
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        version = getattr(broker, "version", "")
        seconds = getattr(broker, "startup_seconds", 0.0)
        reporter.write_line(
            f"kafka broker: {broker.name} {version} at {broker.bootstrap}, "
            f"started in {seconds:.1f} s"
        )
    yield broker
    broker.kill()


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test's own, free to be killed and restarted."""
    broker = _started(make_broker(tmp_path / "broker", _choice()))
    yield broker
    broker.kill()


@pytest.fixture
def restartable_broker(fresh_broker: Broker) -> Broker:
    """A broker of this test's own that keeps its data across a restart (Apache Kafka)."""
    if not fresh_broker.keeps_data:
        pytest.skip(f"{fresh_broker.name} loses all data on a restart; run on {APACHE} Kafka")
    return fresh_broker


@pytest.fixture
def kafka_topics(kafka_broker: Broker) -> Iterator[KafkaTopics]:
    topics = create_topic_set(kafka_broker.bootstrap)
    yield topics
    if kafka_broker.running:
        delete_topics({"bootstrap_servers": topics.bootstrap}, [*topics.inputs, *topics.outputs])


@pytest.fixture
def fast_consumer_settings() -> dict[str, Any]:
    return dict(FAST_CONSUMER_SETTINGS)


def produce(bootstrap: str, topic: str, records: Iterable[Record], timeout_s: float = 10) -> None:
    """Send records with the service's producer guarantees (idempotent, acks=all) and wait."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    try:
        futures = [
            producer.send(topic, key=key, value=value, headers=headers)
            for key, value, headers in records
        ]
        producer.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)
    finally:
        producer.close(timeout=timeout_s)


def read_all(
    bootstrap: str,
    topic: str,
    expected_count: int,
    timeout_s: float = 10.0,
    settle_s: float = 0.0,
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the start, sorted by (partition, offset).

    Returns once ``expected_count`` records are in and no more arrived for
    ``settle_s`` (pass a settle time to catch unwanted extras such as
    duplicates), or at ``timeout_s`` with whatever arrived: the caller asserts
    the count. No group is joined (assign, not subscribe), so there is no join
    delay. End offsets are not the stop condition: with a settle time, extras that
    arrive after the expected count (duplicates) are caught too.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    try:
        deadline = time.monotonic() + timeout_s
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.05)
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list[ConsumerRecord] = []
        settled_at: float | None = None
        while (now := time.monotonic()) < deadline:
            if len(records) >= expected_count:
                settled_at = settled_at or now
                if now - settled_at >= settle_s:
                    break
            batch = consumer.poll(timeout_ms=100)
            fresh = [record for part in batch.values() for record in part]
            if fresh:
                records.extend(fresh)
                settled_at = None
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()
