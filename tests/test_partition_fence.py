"""Input partition progress in the database: a member that lost its partitions writes nothing stale.

Each input partition's next offset is kept in the database and advanced inside
the batch's own transaction, so a batch skips what the partition's current
owner already applied (also records the inbox cannot recognise: undecodable
ones, or events whose inbox rows retention removed), and a consumer resumes at
the database's progress when Kafka's committed offset lags behind it.
The first tests drive the one handler directly on SQLite and PostgreSQL; the
last ones run real `gocluster run` processes on Apache Kafka and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from sqlalchemy import Engine, bindparam, delete, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from consumers.event_consumer import decode
from tests import builders, stories
from tests.dbutil import sessions_holding_locks
from tests.kafka_fixtures import KafkaTopics
from tests.service_process import (
    ServiceProcess,
    final_state,
    inbox_count,
    inbox_outcomes,
    migrate,
    replay,
    service_env,
    unique_outputs,
    unsent_count,
    wait_until,
)
from tests.test_kafka_faults import event_outputs, publish
from workflows.engine import Workflow
from workflows.store.database import SessionLimits, create_db_engine, upgrade
from workflows.store.tables import history, inbox, outbox, partition_progress

TOPIC = "gocluster.applications"


@dataclass
class Record:
    """What the consumer hands to `decode`: one record of an input partition."""

    offset: int
    value: bytes
    key: bytes | None = None
    partition: int = 0
    topic: str = TOPIC
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def good(offset: int, cluster_id: str = "c-1") -> Any:
    event = builders.submitted(date(2026, 1, 5), cluster_id=cluster_id)
    value = json.dumps(event).encode()
    headers = [("content-type", b"application/cloudevents+json")]
    return decode(Record(offset, value, cluster_id.encode(), headers=headers), 1 << 20)


def bad(offset: int) -> Any:
    return decode(Record(offset, b"{not json"), 1 << 20)


def rows(db: Engine, table: Any) -> int:
    with db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def dlq_rows(db: Engine) -> int:
    with db.connect() as conn:
        query = select(func.count()).select_from(outbox).where(outbox.c.stream == "dlq")
        return int(conn.execute(query).scalar_one())


def test_a_batch_already_applied_by_the_partitions_new_owner_writes_nothing_again(
    workflow: Workflow, db_engine: Engine
) -> None:
    batch = [good(0), bad(1)]
    workflow.apply_batch(batch)
    written = (rows(db_engine, outbox), rows(db_engine, history), rows(db_engine, inbox))
    assert dlq_rows(db_engine) == 1

    # The member that polled the same records, paused, and woke after the new owner
    # applied them: the undecodable record has no event id for the inbox to recognise.
    woken = Workflow(db_engine, workflow.policy, workflow.clock, workflow.source)
    woken.apply_batch(batch)

    assert dlq_rows(db_engine) == 1
    assert (rows(db_engine, outbox), rows(db_engine, history), rows(db_engine, inbox)) == written


def test_records_after_the_stored_progress_are_applied_and_those_before_it_skipped(
    workflow: Workflow, db_engine: Engine
) -> None:
    workflow.apply_batch([good(0, "c-1"), good(1, "c-2")])
    result = workflow.apply_batch([good(1, "c-2"), good(2, "c-3"), bad(3)])

    assert [(o.cluster_id, o.outcome) for o in result.outcomes] == [
        ("c-2", "duplicate"),
        ("c-3", "applied"),
    ]
    assert dlq_rows(db_engine) == 1
    other_partition = decode(Record(0, b"{not json", partition=1), 1 << 20)
    workflow.apply_batch([other_partition])
    assert dlq_rows(db_engine) == 2


def test_progress_skips_a_redelivery_even_after_its_inbox_row_is_gone(
    workflow: Workflow, db_engine: Engine
) -> None:
    workflow.apply_batch([good(0)])
    written = rows(db_engine, outbox), rows(db_engine, history)
    with db_engine.begin() as conn:
        conn.execute(delete(inbox))  # what retention does to old inbox rows

    workflow.apply_batch([good(0)])

    assert (rows(db_engine, outbox), rows(db_engine, history)) == written


# -- real processes -------------------------------------------------------------------------


@pytest.fixture
def pg(postgres_url: str) -> str:
    migrate(postgres_url)
    return postgres_url


def rewind_group(topics: KafkaTopics, partitions: int = 3) -> None:
    """Commit offset 0 for every input partition: what a lost offset commit leaves behind."""
    consumer = KafkaConsumer(
        bootstrap_servers=topics.bootstrap, group_id=topics.group_id, enable_auto_commit=False
    )
    try:
        parts = [TopicPartition(t, p) for t in topics.inputs for p in range(partitions)]
        consumer.assign(parts)
        consumer.commit({tp: OffsetAndMetadata(0, None, -1) for tp in parts})
    finally:
        consumer.close()


@pytest.mark.kafka
@pytest.mark.postgres
def test_a_consumer_resumes_at_the_databases_progress_when_kafkas_commit_lags_behind(
    kafka_topics: KafkaTopics, pg: str, tmp_path: Path
) -> None:
    story = stories.generate(clusters=10, seed=91, prefix="lag")
    events = list(story.events)
    env = service_env(kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": pg})
    publish(kafka_topics, events)
    with ServiceProcess(env, name="first", log_dir=tmp_path) as first:
        wait_until(lambda: inbox_count(pg) == len(events), 90, "every event applied")
        wait_until(lambda: unsent_count(pg) == 0, 60, "the outbox drained")
        assert first.terminate() == 0
    rewind_group(kafka_topics)

    with ServiceProcess(env, name="second", log_dir=tmp_path) as second:
        second.wait_joined()
        time.sleep(3)  # long enough to re-read every partition from offset 0
        assert second.terminate() == 0

    assert second.count("event duplicate") == 0, "records below the progress were re-applied"
    assert second.count("event applied") == 0


def history_causes(url: str) -> Counter[tuple[str, str, str | None, str | None]]:
    """Each (cluster, cause, from, to) recorded, with how many times: once when applied once."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            query = select(
                history.c.cluster_id, history.c.cause_id, history.c.from_state, history.c.to_state
            )
            return Counter(tuple(row) for row in conn.execute(query))  # type: ignore[misc]
    finally:
        engine.dispose()


def pause_inside_a_transaction(
    member: ServiceProcess,
    admin_url: str,
    url: str,
    name: str,
    state: str | None = None,
    timeout_s: float = 90,
) -> None:
    """SIGSTOP the member while its transaction holds locks (rows, advisory).

    Found by watching pg_stat_activity for its application_name; confirmed after
    the pause (the same transaction still open, so the process stopped inside it).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = sessions_holding_locks(admin_url, url, name, state)
        if not before:
            time.sleep(0.005)
            continue
        os.kill(member.pid, signal.SIGSTOP)
        time.sleep(0.5)
        after = sessions_holding_locks(admin_url, url, name)
        if any(after.get(pid) == start for pid, start in before.items()):
            return
        os.kill(member.pid, signal.SIGCONT)
    raise AssertionError(f"{member.name} was never caught inside a transaction")


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.parametrize(
    "between",
    [
        pytest.param("idle in transaction", id="between-statements"),
        pytest.param("active", id="in-mid-pipeline"),
    ],
)
def test_a_member_paused_inside_its_batch_transaction_is_taken_over_and_writes_nothing_stale(
    kafka_topics: KafkaTopics, pg: str, postgres_admin_url: str, tmp_path: Path, between: str
) -> None:
    story = stories.generate(clusters=150, seed=101, prefix="frz")
    events = list(story.events)
    outputs, replay_url = replay(events, tmp_path / "reference")
    expected = {e["id"]: e for e in outputs}
    common = {
        "GOCLUSTER_KAFKA_MAX_POLL_RECORDS": "20",
        "GOCLUSTER_DB_LOCK_TIMEOUT_MS": "2000",
        "GOCLUSTER_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": "3000",
    }
    env = service_env(kafka_topics.env(), common, {"GOCLUSTER_DATABASE_URL": pg})
    every_partition = {f"{t}/{p}" for t in kafka_topics.inputs for p in range(3)}

    with (
        ServiceProcess(env, CONSUMER_ONLY, name="a", log_dir=tmp_path) as a,
        ServiceProcess(env, name="b", log_dir=tmp_path) as b,
    ):
        wait_until(lambda: a.assigned() and b.assigned(), 60, "a and b to share the partitions")
        publish(kafka_topics, events)
        # Its sessions carry its pid in their application_name (gocluster/<pid>).
        pause_inside_a_transaction(a, postgres_admin_url, pg, f"gocluster/{a.pid}", between)
        paused_at = time.monotonic()
        assert inbox_count(pg) < len(events), "the stream was done before the pause"
        wait_until(lambda: b.assigned() == every_partition, 60, "b to take a's partitions")
        wait_until(lambda: inbox_count(pg) == len(events), 90, "b to apply every event")
        applied_s = time.monotonic() - paused_at

        rejoined = a.count("partitions assigned")
        a.resume()
        a.wait_for_log("partitions assigned", timeout_s=60, count=rejoined + 1)
        wait_until(lambda: unsent_count(pg) == 0, 60, "the outbox drained")
        records = event_outputs(kafka_topics, len(expected), settle_s=3.0)
        assert a.terminate() == 0
        assert b.terminate() == 0

    print(f"every event applied {applied_s:.1f} s after the member was paused in its transaction")
    assert unique_outputs(records) == expected
    assert inbox_outcomes(pg) == dict.fromkeys(story.event_keys, "applied")
    assert a.count("event applied") + b.count("event applied") == len(events)
    assert history_causes(pg) == history_causes(replay_url)
    assert final_state(pg) == final_state(replay_url)


CONSUMER_ONLY = ("run", "--clock", "event", "--only", "consumer")


@contextlib.contextmanager
def frozen_mid_pipeline(url: str, statement: str) -> Iterator[list[BaseException]]:
    """A gocluster-named session that ran `statement` in a pipeline and sent nothing more
    (no Sync): what a process SIGSTOPped inside an executemany leaves behind. Yields
    the errors that ending the pipeline met (once the server ended the session)."""
    libpq = make_url(url).set(drivername="postgresql").render_as_string(False)
    errors: list[BaseException] = []
    with psycopg.connect(libpq, application_name="gocluster/frozen") as frozen:
        try:
            with frozen.pipeline():
                frozen.execute(statement)
                yield errors
        except psycopg.OperationalError as exc:
            errors.append(exc)


@contextlib.contextmanager
def frozen_after_executemany(url: str, limits: SessionLimits) -> Iterator[list[BaseException]]:
    """A session with the service's limits that ran an executemany (psycopg pipelines it)
    in an open transaction and then went quiet: the server's idle timer stays off."""
    db = create_db_engine(url, limits=limits)
    errors: list[BaseException] = []
    try:
        with db.connect() as frozen:
            frozen.begin()
            frozen.execute(
                update(partition_progress)
                .where(partition_progress.c.topic == bindparam("b_topic"))
                .values(next_offset=bindparam("n")),
                [{"b_topic": "t", "n": 1}, {"b_topic": "t", "n": 2}],
            )
            yield errors
            try:
                frozen.rollback()
            except OperationalError as exc:
                errors.append(exc)
    finally:
        db.dispose()


@pytest.mark.parametrize("freeze", ["mid-pipeline", "after-executemany"])
def test_a_lock_timeout_ends_a_frozen_session_that_the_server_timeout_misses(
    postgres_url: str, freeze: str
) -> None:
    """Frozen between the statements of a pipeline, a session is "active"; frozen after
    a pipelined executemany, its idle timer is off. No server timeout ends either (before
    PostgreSQL 17); the instance whose lock wait timed out does."""
    limits = SessionLimits(lock_timeout_ms=300, idle_in_transaction_timeout_ms=500)
    db = create_db_engine(postgres_url, limits=limits)
    upgrade(db)
    row = {"topic": "t", "partition": 0, "next_offset": 0, "updated_at": datetime.now(UTC)}
    with db.begin() as conn:
        conn.execute(partition_progress.insert(), [row])

    def move() -> None:
        with db.begin() as conn:
            conn.execute(update(partition_progress).values(next_offset=3))

    frozen = (
        frozen_mid_pipeline(postgres_url, "UPDATE partition_progress SET next_offset = 1")
        if freeze == "mid-pipeline"
        else frozen_after_executemany(postgres_url, limits)
    )
    try:
        with frozen as ended:
            time.sleep(1.0)  # twice the idle timeout: the server has not ended it
            with pytest.raises(OperationalError, match="lock timeout"):
                move()
            move()  # the frozen session was ended: its lock is free
        assert ended, "the frozen session was not ended"
    finally:
        db.dispose()


def test_database_sessions_carry_lock_and_idle_transaction_timeouts(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    try:
        with engine.connect() as conn:
            lock = conn.execute(text("SHOW lock_timeout")).scalar_one()
            idle = conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one()
            keepalive = conn.execute(text("SHOW tcp_keepalives_idle")).scalar_one()
    finally:
        engine.dispose()
    # The defaults: a lock wait gives up after 30 s (and the batch is retried), a session
    # idle inside a transaction for a minute is ended (its locks released), and the
    # server probes a silent client after 30 s.
    assert (lock, idle, keepalive) == ("30s", "1min", "30")
