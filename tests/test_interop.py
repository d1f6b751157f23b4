"""Kafka clients the project did not write, against the real broker and `gocluster run`.

kcat (librdkafka 2.0) and confluent-kafka (librdkafka 2.x) with the official
CloudEvents SDK's Kafka binding produce the sample story in both content modes and
must read back the outputs of `gocluster replay` of it. Producers use
`partitioner=murmur2_random` (CONTRACT.md section 1): the partition the Java client
and kafka-python choose. Services run with `--clock event`, as wherever a test
compares with a replay.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from kafka.partitioner import DefaultPartitioner

from consumers.kafka_admin import create_topics, delete_topics
from tests import stories
from tests.brokers import Broker
from tests.dbutil import in_ci
from tests.kafka_fixtures import INPUT_PARTITIONS, OUTPUT_PARTITIONS, KafkaTopics, produce, read_all
from tests.service_process import ServiceProcess, replay, service_env

pytestmark = pytest.mark.kafka

SAMPLE = Path(__file__).resolve().parent.parent / "workflows/samples/cluster_automotive.jsonl"
CLUSTER = "cluster-automotive"
Event = dict[str, Any]


def sample_events(topic: str | None = None) -> list[Event]:
    lines = SAMPLE.read_text("utf-8").splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    return [e for e in events if topic is None or stories.topic_of(e) == topic]


def reference(tmp_path: Path) -> dict[str, Event]:
    """id -> output event of `gocluster replay` of the sample story."""
    outputs, _ = replay(sample_events(), tmp_path / "replay")
    assert len({e["id"] for e in outputs}) == len(outputs) == 3
    return {e["id"]: e for e in outputs}


def kafka_python_partition(key: bytes, partitions: int) -> int:
    """The partition kafka-python's DefaultPartitioner (Java's murmur2) picks for `key`."""
    ids = set(range(partitions))  # a topic "t" in the part of ClusterMetadata it reads:
    cluster = SimpleNamespace(topics=lambda: {"t"}, partitions_for_topic=lambda _: ids)
    cluster.available_partitions_for_topic = cluster.partitions_for_topic
    return int(DefaultPartitioner().partition("t", key, key, None, None, cluster))


def run_service(topics: KafkaTopics, db_url: str, logs: Path, read: Callable[[], list[Any]]) -> Any:
    """`gocluster run` until `read()` (the outputs) returns; it must exit 0 on SIGTERM."""
    env = service_env(topics.env(), {"GOCLUSTER_DATABASE_URL": db_url})
    with ServiceProcess(env, log_dir=logs) as service:
        records = read()
        assert service.count("event applied") == 4
        assert service.terminate() == 0
    return records


# -- kcat ------------------------------------------------------------------------------------


@pytest.fixture
def kcat() -> str:
    found = shutil.which("kcat")
    if found is None:
        message = "kcat is not installed (Debian: apt-get install kcat)"
        if in_ci():
            pytest.fail(f"CI is set, so this is an error, not a skip: {message}")
        pytest.skip(message)
    return found


def kcat_run(kcat: str, bootstrap: str, *args: str, text: str | None = None) -> str:
    """kcat to completion; it exits 1 on any error (`-P`: any message not delivered)."""
    done = subprocess.run(
        [kcat, "-b", bootstrap, *args], input=text, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"kcat {args} exited {done.returncode}: {done.stderr}"
    return done.stdout


def kcat_read(kcat: str, bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record of `topic` now (`-J`: key, payload, partition), headers as a dict."""
    fast = ("-X", "fetch.wait.max.ms=10")  # librdkafka's 500 ms default stalls every `-e` run
    out = kcat_run(kcat, bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q", *fast)
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    for record in records:
        flat = record.get("headers") or []
        record["headers"] = dict(zip(flat[::2], flat[1::2], strict=True))
    return records


def kcat_read_outputs(kcat: str, topics: KafkaTopics, expected: int) -> list[dict[str, Any]]:
    """The event output topics once `expected` records are in, read again 1.5 s later."""
    deadline = time.monotonic() + 90

    def read() -> list[dict[str, Any]]:
        outputs = (topics.labels, topics.deadlines, topics.membership)
        return [r for t in outputs for r in kcat_read(kcat, topics.bootstrap, t)]

    while len(read()) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.5)  # extras (duplicates) would show up by now
    return read()


def kcat_publish_story(kcat: str, topics: KafkaTopics, mode: str) -> None:
    """Structured: one kcat run per topic, key before a tab. Binary: one run per event."""
    for name, topic in zip(("applications", "interviews"), topics.inputs, strict=True):
        events = sample_events(name)
        to_topic = ("-P", "-t", topic, "-X", "partitioner=murmur2_random")
        if mode == "structured":
            text = "".join(f"{e['subject']}\t{json.dumps(e)}\n" for e in events)
            options = ["-K", "\t", "-H", "content-type=application/cloudevents+json"]
            kcat_run(kcat, topics.bootstrap, *to_topic, *options, text=text)
            continue
        for e in events:
            options = ["-k", e["subject"], "-H", f"content-type={e['datacontenttype']}"]
            for attribute in e.keys() - {"data", "datacontenttype"}:
                options += ["-H", f"ce_{attribute}={e[attribute]}"]
            kcat_run(kcat, topics.bootstrap, *to_topic, *options, text=json.dumps(e["data"]))


def assert_partitioned_like_kafka_python(records: list[dict[str, Any]], partitions: int) -> None:
    """Each key in one partition: the one kafka-python (the service's client) would choose."""
    placed = {(r["key"], r["partition"]) for r in records}
    assert placed == {(k, kafka_python_partition(k.encode(), partitions)) for k, _ in placed}


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_story_produced_by_kcat_gives_the_outputs_of_an_offline_replay(
    mode: str, kcat: str, kafka_topics: KafkaTopics, sqlite_url: str, tmp_path: Path
) -> None:
    expected = reference(tmp_path)
    kcat_publish_story(kcat, kafka_topics, mode)
    bootstrap = kafka_topics.bootstrap
    inputs = [r for t in kafka_topics.inputs for r in kcat_read(kcat, bootstrap, t)]
    assert len(inputs) == 4
    assert {r["key"] for r in inputs} == {CLUSTER}
    assert_partitioned_like_kafka_python(inputs, INPUT_PARTITIONS)

    read = functools.partial(kcat_read_outputs, kcat, kafka_topics, len(expected))
    records = run_service(kafka_topics, sqlite_url, tmp_path, read)

    outputs = [json.loads(r["payload"]) for r in records]
    assert len(outputs) == len(expected), "missing or duplicated outputs"
    assert {e["id"]: e for e in outputs} == expected
    for record, event in zip(records, outputs, strict=True):
        assert record["key"] == event["subject"] == CLUSTER
        assert record["headers"]["content-type"] == "application/cloudevents+json"
    assert_partitioned_like_kafka_python(records, OUTPUT_PARTITIONS)
    assert kcat_read(kcat, bootstrap, kafka_topics.dlq) == []


def test_output_records_carry_the_ce_id_type_source_and_subject_headers(
    kcat: str, kafka_topics: KafkaTopics, sqlite_url: str, tmp_path: Path
) -> None:
    kcat_publish_story(kcat, kafka_topics, "structured")
    read = functools.partial(kcat_read_outputs, kcat, kafka_topics, 3)
    records = run_service(kafka_topics, sqlite_url, tmp_path, read)
    assert len(records) == 3
    for record in records:
        event = json.loads(record["payload"])
        assert record["headers"] == {
            "content-type": "application/cloudevents+json",
            **{f"ce_{a}": event[a] for a in ("id", "type", "source", "subject")},
        }


# -- the partitioner itself -------------------------------------------------------------------


@pytest.fixture
def topics_of_7(kafka_broker: Broker) -> Iterator[list[str]]:
    """Three new topics of 7 partitions each (deleted afterwards)."""
    names = [f"interop.keys.{uuid.uuid4().hex[:10]}" for _ in range(3)]
    create_topics({"bootstrap_servers": kafka_broker.bootstrap}, dict.fromkeys(names, 7))
    yield names
    delete_topics({"bootstrap_servers": kafka_broker.bootstrap}, names)


def confluent_produce(bootstrap: str, topic: str, messages: list[Any], **config: Any) -> None:
    """confluent-kafka, idempotent; fails unless every message is acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, **config})
    errors: list[Any] = []
    for key, value, headers in messages:
        producer.produce(
            topic, value=value, key=key, headers=headers, on_delivery=lambda e, _: errors.append(e)
        )
    assert producer.flush(15) == 0, "messages still unacknowledged after 15 s"
    assert errors == [None] * len(messages)


@pytest.mark.parametrize("client", ["kcat", "confluent-kafka"])
def test_murmur2_random_places_every_key_where_kafka_python_does_and_the_default_does_not(
    client: str,
    request: pytest.FixtureRequest,
    kafka_broker: Broker,
    topics_of_7: list[str],
) -> None:
    bootstrap = kafka_broker.bootstrap
    keys = [f"cluster-{'x' * (i % 5)}{i}" for i in range(100)]  # all key lengths mod 4

    def send(topic: str, partitioner: str) -> None:
        if client == "kcat":
            text = "".join(f"{k}\tv\n" for k in keys)
            options = ("-P", "-t", topic, "-K", "\t", "-X", f"partitioner={partitioner}")
            kcat_run(request.getfixturevalue("kcat"), bootstrap, *options, text=text)
        else:
            messages = [(k, b"v", []) for k in keys]
            confluent_produce(bootstrap, topic, messages, partitioner=partitioner)

    def placed(topic: str) -> dict[str, int]:
        records = read_all(bootstrap, topic, expected_count=len(keys), timeout_s=20)
        assert len(records) == len(keys)
        return {r.key.decode(): r.partition for r in records}

    by_kafka_python, by_murmur2_random, by_default = topics_of_7
    produce(bootstrap, by_kafka_python, [(k.encode(), b"v", []) for k in keys])
    send(by_murmur2_random, "murmur2_random")
    send(by_default, "consistent_random")  # librdkafka's default (CRC32)

    wanted = placed(by_kafka_python)
    assert wanted == {k: kafka_python_partition(k.encode(), 7) for k in keys}
    assert placed(by_murmur2_random) == wanted
    differing = [k for k, p in placed(by_default).items() if p != wanted[k]]
    assert len(differing) > len(keys) // 2, "librdkafka's default partitioner matched murmur2"


# -- confluent-kafka with the CloudEvents SDK --------------------------------------------------


def sdk_event(event: Event) -> CloudEvent:
    attributes = {k: v for k, v in event.items() if k != "data"}
    attributes["time"] = datetime.fromisoformat(event["time"])  # the SDK wants a datetime
    return CloudEvent(attributes, event["data"])


def confluent_read(bootstrap: str, topics: list[str], expected: int) -> list[Any]:
    """Every record of `topics` from the start (assign: no group join), once `expected` are in."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"interop-{uuid.uuid4()}"}
        | {"enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )
    try:
        partitions = consumer.list_topics(timeout=10).topics
        parts = [(t, p) for t in topics for p in partitions[t].partitions]
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])
        records: list[Any] = []
        deadline, quiet_since = time.monotonic() + 90, time.monotonic()
        while (now := time.monotonic()) < deadline:
            if len(records) >= expected and now - quiet_since >= 1.5:
                break
            message = consumer.poll(0.2)
            if message is not None:
                assert message.error() is None, message.error()
                records.append(message)
                quiet_since = time.monotonic()
        return records
    finally:
        consumer.close()


def test_story_produced_by_confluent_kafka_with_the_cloudevents_sdk_round_trips_in_both_modes(
    kafka_topics: KafkaTopics, sqlite_url: str, tmp_path: Path
) -> None:
    expected = reference(tmp_path)
    fmt, subject = JSONFormat(), lambda e: e.get_subject()
    for name, topic in zip(("applications", "interviews"), kafka_topics.inputs, strict=True):
        first, second = (sdk_event(e) for e in sample_events(name))
        # Both modes on each topic: the first event structured, the second binary.
        messages = [
            ce_kafka.to_structured(first, fmt, key_mapper=subject),
            ce_kafka.to_binary(second, fmt, key_mapper=subject),
        ]
        assert sorted(messages[0].headers) == ["content-type"]
        assert messages[1].headers["ce_id"] == second.get_id().encode()
        records = [(m.key, m.value, list(m.headers.items())) for m in messages]
        confluent_produce(kafka_topics.bootstrap, topic, records, partitioner="murmur2_random")
    inputs = [r for t in kafka_topics.inputs for r in read_all(kafka_topics.bootstrap, t, 2)]
    partition = kafka_python_partition(CLUSTER.encode(), INPUT_PARTITIONS)
    assert [(r.key, r.partition) for r in inputs] == [(CLUSTER.encode(), partition)] * 4

    outputs = [kafka_topics.labels, kafka_topics.deadlines, kafka_topics.membership]
    every = [*outputs, kafka_topics.dlq]
    read = functools.partial(confluent_read, kafka_topics.bootstrap, every, len(expected))
    records = run_service(kafka_topics, sqlite_url, tmp_path, read)

    assert {r.topic() for r in records} <= set(outputs), "something went to the DLQ"
    parsed = [
        ce_kafka.from_structured(ce_kafka.KafkaMessage(dict(r.headers()), r.key(), r.value()), fmt)
        for r in records
    ]
    assert sorted(e.get_id() for e in parsed) == sorted(expected)
    for event in parsed:
        want = expected[event.get_id()]
        attributes = event.get_attributes()
        # The SDK adds the record key as the `partitionkey` extension and parses `time`
        # into a datetime: compare the instant (datetime equality), not the string.
        assert attributes.pop("partitionkey") == CLUSTER
        assert attributes.pop("time") == datetime.fromisoformat(want["time"])
        assert attributes == {k: v for k, v in want.items() if k not in ("data", "time")}
        assert event.get_data() == want["data"]
