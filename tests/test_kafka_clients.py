"""Topic admin and the service's Kafka client configs against the real test broker."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from consumers.kafka_admin import create_topics, delete_topics
from tests.brokers import Broker
from tests.kafka_fixtures import KafkaTopics, produce, read_all

pytestmark = pytest.mark.kafka


def records() -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    return [
        (
            f"cl-{i % 4}".encode(),
            f'{{"n": {i}}}'.encode(),
            [("ce_id", f"e{i}".encode()), ("trace", b"\x00\xff"), ("trace", b"dup")],
        )
        for i in range(10)
    ]


def test_idempotent_producer_and_manual_commit_round_trip_keys_values_and_headers(
    kafka_topics: KafkaTopics, fast_consumer_settings: dict[str, object]
) -> None:
    settings = kafka_topics.settings()
    sent = records()
    producer = KafkaProducer(**settings.producer_config())
    try:
        for key, value, headers in sent:
            producer.send(kafka_topics.applications, key=key, value=value, headers=headers)
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=10)

    consumer_config = settings.consumer_config() | fast_consumer_settings
    received = _consume_and_commit(kafka_topics, consumer_config, expected=10)

    by_id = {dict(r.headers)["ce_id"]: r for r in received}
    assert len(received) == len(by_id) == 10
    for key, value, headers in sent:
        record = by_id[dict(headers)["ce_id"]]
        assert (record.key, record.value, record.headers) == (key, value, headers)
    # Same key, same partition: the ordering guarantee the contract relies on.
    partitions_by_key: dict[bytes | None, set[int]] = {}
    for record in received:
        partitions_by_key.setdefault(record.key, set()).add(record.partition)
    assert all(len(parts) == 1 for parts in partitions_by_key.values())

    # The commits took: the group's next member resumes after the ten records.
    produce(kafka_topics.bootstrap, kafka_topics.applications, [(b"cl-0", b"eleventh", [])])
    resumed = _consume_and_commit(kafka_topics, consumer_config, expected=1)
    assert [r.value for r in resumed] == [b"eleventh"]


def _consume_and_commit(
    topics: KafkaTopics, config: dict[str, object], expected: int
) -> list[ConsumerRecord]:
    """Consume as a group member, committing each batch; stop 0.5 s after the expected count."""
    consumer = KafkaConsumer(**config)
    consumer.subscribe([topics.applications])
    received: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + 15
        settled_at: float | None = None
        while (now := time.monotonic()) < deadline:
            if len(received) >= expected:
                settled_at = settled_at or now
                if now - settled_at > 0.5:
                    break
            for tp, part in consumer.poll(timeout_ms=100).items():
                received.extend(part)
                consumer.commit({tp: OffsetAndMetadata(part[-1].offset + 1, "", -1)})
        for tp in consumer.assignment():
            last = max((r.offset for r in received if r.partition == tp.partition), default=None)
            if last is not None:
                assert consumer.committed(tp) == last + 1
        return received
    finally:
        consumer.close()


def test_create_topics_is_idempotent_and_sets_the_partition_count(
    kafka_broker: Broker,
) -> None:
    config = {"bootstrap_servers": kafka_broker.bootstrap}
    name = f"test.idempotent.{time.monotonic_ns()}"
    try:
        assert create_topics(config, {name: 3}) == [name]
        assert create_topics(config, {name: 3}) == []
        consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
        try:
            assert consumer.partitions_for_topic(name) == {0, 1, 2}
        finally:
            consumer.close()
    finally:
        assert delete_topics(config, [name, name + ".never-created"]) == [name]


def test_read_all_returns_every_record_once_and_waits_out_the_settle_time(
    kafka_topics: KafkaTopics,
) -> None:
    produce(kafka_topics.bootstrap, kafka_topics.dlq, records())
    got = read_all(kafka_topics.bootstrap, kafka_topics.dlq, 10, timeout_s=10, settle_s=0.3)
    assert sorted(r.value for r in got) == sorted(v for _, v, _ in records())
    assert read_all(kafka_topics.bootstrap, kafka_topics.labels, 1, timeout_s=0.5) == []
