"""Inbox (dedupe), outbox (the only path to Kafka) and parked events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, update

from workflows.store.aggregates import StaleAggregate
from workflows.store.bulk import insert_rows
from workflows.store.tables import inbox, outbox, parked, parked_wakeups

IN_CLAUSE_CHUNK = 500  # keeps parameter counts well under every backend's limit


def _chunks(items: Sequence[Any], size: int = IN_CLAUSE_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- inbox ---------------------------------------------------------------------


def seen(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(source, id) -> digest of the events already received."""
    found: dict[tuple[str, str], str] = {}
    by_source: dict[str, set[str]] = {}
    for source, event_id in keys:
        by_source.setdefault(source, set()).add(event_id)
    # One `source = ? AND event_id IN (...)` per source: PostgreSQL plans a list of
    # row tuples ~10x slower than this, and a batch has a handful of sources.
    for source, event_ids in sorted(by_source.items()):
        for chunk in _chunks(sorted(event_ids)):
            query = select(inbox.c.event_id, inbox.c.digest).where(
                inbox.c.source == source, inbox.c.event_id.in_(list(chunk))
            )
            for event_id, digest in conn.execute(query):
                found[(source, event_id)] = digest
    return found


def record_received(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    insert_rows(conn, inbox, rows)


def set_outcomes(conn: Connection, outcomes: Sequence[tuple[str, str, str]]) -> None:
    """(source, id, outcome) for parked events that were later applied or refused."""
    if outcomes:
        conn.execute(
            update(inbox)
            .where(inbox.c.source == bindparam("b_source"))
            .where(inbox.c.event_id == bindparam("b_id"))
            .values(outcome=bindparam("outcome")),
            [{"b_source": s, "b_id": i, "outcome": o} for s, i, o in outcomes],
        )


# -- outbox --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    event_id: str | None
    cluster_id: str | None
    stream: str
    payload: dict[str, Any]


def enqueue(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    insert_rows(conn, outbox, rows)


def unsent(conn: Connection, limit: int, after_seq: int = 0) -> list[OutboxRow]:
    query = (
        select(
            outbox.c.seq, outbox.c.event_id, outbox.c.cluster_id, outbox.c.stream, outbox.c.payload
        )
        .where(outbox.c.sent_at.is_(None), outbox.c.seq > after_seq)
        .order_by(outbox.c.seq)
        .limit(limit)
    )
    return [OutboxRow(*row) for row in conn.execute(query)]


def since(conn: Connection, after_seq: int, limit: int) -> list[OutboxRow]:
    query = (
        select(
            outbox.c.seq, outbox.c.event_id, outbox.c.cluster_id, outbox.c.stream, outbox.c.payload
        )
        .where(outbox.c.seq > after_seq)
        .order_by(outbox.c.seq)
        .limit(limit)
    )
    return [OutboxRow(*row) for row in conn.execute(query)]


def last_seq(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(outbox.c.seq), 0))).scalar_one())


def mark_sent(conn: Connection, seqs: Sequence[int], at: datetime) -> None:
    for chunk in _chunks(list(seqs)):
        conn.execute(update(outbox).where(outbox.c.seq.in_(list(chunk))).values(sent_at=at))


# -- parked events -------------------------------------------------------------


@dataclass(eq=False)
class ParkedEvent:
    row_id: int | None
    cluster_id: str
    source: str
    event_id: str
    effective_at: datetime
    parked_at: datetime
    event: dict[str, Any]
    origin: dict[str, Any]
    event_type: str | None = None  # None: parked before types were stored
    decoded: Any = None  # the validated event, once a batch has decoded it (not stored)


def parked_for(conn: Connection, cluster_ids: Sequence[str]) -> dict[str, list[ParkedEvent]]:
    found: dict[str, list[ParkedEvent]] = {}
    for chunk in _chunks(sorted(set(cluster_ids))):
        query = select(parked).where(parked.c.cluster_id.in_(list(chunk))).order_by(parked.c.id)
        for row in conn.execute(query).mappings():
            found.setdefault(row["cluster_id"], []).append(_parked(row))
    return found


def expired_parked(conn: Connection, parked_before: datetime, limit: int) -> list[ParkedEvent]:
    query = (
        select(parked)
        .where(parked.c.parked_at <= parked_before)
        .order_by(parked.c.parked_at, parked.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_parked(row) for row in conn.execute(query).mappings()]


def parked_counts(conn: Connection, cluster_ids: Sequence[str]) -> dict[str, int]:
    """How many parked events each of these clusters has (most have none: no release to
    look for, and they are left out)."""
    found: dict[str, int] = {}
    for chunk in _chunks(sorted(set(cluster_ids))):
        query = (
            select(parked.c.cluster_id, func.count())
            .where(parked.c.cluster_id.in_(list(chunk)))
            .group_by(parked.c.cluster_id)
        )
        found.update((cluster_id, int(count)) for cluster_id, count in conn.execute(query))
    return found


def releasable(
    conn: Connection,
    cluster_id: str,
    event_types: Iterable[str],
    effective_until: datetime,
    limit: int,
    skip: Sequence[int] = (),
) -> list[ParkedEvent]:
    """One cluster's parked events of these types, effective by `effective_until`, in
    effective-time order: the ones its state may release, the first `limit` of them."""
    query = (
        select(parked)
        .where(
            parked.c.cluster_id == cluster_id,
            parked.c.effective_at <= effective_until,
            or_(parked.c.event_type.in_(sorted(event_types)), parked.c.event_type.is_(None)),
        )
        .order_by(parked.c.effective_at, parked.c.id)
        .limit(limit)
    )
    if skip:
        query = query.where(parked.c.id.not_in(list(skip)))
    return [_parked(row) for row in conn.execute(query).mappings()]


# -- wake-ups of parked events -------------------------------------------------


def wakeups(conn: Connection, cluster_ids: Sequence[str]) -> dict[str, datetime]:
    found: dict[str, datetime] = {}
    for chunk in _chunks(sorted(set(cluster_ids))):
        query = select(parked_wakeups).where(parked_wakeups.c.cluster_id.in_(list(chunk)))
        found.update((row.cluster_id, row.wake_at) for row in conn.execute(query))
    return found


def due_wakeups(conn: Connection, until: datetime, limit: int) -> list[str]:
    """Clusters whose parked events are due a look by `until`, earliest first."""
    query = (
        select(parked_wakeups.c.cluster_id)
        .where(parked_wakeups.c.wake_at <= until)
        .order_by(parked_wakeups.c.wake_at, parked_wakeups.c.cluster_id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def earliest_beyond(
    conn: Connection, cluster_ids: Sequence[str], edge: datetime
) -> dict[str, datetime]:
    """Per cluster, the earliest effective time of a parked event beyond `edge`."""
    found: dict[str, datetime] = {}
    for chunk in _chunks(sorted(set(cluster_ids))):
        query = (
            select(parked.c.cluster_id, func.min(parked.c.effective_at))
            .where(parked.c.cluster_id.in_(list(chunk)), parked.c.effective_at > edge)
            .group_by(parked.c.cluster_id)
        )
        found.update((cluster_id, at) for cluster_id, at in conn.execute(query))
    return found


def set_wakeups(conn: Connection, wake: dict[str, datetime | None]) -> None:
    """Replace these clusters' wake-ups; None removes one."""
    for chunk in _chunks(sorted(wake)):
        conn.execute(delete(parked_wakeups).where(parked_wakeups.c.cluster_id.in_(list(chunk))))
    rows = [{"cluster_id": c, "wake_at": at} for c, at in sorted(wake.items()) if at is not None]
    if rows:
        conn.execute(insert(parked_wakeups), rows)


def _parked(row: Any) -> ParkedEvent:
    return ParkedEvent(
        row["id"],
        row["cluster_id"],
        row["source"],
        row["event_id"],
        row["effective_at"],
        row["parked_at"],
        row["event"],
        row["origin"],
        row["event_type"],
    )


def park(conn: Connection, events: Sequence[ParkedEvent]) -> None:
    if events:
        conn.execute(
            insert(parked),
            [
                {
                    "cluster_id": p.cluster_id,
                    "source": p.source,
                    "event_id": p.event_id,
                    "effective_at": p.effective_at,
                    "parked_at": p.parked_at,
                    "event": p.event,
                    "origin": p.origin,
                    "event_type": p.event_type,
                }
                for p in events
            ],
        )


def unpark(conn: Connection, row_ids: Sequence[int]) -> None:
    """Remove parked events this transaction applied, refused or expired.

    A row already gone means another instance took the same parked event (an
    apply racing the expiry of a parked event at its TTL): the batch is stale and
    is retried, so the event has one effect, never both "applied" and "expired".
    """
    for chunk in _chunks(list(row_ids)):
        result = conn.execute(delete(parked).where(parked.c.id.in_(list(chunk))))
        if result.rowcount != len(chunk):
            raise StaleAggregate("a parked event was taken by another writer")
