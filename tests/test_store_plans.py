"""The store's recurring queries use their indexes, on SQLite and PostgreSQL alike.

Each query is the one the store itself sends (captured on its way to the driver),
explained by the backend (`EXPLAIN QUERY PLAN` / `EXPLAIN`) over tables filled
enough, and analysed, for a planner to prefer an index where one fits: most timers
fired or cancelled, most parked events recent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert

from workflows.store import aggregates, messages
from workflows.store.tables import clusters, parked, timers

NOW = datetime(2026, 6, 1, tzinfo=UTC)
TIMERS = 12_000
PARKED = 6_000


def fill(engine: Engine) -> None:
    statuses = ("fired", "cancelled", "fired", "pending")
    with engine.begin() as conn:
        conn.execute(
            insert(clusters),
            [
                {"cluster_id": f"c{n:05d}", "state": "admitted", "cycle": 1, "version": 1}
                | {"updated_at": NOW}
                for n in range(TIMERS // 3)
            ],
        )
        conn.execute(
            insert(timers),
            [
                {
                    "timer_id": f"t{n:06d}",
                    "cluster_id": f"c{n // 3:05d}",
                    "kind": "reminder",
                    "due_at": NOW + timedelta(minutes=n - TIMERS // 2),
                    "ref": "ref",
                    "days_left": 30,
                    "status": statuses[n % 4],
                    "closed_at": None if n % 4 == 3 else NOW,
                }
                for n in range(TIMERS)
            ],
        )
        conn.execute(
            insert(parked),
            [
                {
                    "cluster_id": f"c{n % 500:05d}",
                    "source": "/ecei/benchmarking",
                    "event_id": f"e{n}",
                    "effective_at": NOW,
                    "parked_at": NOW - timedelta(minutes=n),  # a few are old enough to expire
                    "event": {},
                    "origin": {},
                    "event_type": "interview.scheduled",
                }
                for n in range(PARKED)
            ],
        )
        conn.exec_driver_sql("ANALYZE")


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL and parameters the store sends while inside."""
    seen: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def plan_of(engine: Engine, call: Callable[[Connection], Any], table: str) -> str:
    """The backend's plan of the store's one statement that reads `table` in `call`."""
    with captured(engine) as seen, engine.begin() as conn:
        call(conn)
    statements = [(s, p) for s, p in seen if f"FROM {table}" in s]
    assert len(statements) == 1, seen
    statement, parameters = statements[0]
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            return "\n".join(str(row[-1]) for row in rows)
        rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        return "\n".join(str(row[0]) for row in rows)


@pytest.fixture
def filled(db_engine: Engine) -> Engine:
    fill(db_engine)
    return db_engine


def test_the_due_timer_selection_reads_the_pending_timers_index_in_due_order(
    filled: Engine,
) -> None:
    plan = plan_of(filled, lambda conn: aggregates.due_clusters(conn, NOW, 200, NOW), "timers")
    assert "ix_timers_pending_due_at" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # SQLite: no sort of the backlog
    assert "Sort" not in plan, plan  # PostgreSQL: none either


def test_a_clusters_timers_load_from_the_pending_timers_index(filled: Engine) -> None:
    ids = [f"c{n:05d}" for n in range(0, 4000, 40)]

    def load(conn: Connection) -> None:
        aggregates.load(conn, ids, skip_locked=True)

    plan = plan_of(filled, load, "timers")
    assert "ix_timers_pending_cluster_id" in plan, plan


def test_expired_parked_events_are_found_through_the_parked_at_index(filled: Engine) -> None:
    cutoff = NOW - timedelta(minutes=PARKED - 20)  # the 20 oldest
    plan = plan_of(filled, lambda conn: messages.expired_parked(conn, cutoff, 500), "parked")
    assert "ix_parked_parked_at" in plan, plan
    assert "SCAN parked\n" not in f"{plan}\n", plan  # SQLite: no full scan
    assert "Seq Scan" not in plan, plan  # PostgreSQL: none either
