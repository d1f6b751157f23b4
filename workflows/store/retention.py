"""Retention: delete what is past its horizon, in small batches, never what is still needed.

What each table gives up, and what it never does:
- inbox: rows received before the horizon, except those of events still parked
  (their row says `parked` until the event is applied, refused or expired);
- outbox: rows sent before the horizon; an unsent row is never deleted;
- timers: timers fired or cancelled before the horizon; a pending timer is never
  deleted;
- history: rows recorded before the horizon, only when a horizon is set (it is
  the audit trail).
Parked events, clusters, labels and obligations are state, not logs: never pruned.
Each batch is its own short transaction, so pruning never holds many locks or
one huge delete, and several instances may prune at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, delete, func, select, tuple_

from workflows.aggregate import TimerStatus
from workflows.store.tables import history, inbox, outbox, timers

TABLES = ("inbox", "outbox", "timers", "history")
_CLOSED_TIMERS = [TimerStatus.FIRED.value, TimerStatus.CANCELLED.value]


@dataclass(frozen=True)
class Horizons:
    """How long each table keeps a row that is no longer needed; None keeps it for ever."""

    inbox: timedelta | None = None
    outbox: timedelta | None = None
    timers: timedelta | None = None
    history: timedelta | None = None

    def of(self, table: str) -> timedelta | None:
        horizon: timedelta | None = getattr(self, table)
        return horizon


def _prunable(table: str, cutoff: datetime) -> tuple[Any, Select[Any]]:
    """(the table's key, a query of the keys of its prunable rows, oldest first)."""
    key: Any
    if table == "inbox":
        key = tuple_(inbox.c.source, inbox.c.event_id)
        query = (
            select(inbox.c.source, inbox.c.event_id)
            .where(inbox.c.received_at < cutoff, inbox.c.outcome != "parked")
            .order_by(inbox.c.received_at)
        )
    elif table == "outbox":
        key = outbox.c.seq
        query = (
            select(outbox.c.seq)
            .where(outbox.c.sent_at.is_not(None), outbox.c.sent_at < cutoff)
            .order_by(outbox.c.sent_at, outbox.c.seq)
        )
    elif table == "timers":
        key = timers.c.timer_id
        query = (
            select(timers.c.timer_id)
            .where(timers.c.status.in_(_CLOSED_TIMERS), timers.c.closed_at < cutoff)
            .order_by(timers.c.closed_at)
        )
    elif table == "history":
        key = history.c.id
        query = select(history.c.id).where(history.c.recorded_at < cutoff).order_by(history.c.id)
    else:
        raise ValueError(f"no retention for table {table!r}")
    return key, query


def count(db: Engine, table: str, cutoff: datetime) -> int:
    """How many rows of `table` pruning would delete now."""
    _, query = _prunable(table, cutoff)
    with db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def prune_batch(db: Engine, table: str, cutoff: datetime, batch: int) -> int:
    """Delete up to `batch` of the oldest prunable rows of `table`, in one transaction."""
    key, query = _prunable(table, cutoff)
    target = {"inbox": inbox, "outbox": outbox, "timers": timers, "history": history}[table]
    with db.begin() as conn:
        result = conn.execute(delete(target).where(key.in_(query.limit(batch))))
    return int(result.rowcount)


def prune(
    db: Engine,
    horizons: Horizons,
    now: datetime,
    *,
    batch: int = 1000,
    dry_run: bool = False,
    stop: threading.Event | None = None,
) -> dict[str, int | None]:
    """Table -> rows deleted (or, with `dry_run`, that would be); None where it keeps all.

    Batch after batch until a batch comes back short or `stop` is set.
    """
    done: dict[str, int | None] = {}
    for table in TABLES:
        horizon = horizons.of(table)
        if horizon is None:
            done[table] = None
            continue
        cutoff = now - horizon
        if dry_run:
            done[table] = count(db, table, cutoff)
            continue
        total = 0
        while stop is None or not stop.is_set():
            deleted = prune_batch(db, table, cutoff, batch)
            total += deleted
            if deleted < batch:
                break
        done[table] = total
    return done
