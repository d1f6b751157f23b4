"""The operator gauges' backlog query: a breach held back by the late-result allowance is
not overdue before the allowance has passed; any other due timer is overdue at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert

from workflows.store.queries import backlog
from workflows.store.tables import timers

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
ALLOWANCE = timedelta(days=7)


def _timer(engine: Engine, timer_id: str, kind: str, due_at: datetime) -> None:
    row = {"timer_id": timer_id, "cluster_id": "c-1", "kind": kind, "due_at": due_at}
    with engine.begin() as conn:
        conn.execute(insert(timers), [row | {"ref": "o-1", "days_left": None, "status": "pending"}])


def test_a_breach_within_its_allowance_is_not_overdue(db_engine: Engine) -> None:
    _timer(db_engine, "b-1", "breach", NOW - timedelta(days=3))
    with db_engine.connect() as conn:
        assert backlog(conn, NOW, ALLOWANCE)["timer_overdue_since"] is None
        # Without an allowance (tick, --clock event) it is overdue since its due time.
        assert backlog(conn, NOW)["timer_overdue_since"] == NOW - timedelta(days=3)


def test_a_breach_past_its_allowance_is_overdue_since_the_allowance_ended(
    db_engine: Engine,
) -> None:
    _timer(db_engine, "b-1", "breach", NOW - timedelta(days=10))
    with db_engine.connect() as conn:
        assert backlog(conn, NOW, ALLOWANCE)["timer_overdue_since"] == NOW - timedelta(days=3)


def test_a_due_reminder_is_overdue_since_its_due_time_whatever_the_allowance(
    db_engine: Engine,
) -> None:
    _timer(db_engine, "b-1", "breach", NOW - timedelta(days=10))
    _timer(db_engine, "r-1", "reminder", NOW - timedelta(days=5))
    _timer(db_engine, "r-2", "reminder", NOW + timedelta(days=1))
    with db_engine.connect() as conn:
        found = backlog(conn, NOW, ALLOWANCE)
    assert found["timer_overdue_since"] == NOW - timedelta(days=5)
    assert found["timers_pending"] == 3
