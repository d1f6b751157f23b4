"""`gocluster run` under faults: SIGKILL, SIGTERM, a second instance, a broker restart,
a database that is not there yet. Real broker, real PostgreSQL, real subprocesses.

Outputs are compared with `gocluster replay` of the same story (`--clock event`
on the service, so the result does not depend on timing; see tests/stories.py
for why the cross-topic order does not matter either).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql
from sqlalchemy.engine import make_url

from consumers.kafka_admin import delete_topics
from tests import stories
from tests.brokers import Broker
from tests.dbutil import ADMIN_URL, DB_PREFIX, drop_postgres_database
from tests.kafka_fixtures import KafkaTopics, create_topic_set, produce
from tests.service_process import (
    ServiceProcess,
    inbox_count,
    inbox_outcomes,
    migrate,
    outbox_count,
    read_topics,
    replay,
    service_env,
    unique_outputs,
    unsent_count,
    wait_until,
)

pytestmark = pytest.mark.kafka


# -- helpers ----------------------------------------------------------------------------


def reference_outputs(events: list[dict[str, Any]], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """id -> output event of `gocluster replay` of these events on a fresh SQLite."""
    outputs, _ = replay(events, tmp_path / f"replay-{uuid.uuid4().hex[:6]}")
    by_id = {e["id"]: e for e in outputs}
    assert len(by_id) == len(outputs)
    return by_id


def publish(topics: KafkaTopics, events: list[dict[str, Any]], seed: int = 1) -> None:
    """Each event on its topic, in a seeded mix of structured and binary mode."""
    for name, topic in (("applications", topics.applications), ("interviews", topics.interviews)):
        on_topic = [e for e in events if stories.topic_of(e) == name]
        if on_topic:
            produce(topics.bootstrap, topic, stories.mixed_records(on_topic, seed))


def event_outputs(topics: KafkaTopics, expected: int, settle_s: float = 1.0) -> list[Any]:
    outputs = (topics.labels, topics.deadlines, topics.membership)
    return read_topics(topics.bootstrap, outputs, expected, timeout_s=120, settle_s=settle_s)


def committed_offsets(topics: KafkaTopics, partitions: int) -> dict[tuple[str, int], int | None]:
    consumer = KafkaConsumer(
        bootstrap_servers=topics.bootstrap, group_id=topics.group_id, enable_auto_commit=False
    )
    try:
        return {
            (topic, p): consumer.committed(TopicPartition(topic, p))
            for topic in topics.inputs
            for p in range(partitions)
        }
    finally:
        consumer.close()


def input_keys(record: Any) -> tuple[str, str]:
    """(source, id) of an input record in either mode."""
    headers = {k: v.decode() for k, v in record.headers}
    if "ce_id" in headers:
        return headers["ce_source"], headers["ce_id"]
    event = json.loads(record.value)
    return event["source"], event["id"]


@pytest.fixture
def pg(postgres_url: str) -> str:
    migrate(postgres_url)
    return postgres_url


# -- 3. SIGKILL mid-stream -----------------------------------------------------------------


@pytest.mark.postgres
def test_sigkill_mid_stream_then_restart_loses_nothing_and_duplicates_only_identically(
    kafka_topics: KafkaTopics, pg: str, tmp_path: Path
) -> None:
    story = stories.generate(clusters=80, seed=21, prefix="kill")
    events = list(story.events)
    expected = reference_outputs(events, tmp_path)
    # Small batches: many transactions and commits, so the kill lands between them.
    env = service_env(
        kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": pg, "GOCLUSTER_KAFKA_MAX_POLL_RECORDS": "5"}
    )
    publish(kafka_topics, events)

    with ServiceProcess(env, name="first", log_dir=tmp_path) as first:
        # Kill once outputs are being written and published, not while events only park.
        wait_until(
            lambda: outbox_count(pg) >= len(expected) // 3, 90, "a third of the outputs", 0.05
        )
        assert first.kill() == -9
    assert inbox_count(pg) < len(events), "the stream was done before the kill: proves nothing"

    with ServiceProcess(env, name="second", log_dir=tmp_path) as second:
        wait_until(lambda: inbox_count(pg) == len(events), 120, "every event in the inbox")
        records = event_outputs(kafka_topics, len(expected))
        wait_until(lambda: unsent_count(pg) == 0, 60, "the outbox drained")
        assert second.terminate() == 0

    assert unique_outputs(records) == expected
    # Each event had its effect exactly once (the inbox is the record of that).
    assert inbox_outcomes(pg) == dict.fromkeys(story.event_keys, "applied")


# -- 7. SIGTERM ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_sigterm_mid_stream_exits_0_with_offsets_committed_exactly_to_what_was_applied(
    kafka_topics: KafkaTopics, pg: str, tmp_path: Path
) -> None:
    story = stories.generate(clusters=80, seed=31, prefix="term")
    events = list(story.events)
    expected = reference_outputs(events, tmp_path)
    env = service_env(
        kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": pg, "GOCLUSTER_KAFKA_MAX_POLL_RECORDS": "5"}
    )
    publish(kafka_topics, events)

    with ServiceProcess(env, name="first", log_dir=tmp_path) as first:
        wait_until(
            lambda: outbox_count(pg) >= len(expected) // 3, 90, "a third of the outputs", 0.05
        )
        assert first.terminate() == 0
    assert first.count("gocluster stopped") == 1
    received = inbox_outcomes(pg)
    assert len(received) < len(events), "the stream was done before SIGTERM: proves nothing"
    assert unsent_count(pg) == 0  # the outputs of every applied event were published

    # Nothing half-done: below each partition's committed offset every record is in the
    # inbox, above it none is (the batch in hand was finished and committed).
    committed = committed_offsets(kafka_topics, partitions=3)
    inputs = read_topics(kafka_topics.bootstrap, kafka_topics.inputs, len(events), settle_s=0)
    assert len(inputs) == len(events)
    for record in inputs:
        done = committed[(record.topic, record.partition)] or 0
        where = f"{record.topic}/{record.partition}@{record.offset}, committed {done}"
        assert (record.offset < done) == (input_keys(record) in received), where

    with ServiceProcess(env, name="second", log_dir=tmp_path) as second:
        wait_until(lambda: inbox_count(pg) == len(events), 120, "every event in the inbox")
        records = event_outputs(kafka_topics, len(expected))
        assert second.terminate() == 0

    # The restart re-read nothing the first run had committed, and published no duplicate.
    assert second.count("event duplicate") == 0
    assert len(records) == len(expected)
    assert unique_outputs(records) == expected
    assert inbox_outcomes(pg) == dict.fromkeys(story.event_keys, "applied")
    assert unsent_count(pg) == 0


# -- 5. two instances in one group -----------------------------------------------------------


@pytest.fixture
def six_partition_topics(kafka_broker: Broker) -> Iterator[KafkaTopics]:
    """A topic set whose input topics have 6 partitions, to split between two members."""
    topics = create_topic_set(kafka_broker.bootstrap, input_partitions=6)
    yield topics
    if kafka_broker.running:
        delete_topics({"bootstrap_servers": topics.bootstrap}, [*topics.inputs, *topics.outputs])


@pytest.mark.postgres
@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_two_instances_split_the_partitions_and_one_takes_over_when_the_other_stops(
    six_partition_topics: KafkaTopics, pg: str, tmp_path: Path, stop: str
) -> None:
    """SIGTERM leaves the group at once; after a SIGKILL only the session timeout tells
    the coordinator, and the survivor takes over within about that long."""
    topics = six_partition_topics
    story = stories.generate(clusters=60, seed=41, prefix="duo")
    half = set(story.clusters[:30])
    before = [e for e in story.events if e["subject"] in half]
    after = [e for e in story.events if e["subject"] not in half]
    expected = reference_outputs(list(story.events), tmp_path)
    env = service_env(topics.env(), {"GOCLUSTER_DATABASE_URL": pg})
    every_partition = {f"{t}/{p}" for t in topics.inputs for p in range(6)}
    session_timeout_s = int(env["GOCLUSTER_KAFKA_SESSION_TIMEOUT_MS"]) / 1000

    with (
        ServiceProcess(env, name="a", log_dir=tmp_path) as a,
        ServiceProcess(env, name="b", log_dir=tmp_path) as b,
    ):

        def split() -> bool:
            mine, theirs = a.assigned(), b.assigned()
            return bool(mine and theirs and not mine & theirs and mine | theirs == every_partition)

        wait_until(split, 60, "the group to split the 12 input partitions between a and b")
        publish(topics, before)
        wait_until(lambda: inbox_count(pg) == len(before), 90, "the first half applied")
        assert a.count("event applied") > 0
        assert b.count("event applied") > 0

        assert (a.terminate() if stop == "sigterm" else a.kill()) == (
            0 if stop == "sigterm" else -9
        )
        stopped_at = time.monotonic()
        wait_until(lambda: b.assigned() == every_partition, 60, "b to take over", 0.05)
        takeover_s = time.monotonic() - stopped_at
        publish(topics, after)
        wait_until(lambda: inbox_count(pg) == len(story.events), 90, "the second half applied")
        records = event_outputs(topics, len(expected))
        assert b.alive
        assert b.terminate() == 0

    if stop == "sigkill":
        assert session_timeout_s * 0.5 <= takeover_s <= session_timeout_s + 5, takeover_s
    else:
        assert takeover_s < session_timeout_s + 5, takeover_s
    assert unique_outputs(records) == expected
    # Each event applied once: what `a` applied and b received again was a duplicate.
    assert a.count("event applied") + b.count("event applied") == len(story.events)
    assert inbox_outcomes(pg) == dict.fromkeys(story.event_keys, "applied")
    assert unsent_count(pg) == 0


# -- 8. broker restart --------------------------------------------------------------------


def test_service_resumes_from_its_committed_offsets_after_the_broker_is_killed_and_restarted(
    restartable_broker: Broker, sqlite_url: str, tmp_path: Path
) -> None:
    broker = restartable_broker
    topics = create_topic_set(broker.bootstrap)
    story = stories.generate(clusters=20, seed=51, prefix="brk")
    before = [e for e in story.events if e["subject"] in story.clusters[:10]]
    after = [e for e in story.events if e["subject"] in story.clusters[10:]]
    expected = reference_outputs(list(story.events), tmp_path)
    expected_before = reference_outputs(before, tmp_path)
    env = service_env(topics.env(), {"GOCLUSTER_DATABASE_URL": sqlite_url})

    with ServiceProcess(env, name="service", log_dir=tmp_path) as service:
        publish(topics, before)
        assert unique_outputs(event_outputs(topics, len(expected_before))) == expected_before
        wait_until(lambda: unsent_count(sqlite_url) == 0, 30, "the outbox drained")
        wait_until(
            lambda: sum(o or 0 for o in committed_offsets(topics, 3).values()) == len(before),
            30,
            "every input offset committed",
        )
        committed = committed_offsets(topics, 3)

        # SIGKILL: no clean shutdown. The broker's log keeps topics, offsets and the group.
        broker.kill()
        broker.start()
        assert committed_offsets(topics, 3) == committed
        publish(topics, after)
        records = event_outputs(topics, len(expected), settle_s=2.0)
        wait_until(lambda: inbox_count(sqlite_url) == len(story.events), 60, "every event applied")
        assert service.alive, service.tail()
        recreated = service.count("recreating the Kafka producer")
        duplicates = service.count("event duplicate")
        applied = service.count("event applied")  # a parked event logs this when released
        assert service.terminate() == 0

    # The consumer resumed exactly at its committed offsets: nothing before them was
    # delivered again, nothing after them was skipped.
    assert duplicates == 0, service.tail()
    assert applied == len(story.events)
    # Every output exactly once: the ones published before the kill survived it, and
    # nothing was re-published.
    assert len(records) == len(expected)
    assert unique_outputs(records) == expected
    assert inbox_outcomes(sqlite_url) == dict.fromkeys(story.event_keys, "applied")
    assert unsent_count(sqlite_url) == 0
    # The broker kept the idempotent producer's id: the same producer carried on.
    assert recreated == 0, service.tail()


# -- 9. the database is not there at start ------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def test_unreachable_database_at_start_is_retried_and_sigterm_still_exits_0(
    kafka_topics: KafkaTopics, tmp_path: Path
) -> None:
    url = f"postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:{_closed_port()}/gocluster"
    env = service_env(kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": url})

    with ServiceProcess(env, name="service", log_dir=tmp_path) as service:
        first = service.wait_for_log("database unreachable at start, retrying", timeout_s=30)
        service.wait_for_log("database unreachable at start, retrying", timeout_s=30, count=2)
        assert service.alive
        assert service.terminate() == 0

    assert "s3cret-pw" not in service.stdout + service.stderr
    assert first["level"] == "error"
    assert str(first["database"]).startswith("postgresql+psycopg://postgres:***@127.0.0.1:")
    assert service.count("consumer subscribed") == 0  # it never got past the database


@pytest.mark.postgres
def test_service_waits_for_a_database_created_later_then_processes_events(
    kafka_topics: KafkaTopics, postgres_admin_url: str, tmp_path: Path
) -> None:
    name = f"{DB_PREFIX}{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    staging = f"{DB_PREFIX}{uuid.uuid4().hex[:8]}"
    env = service_env(kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": url})
    story = stories.generate(clusters=3, seed=61, prefix="late")
    expected = reference_outputs(list(story.events), tmp_path)
    publish(kafka_topics, list(story.events))
    libpq = (
        make_url(postgres_admin_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    try:
        with ServiceProcess(env, name="service", log_dir=tmp_path) as service:
            service.wait_for_log("database unreachable at start, retrying", timeout_s=30, count=2)
            assert service.alive
            # Created and migrated under another name, then renamed: the service never
            # sees a database without the schema (that is an operator error, not a wait).
            with psycopg.connect(libpq, autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(staging)))
            migrate(url.replace(name, staging))
            with psycopg.connect(libpq, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(staging), sql.Identifier(name)
                    )
                )
            service.wait_joined(timeout_s=60)
            records = event_outputs(kafka_topics, len(expected))
            assert service.terminate() == 0
        assert unique_outputs(records) == expected
        assert inbox_count(url) == len(story.events)
    finally:
        for database in (name, staging):
            drop_postgres_database(ADMIN_URL, url.replace(name, database))
