"""The outbox relay when the database refuses writes, and when its leader is paused.

A relay that cannot mark what it published must not publish it again and again
(one batch per failure episode at most), and a leader frozen by SIGSTOP or a VM
pause must be replaced within its lease, then stay quiet when it wakes up.
Real PostgreSQL, real Apache Kafka, real `gocluster run` processes; the unit
test at the top uses a fake producer and a database trigger that refuses the
outbox update (what a full disk does to that one statement).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import Engine, text

from consumers.outbox_relay import OutboxRelay
from consumers.retry import Backoff
from tests import stories
from tests.dbutil import set_read_only, terminate_sessions
from tests.kafka_fixtures import KafkaTopics
from tests.service_process import (
    ServiceProcess,
    inbox_count,
    migrate,
    outbox_count,
    service_env,
    unique_outputs,
    unsent_count,
    wait_until,
)
from tests.test_kafka_faults import event_outputs, publish, reference_outputs
from tests.test_outbox_relay import TOPICS, FakeProducer
from workflows.dates import FixedClock
from workflows.store import messages
from workflows.store.database import create_db_engine, upgrade

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RELAY_BATCH = 500  # OutboxRelay's default batch: the bound on copies per episode
RELAY_ONLY = ("run", "--clock", "event", "--only", "relay")
CONSUMER_ONLY = ("run", "--clock", "event", "--only", "consumer")


def _output_row(n: int) -> dict[str, Any]:
    event_id = f"00000000-0000-0000-0000-{n:012d}"
    return {
        "event_id": event_id,
        "cluster_id": f"c-{n}",
        "stream": "labels",
        "payload": {
            "specversion": "1.0",
            "id": event_id,
            "type": "gocluster.label.awarded",
            "source": "/gocluster/membership",
            "subject": f"c-{n}",
            "data": {"n": n},
        },
        "created_at": NOW,
        "sent_at": None,
    }


class OutboxUpdates:
    """Refuse the outbox's UPDATE as a full disk does (a trigger), or allow it again.

    Reads, and writes to other tables, keep working: only marking rows sent fails.
    """

    def __init__(self, db: Engine) -> None:
        self.db = db
        self.postgres = db.dialect.name == "postgresql"
        self.refusing = False

    def refuse(self) -> None:
        statements = (
            [
                "CREATE FUNCTION refuse_outbox_update() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
                "USING ERRCODE = '53100'; END $$",
                "CREATE TRIGGER refuse_outbox_update BEFORE UPDATE ON outbox "
                "FOR EACH STATEMENT EXECUTE FUNCTION refuse_outbox_update()",
            ]
            if self.postgres
            else [
                "CREATE TRIGGER refuse_outbox_update BEFORE UPDATE ON outbox "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            ]
        )
        with self.db.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
        self.refusing = True

    def allow(self) -> None:
        with self.db.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_outbox_update" + " ON outbox" * self.postgres))
        self.refusing = False


@pytest.fixture
def outbox_updates(db_engine: Engine) -> Iterator[OutboxUpdates]:
    switch = OutboxUpdates(db_engine)
    yield switch
    if switch.refusing:
        switch.allow()


def test_a_batch_the_database_refuses_to_mark_sent_is_published_once_then_marked_later(
    db_engine: Engine, outbox_updates: OutboxUpdates
) -> None:
    with db_engine.begin() as conn:
        messages.enqueue(conn, [_output_row(n) for n in range(5)])
    producer = FakeProducer()
    relay = OutboxRelay(db_engine, lambda: producer, TOPICS, FixedClock(NOW), threading.Event())  # type: ignore[arg-type,return-value]
    relay.backoff = Backoff(first=0.01, cap=0.02)

    outbox_updates.refuse()
    for _ in range(6):
        relay.step()
    assert len(producer.sent) == 5  # one publication for the whole episode, not one per round
    outbox_updates.allow()
    relay.drain()
    relay.close()

    assert len(producer.sent) == 5  # marked later without being sent again
    with db_engine.connect() as conn:
        assert messages.unsent(conn, 10) == []


def test_a_relay_frozen_past_its_lease_is_replaced_and_publishes_nothing_when_it_wakes(
    postgres_url: str,
) -> None:
    db = create_db_engine(postgres_url)
    upgrade(db)
    producers = FakeProducer(), FakeProducer()
    a, b = (
        OutboxRelay(db, lambda p=p: p, TOPICS, FixedClock(NOW), threading.Event(), lease_s=1.0)  # type: ignore[misc]
        for p in producers
    )
    try:
        with db.begin() as conn:
            messages.enqueue(conn, [_output_row(n) for n in range(3)])
        assert a.step() == 3
        with db.begin() as conn:
            messages.enqueue(conn, [_output_row(n) for n in range(3, 6)])
        assert b.step() == 0  # a standby while a holds the lease
        time.sleep(1.5)  # a is frozen (never called) past its lease
        assert b.step() == 3
        with db.begin() as conn:
            messages.enqueue(conn, [_output_row(n) for n in range(6, 9)])
        assert a.step() == 0  # woken: it finds the lease taken and stops
        assert b.step() == 3
        assert [len(p.sent) for p in producers] == [3, 6]
    finally:
        a.close()
        b.close()
        db.dispose()


# -- real processes -------------------------------------------------------------------------


@pytest.fixture
def pg(postgres_url: str) -> str:
    migrate(postgres_url)
    return postgres_url


def count_records(bootstrap: str, topics: tuple[str, ...]) -> int:
    """Records now in these topics (Apache Kafka's end offsets are exact)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        parts = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        ends = consumer.end_offsets(parts)
        starts = consumer.beginning_offsets(parts)
        return sum(ends[tp] - starts[tp] for tp in parts)
    finally:
        consumer.close()


@pytest.mark.kafka
@pytest.mark.postgres
def test_a_read_only_database_costs_at_most_one_batch_of_copies_and_loses_nothing(
    kafka_topics: KafkaTopics, pg: str, postgres_admin_url: str, tmp_path: Path
) -> None:
    story = stories.generate(clusters=60, seed=71, prefix="ro")
    events = list(story.events)
    expected = reference_outputs(events, tmp_path)
    env = service_env(
        kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": pg, "GOCLUSTER_RELAY_LEASE_S": "90"}
    )
    outputs = (kafka_topics.labels, kafka_topics.deadlines, kafka_topics.membership)

    with ServiceProcess(env, RELAY_ONLY, name="relay", log_dir=tmp_path) as relay:
        relay.wait_for_log("outbox relay leadership acquired", timeout_s=60)
        # A backlog in hand when the database turns read-only: pause the relay while
        # a consumer applies the story, then fail the database over under it.
        relay.pause()
        with ServiceProcess(env, CONSUMER_ONLY, name="consumer", log_dir=tmp_path) as consumer:
            publish(kafka_topics, events)
            wait_until(lambda: inbox_count(pg) == len(events), 120, "every event applied")
            assert consumer.terminate() == 0
        assert unsent_count(pg) == len(expected)
        set_read_only(postgres_admin_url, pg, True)
        terminate_sessions(postgres_admin_url, pg)
        relay.resume()
        time.sleep(15)
        during = count_records(kafka_topics.bootstrap, outputs)
        set_read_only(postgres_admin_url, pg, False)
        terminate_sessions(postgres_admin_url, pg)  # the failover is over: reconnect writable
        wait_until(lambda: unsent_count(pg) == 0, 90, "every output marked sent")
        records = event_outputs(kafka_topics, len(expected), settle_s=2.0)
        assert relay.terminate() == 0

    print(f"read-only episode: {during} records for {len(expected)} outputs")
    assert during <= min(len(expected), RELAY_BATCH) * 2, "re-published more than one batch"
    assert unique_outputs(records) == expected  # nothing lost, copies identical
    assert len(records) - len(expected) <= RELAY_BATCH
    assert outbox_count(pg) == len(expected)


@pytest.mark.kafka
@pytest.mark.postgres
def test_a_paused_relay_leader_is_replaced_within_its_lease_and_publishes_nothing_after_waking(
    kafka_topics: KafkaTopics, pg: str, tmp_path: Path
) -> None:
    story = stories.generate(clusters=45, seed=81, prefix="lease")
    parts = [[e for e in story.events if e["subject"] in story.clusters[i::3]] for i in range(3)]
    expected = reference_outputs(list(story.events), tmp_path)
    sizes = [len(reference_outputs(part, tmp_path)) for part in parts]
    lease_s = 3
    env = service_env(
        kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": pg, "GOCLUSTER_RELAY_LEASE_S": str(lease_s)}
    )
    outputs = (kafka_topics.labels, kafka_topics.deadlines, kafka_topics.membership)

    def on_kafka(count: int) -> bool:
        return count_records(kafka_topics.bootstrap, outputs) >= count

    with ServiceProcess(env, RELAY_ONLY, name="relay-a", log_dir=tmp_path) as a:
        a.wait_for_log("outbox relay leadership acquired", timeout_s=60)
        with (
            ServiceProcess(env, RELAY_ONLY, name="relay-b", log_dir=tmp_path) as b,
            ServiceProcess(env, CONSUMER_ONLY, name="consumer", log_dir=tmp_path) as consumer,
        ):
            b.wait_for_log("gocluster starting", timeout_s=60)
            consumer.wait_joined()
            publish(kafka_topics, parts[0])
            wait_until(lambda: on_kafka(sizes[0]), 90, "the first third's outputs on Kafka")
            wait_until(lambda: unsent_count(pg) == 0, 30, "the first third marked sent")

            a.pause()
            paused_at = time.monotonic()
            publish(kafka_topics, parts[1])
            wait_until(lambda: on_kafka(sizes[0] + sizes[1]), 60, "the second third's outputs")
            takeover_s = time.monotonic() - paused_at

            a.resume()
            publish(kafka_topics, parts[2])
            wait_until(lambda: outbox_count(pg) == len(expected), 90, "every output in the outbox")
            wait_until(lambda: unsent_count(pg) == 0, 60, "every output marked sent")
            records = event_outputs(kafka_topics, len(expected), settle_s=3.0)
            assert consumer.terminate() == 0
            assert b.terminate() == 0
        assert a.terminate() == 0

    print(f"takeover after SIGSTOP of the leader: {takeover_s:.1f} s (lease {lease_s} s)")
    assert takeover_s <= lease_s + 15, takeover_s
    assert b.count("outbox relay leadership acquired") >= 1
    # The woken leader published nothing: what it published is the first third.
    assert a.wait_for_log("gocluster stopped")["published"] == sizes[0]
    assert b.wait_for_log("gocluster stopped")["published"] == sizes[1] + sizes[2]
    assert len(records) == len(expected)
    assert unique_outputs(records) == expected
