"""Cheap looks at a phase's database and output topics while the service runs."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import Engine, column, func, or_, select, table
from sqlalchemy.exc import SQLAlchemyError

from tests.dbutil import lock_waiters
from tests.service_process import wait_until
from workflows.store.database import create_db_engine
from workflows.store.tables import inbox, outbox, parked, timers

__all__ = ["OutputWatcher", "Probe"]


class Probe:
    """Counts from the campaign's database; None while the database is down."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_db_engine(url)

    def _scalar(self, query: Any) -> int | None:
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(query).scalar_one())
        except SQLAlchemyError:
            return None

    def inbox(self) -> int | None:
        return self._scalar(select(func.count()).select_from(inbox))

    def parked(self) -> int | None:
        return self._scalar(select(func.count()).select_from(parked))

    def unsent(self) -> int | None:
        return self._scalar(select(func.count()).where(outbox.c.sent_at.is_(None)))

    def outbox(self) -> int | None:
        return self._scalar(select(func.count()).select_from(outbox))

    def last_seq(self) -> int | None:
        return self._scalar(select(func.coalesce(func.max(outbox.c.seq), 0)))

    def sent_events(self) -> int | None:
        """Output events (not DLQ records) the relay has marked sent."""
        query = select(func.count()).where(outbox.c.sent_at.is_not(None), outbox.c.stream != "dlq")
        return self._scalar(query)

    def dlq_rows(self) -> int | None:
        return self._scalar(select(func.count()).where(outbox.c.stream == "dlq"))

    def fired(self) -> int | None:
        return self._scalar(select(func.count()).where(timers.c.status == "fired"))

    def pending_due(self, until: datetime) -> int | None:
        query = select(func.count()).where(timers.c.status == "pending", timers.c.due_at <= until)
        return self._scalar(query)

    def busy_sessions(self, tables: Sequence[str] = ("timers", "clusters")) -> int | None:
        """Other sessions of this database inside a statement or transaction on these tables
        (PostgreSQL; start-up's schema check does not count)."""
        if self.engine.dialect.name != "postgresql":
            return None
        activity = table(
            "pg_stat_activity", column("datname"), column("state"), column("pid"), column("query")
        )
        query = (
            select(func.count())
            .select_from(activity)
            .where(activity.c.datname == func.current_database())
            .where(activity.c.pid != func.pg_backend_pid())
            .where(activity.c.state.in_(("active", "idle in transaction")))
            .where(or_(*[activity.c.query.contains(name) for name in tables]))
        )
        return self._scalar(query)

    def lock_waiters(self) -> int | None:
        """Sessions of this database waiting for a lock another one holds (PostgreSQL)."""
        if self.engine.dialect.name != "postgresql":
            return None
        try:
            return lock_waiters(self.engine)
        except SQLAlchemyError:
            return None

    def pending_due_times(self, until: datetime) -> list[datetime]:
        query = (
            select(timers.c.due_at)
            .where(timers.c.status == "pending", timers.c.due_at <= until)
            .order_by(timers.c.due_at)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def close(self) -> None:
        self.engine.dispose()


class OutputWatcher(threading.Thread):
    """Reads the output topics as they fill (assign, not subscribe): which event ids the
    broker already has. With the outbox's sent marks this shows when a relay has
    published rows it has not marked yet, the moment a kill makes it publish them again."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        super().__init__(name="output-watcher", daemon=True)
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.ids: set[str] = set()
        self.records = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def seen(self) -> int:
        with self._lock:
            return len(self.ids)

    def copies(self) -> int:
        """Records beyond the first of each id: identical re-publications."""
        with self._lock:
            return self.records - len(self.ids)

    def run(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
        )
        try:
            parts = []
            for topic in self.topics:
                found = wait_until(lambda t=topic: consumer.partitions_for_topic(t), 30, topic)
                parts += [TopicPartition(topic, p) for p in sorted(found)]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            while not self.stop.is_set():
                polled = consumer.poll(timeout_ms=5)
                fresh = [json.loads(r.value)["id"] for batch in polled.values() for r in batch]
                with self._lock:
                    self.ids.update(fresh)
                    self.records += len(fresh)
        finally:
            consumer.close()
