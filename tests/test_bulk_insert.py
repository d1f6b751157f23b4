"""workflows/store/bulk.py stores what SQLAlchemy Core's insert stores, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, Table, insert, select
from sqlalchemy.exc import IntegrityError

from workflows.store.bulk import insert_rows
from workflows.store.tables import history, inbox, outbox

BERLIN = timezone(timedelta(hours=2))
AT = datetime(2026, 5, 4, 9, 30, 15, 123456, tzinfo=BERLIN)


def rows_of(db: Engine, table: Table, key: str) -> list[dict[str, Any]]:
    with db.connect() as conn:
        found = [dict(r) for r in conn.execute(select(table)).mappings()]
    return sorted(found, key=lambda r: str(r[key]))


def test_inbox_history_and_outbox_rows_read_back_as_core_stores_them(db_engine: Engine) -> None:
    def inbox_row(n: int) -> dict[str, Any]:
        return {
            "source": f"/src/{n % 2}",
            "event_id": f"e{n}",
            "cluster_id": "c-1",
            "digest": "d" * 64,
            "outcome": "applied",
            "received_at": AT + timedelta(seconds=n),
        }

    def history_row(n: int) -> dict[str, Any]:
        return {
            "cluster_id": f"c-{n}",
            "at": AT,
            "cause_id": f"e{n}",
            "cause_type": "gocluster.application.submitted",
            "from_state": None if n % 2 else "applied",
            "to_state": "admitted",
            "note": "ü; \"quoted\" 'note'",
            "recorded_at": AT.astimezone(UTC),
        }

    def outbox_row(n: int) -> dict[str, Any]:
        return {
            "event_id": f"o{n}" if n % 2 else None,
            "cluster_id": f"c-{n}",
            "stream": "labels" if n % 2 else "dlq",
            "payload": {"data": {"n": n, "text": "ü", "nested": [1, None, {"x": 1.5}]}},
            "created_at": AT,
            "sent_at": None if n % 2 else AT + timedelta(days=1),
        }

    with db_engine.begin() as conn:
        insert_rows(conn, inbox, [inbox_row(n) for n in range(0, 4)])
        conn.execute(insert(inbox), [inbox_row(n) for n in range(4, 8)])
        insert_rows(conn, history, [history_row(n) for n in range(0, 4)])
        conn.execute(insert(history), [history_row(n) for n in range(4, 8)])
        insert_rows(conn, outbox, [outbox_row(n) for n in range(0, 4)])
        conn.execute(insert(outbox), [outbox_row(n) for n in range(4, 8)])
        insert_rows(conn, outbox, [])  # nothing to write: no statement

    for table, key, make in (
        (inbox, "event_id", inbox_row),
        (history, "cause_id", history_row),
        (outbox, "cluster_id", outbox_row),
    ):
        stored = rows_of(db_engine, table, key)
        for row in stored:
            row.pop("id", None)
            row.pop("seq", None)
        expected = sorted((make(n) for n in range(8)), key=lambda r: str(r[key]))
        assert stored == expected, table.name
        for row in stored:  # aware UTC, whichever way they were written
            for value in row.values():
                if isinstance(value, datetime):
                    assert value.tzinfo is not None
                    assert value.utcoffset() == timedelta(0)


def test_a_duplicate_inbox_row_raises_sqlalchemys_integrity_error(db_engine: Engine) -> None:
    """The engine splits a batch on IntegrityError: the bulk path must raise that, not the
    driver's own exception."""
    row = {
        "source": "/src",
        "event_id": "e1",
        "cluster_id": "c-1",
        "digest": "d",
        "outcome": "applied",
        "received_at": AT,
    }
    with pytest.raises(IntegrityError), db_engine.begin() as conn:
        insert_rows(conn, inbox, [row, dict(row)])
    assert rows_of(db_engine, inbox, "event_id") == []
