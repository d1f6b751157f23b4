"""Read-only views for `gocluster show`, `gocluster parked`, the operator gauges and the tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from workflows.aggregate import TimerKind
from workflows.store.tables import (
    PENDING_TIMER,
    clusters,
    history,
    labels,
    obligations,
    outbox,
    parked,
    timers,
)


def cluster_view(conn: Connection, cluster_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(clusters).where(clusters.c.cluster_id == cluster_id)).mappings()
    found = row.first()
    if found is None:
        return None
    by_cluster = {"cluster_id": cluster_id}

    def rows(table: Any, *order: Any) -> list[dict[str, Any]]:
        query = select(table).filter_by(**by_cluster).order_by(*order)
        return [dict(r) for r in conn.execute(query).mappings()]

    return {
        "cluster": dict(found),
        "labels": rows(labels, labels.c.valid_until, labels.c.level),
        "obligations": rows(obligations, obligations.c.due_on, obligations.c.kind),
        "timers": [
            dict(r)
            for r in conn.execute(
                select(timers)
                .where(timers.c.cluster_id == cluster_id, PENDING_TIMER)
                .order_by(timers.c.due_at)
            ).mappings()
        ],
        "history": rows(history, history.c.id),
        "parked": parked_view(conn, cluster_id),
    }


def backlog(
    conn: Connection, now: datetime, breach_allowance: timedelta = timedelta(0)
) -> dict[str, Any]:
    """What waits, as numbers for the operator gauges: unsent outbox rows, parked events,
    pending timers, and the oldest of each: since when the oldest timer could have fired
    by `now`. A breach can fire only `breach_allowance` after its due time (the wall
    clock's late_result_allowance), so it is not overdue before then."""
    unsent = conn.execute(
        select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.sent_at.is_(None))
    ).one()
    waiting = conn.execute(select(func.count(), func.min(parked.c.parked_at))).one()
    pending = PENDING_TIMER
    timer_count = conn.execute(select(func.count()).where(pending)).scalar_one()
    breach = timers.c.kind == TimerKind.BREACH.value
    other_since = conn.execute(
        select(func.min(timers.c.due_at)).where(pending, ~breach, timers.c.due_at <= now)
    ).scalar_one()
    breach_due = conn.execute(
        select(func.min(timers.c.due_at)).where(
            pending, breach, timers.c.due_at <= now - breach_allowance
        )
    ).scalar_one()
    breach_since = _aware(breach_due)
    fireable = [
        _aware(other_since),
        breach_since + breach_allowance if breach_since is not None else None,
    ]
    overdue_since = min((t for t in fireable if t is not None), default=None)
    return {
        "outbox_unsent": int(unsent[0]),
        "outbox_oldest": _aware(unsent[1]),
        "parked": int(waiting[0]),
        "parked_oldest": _aware(waiting[1]),
        "timers_pending": int(timer_count),
        "timer_overdue_since": overdue_since,
    }


def parked_view(
    conn: Connection, cluster_id: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Parked events, oldest first: what waits (type, id, source), for which cluster,
    since when, and its effective time."""
    query = select(
        parked.c.id,
        parked.c.cluster_id,
        parked.c.source,
        parked.c.event_id,
        parked.c.effective_at,
        parked.c.parked_at,
        parked.c.event,
        parked.c.origin,
    ).order_by(parked.c.parked_at, parked.c.id)
    if cluster_id is not None:
        query = query.where(parked.c.cluster_id == cluster_id)
    rows = []
    for row in conn.execute(query.limit(limit)).mappings():
        event = row["event"] if isinstance(row["event"], dict) else {}
        origin = row["origin"] if isinstance(row["origin"], dict) else {}
        rows.append(
            {
                "cluster_id": row["cluster_id"],
                "event_id": row["event_id"],
                "source": row["source"],
                "type": event.get("type"),
                "effective_at": row["effective_at"],
                "parked_at": row["parked_at"],
                "topic": origin.get("topic"),
                "partition": origin.get("partition"),
                "offset": origin.get("offset"),
            }
        )
    return rows


def _aware(value: Any) -> datetime | None:
    """min() over a UTCDateTime column comes back raw (naive on SQLite)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    aware: datetime = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware
