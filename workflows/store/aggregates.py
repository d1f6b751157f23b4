"""Load and save cluster aggregates, a batch of clusters at a time.

Loading locks the cluster rows (PostgreSQL `FOR UPDATE`, in key order so two
instances never deadlock); saving writes only what the batch created or
changed, with executemany, and checks the version it loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from schemas.messages import Level
from workflows.aggregate import (
    ACTIVE_OBLIGATION,
    Cluster,
    Label,
    LabelStatus,
    Obligation,
    ObligationKind,
    ObligationStatus,
    Timer,
    TimerKind,
    TimerStatus,
)
from workflows.store.bulk import insert_rows
from workflows.store.tables import PENDING_TIMER, clusters, labels, obligations, timers

_TIMERS_PER_CLUSTER = 4  # the first window of due timers read for each cluster wanted


class StaleAggregate(RuntimeError):
    """Another writer changed a cluster since it was loaded; the batch is retried."""


def load(
    conn: Connection, cluster_ids: Iterable[str], *, skip_locked: bool = False
) -> dict[str, Cluster]:
    ids = sorted(set(cluster_ids))
    if not ids:
        return {}
    if not skip_locked and conn.dialect.name == "postgresql":
        _lock_ids(conn, ids)
    query = (
        select(clusters)
        .where(clusters.c.cluster_id.in_(ids))
        .order_by(clusters.c.cluster_id)
        .with_for_update(skip_locked=skip_locked)
    )
    found: dict[str, Cluster] = {}
    for row in conn.execute(query).mappings():
        found[row["cluster_id"]] = Cluster(
            cluster_id=row["cluster_id"],
            state=row["state"],
            cycle=row["cycle"],
            version=row["version"],
            cluster_name=row["cluster_name"],
            organisation=row["organisation"],
            federal_state=row["federal_state"],
            admitted_on=row["admitted_on"],
            persisted=True,
        )
    if not found:
        return found
    keys = list(found)
    for row in conn.execute(select(labels).where(labels.c.cluster_id.in_(keys))).mappings():
        found[row["cluster_id"]].labels.append(_label(row))
    active = [s.value for s in ACTIVE_OBLIGATION]
    query_obl = select(obligations).where(
        obligations.c.cluster_id.in_(keys), obligations.c.status.in_(active)
    )
    for row in conn.execute(query_obl).mappings():
        found[row["cluster_id"]].obligations.append(_obligation(row))
    query_tim = select(timers).where(timers.c.cluster_id.in_(keys), PENDING_TIMER)
    for row in conn.execute(query_tim).mappings():
        found[row["cluster_id"]].timers.append(_timer(row))
    return found


def _lock_ids(conn: Connection, ids: list[str]) -> None:
    """Serialise writers of one cluster id even while it has no row to lock yet.

    FOR UPDATE locks only existing rows: an interview parked for a cluster that
    does not exist yet would be invisible to a concurrent transaction creating and
    admitting that cluster, and would wait until park_ttl for nothing. A
    transaction-scoped advisory lock per id, taken in key order (no deadlock),
    closes that gap. The timer loop (skip_locked) needs no such lock: it only
    touches existing clusters, whose row locks it respects.
    """
    unnested = func.unnest(bindparam("ids", type_=ARRAY(String))).table_valued("id")
    keys = select(func.hashtextextended(unnested.render_derived().c.id, 0).label("key"))
    ordered = keys.distinct().subquery()
    # One round trip; the volatile lock function runs above the sort, in key order.
    conn.execute(
        select(func.pg_advisory_xact_lock(ordered.c.key)).order_by(ordered.c.key), {"ids": ids}
    )


def _label(row: Any) -> Label:
    return Label(
        row["label_id"],
        row["cluster_id"],
        Level(row["level"]),
        row["awarded_on"],
        row["valid_until"],
        row["interview_id"],
        row["renewal"],
        LabelStatus(row["status"]),
        row["cause_id"],
        persisted=True,
    )


def _obligation(row: Any) -> Obligation:
    return Obligation(
        row["obligation_id"],
        row["cluster_id"],
        ObligationKind(row["kind"]),
        row["cycle"],
        row["due_on"],
        ObligationStatus(row["status"]),
        row["cause_id"],
        row["closed_by"],
        persisted=True,
    )


def _timer(row: Any) -> Timer:
    return Timer(
        row["timer_id"],
        row["cluster_id"],
        TimerKind(row["kind"]),
        row["due_at"],
        row["ref"],
        TimerStatus(row["status"]),
        row["days_left"],
        persisted=True,
    )


def save(conn: Connection, aggregates: Sequence[Cluster], now: datetime) -> None:
    new = [c for c in aggregates if not c.persisted]
    changed = [c for c in aggregates if c.persisted and c.changed]
    if new:
        insert_rows(conn, clusters, [_cluster_row(c, now) | {"version": 1} for c in new])
    if changed:
        stmt = (
            update(clusters)
            .where(clusters.c.cluster_id == bindparam("b_id"))
            .where(clusters.c.version == bindparam("b_version"))
            .values(
                state=bindparam("state"),
                cycle=bindparam("cycle"),
                version=bindparam("version"),
                cluster_name=bindparam("cluster_name"),
                organisation=bindparam("organisation"),
                federal_state=bindparam("federal_state"),
                admitted_on=bindparam("admitted_on"),
                updated_at=bindparam("updated_at"),
            )
        )
        rows = [
            _cluster_row(c, now)
            | {"b_id": c.cluster_id, "b_version": c.version, "version": c.version + 1}
            for c in changed
        ]
        result = conn.execute(stmt, rows)
        if conn.dialect.supports_sane_multi_rowcount and result.rowcount != len(rows):
            raise StaleAggregate("a cluster changed under this batch")
    _save_children(conn, aggregates, now)
    for cluster in aggregates:
        if cluster.changed or not cluster.persisted:
            cluster.version = cluster.version + 1 if cluster.persisted else 1
        _mark_clean(cluster)


def _cluster_row(c: Cluster, now: datetime) -> dict[str, Any]:
    return {
        "cluster_id": c.cluster_id,
        "state": c.state,
        "cycle": c.cycle,
        "cluster_name": c.cluster_name,
        "organisation": c.organisation,
        "federal_state": c.federal_state,
        "admitted_on": c.admitted_on,
        "updated_at": now,
    }


def _save_children(conn: Connection, aggregates: Sequence[Cluster], now: datetime) -> None:
    all_labels = [lb for c in aggregates for lb in c.labels]
    all_obligations = [o for c in aggregates for o in c.obligations]
    all_timers = [t for c in aggregates for t in c.timers]
    new_labels = [_label_row(lb) for lb in all_labels if not lb.persisted]
    if new_labels:
        insert_rows(conn, labels, new_labels)
    changed_labels = [
        {"b_id": lb.label_id, "status": lb.status.value}
        for lb in all_labels
        if lb.persisted and lb.changed
    ]
    if changed_labels:
        conn.execute(
            update(labels)
            .where(labels.c.label_id == bindparam("b_id"))
            .values(status=bindparam("status")),
            changed_labels,
        )
    new_obl = [_obligation_row(o) for o in all_obligations if not o.persisted]
    if new_obl:
        insert_rows(conn, obligations, new_obl)
    changed_obl = [
        {"b_id": o.obligation_id, "status": o.status.value, "closed_by": o.closed_by}
        for o in all_obligations
        if o.persisted and o.changed
    ]
    if changed_obl:
        conn.execute(
            update(obligations)
            .where(obligations.c.obligation_id == bindparam("b_id"))
            .values(status=bindparam("status"), closed_by=bindparam("closed_by")),
            changed_obl,
        )
    # A timer set and cancelled within this transaction never needs a row.
    new_timers = [
        _timer_row(t, now)
        for t in all_timers
        if not t.persisted and t.status is not TimerStatus.CANCELLED
    ]
    if new_timers:
        insert_rows(conn, timers, new_timers)
    changed_timers = [
        {"b_id": t.timer_id, "status": t.status.value, "closed_at": _closed_at(t, now)}
        for t in all_timers
        if t.persisted and t.changed
    ]
    if changed_timers:
        conn.execute(
            update(timers)
            .where(timers.c.timer_id == bindparam("b_id"))
            .values(status=bindparam("status"), closed_at=bindparam("closed_at")),
            changed_timers,
        )


def _label_row(lb: Label) -> dict[str, Any]:
    return {
        "label_id": lb.label_id,
        "cluster_id": lb.cluster_id,
        "level": lb.level.value,
        "awarded_on": lb.awarded_on,
        "valid_until": lb.valid_until,
        "interview_id": lb.interview_id,
        "renewal": lb.renewal,
        "status": lb.status.value,
        "cause_id": lb.cause_id,
    }


def _obligation_row(o: Obligation) -> dict[str, Any]:
    return {
        "obligation_id": o.obligation_id,
        "cluster_id": o.cluster_id,
        "kind": o.kind.value,
        "cycle": o.cycle,
        "due_on": o.due_on,
        "status": o.status.value,
        "cause_id": o.cause_id,
        "closed_by": o.closed_by,
    }


def _closed_at(t: Timer, now: datetime) -> datetime | None:
    """When a timer fired or was cancelled: retention counts its age from then."""
    return None if t.status is TimerStatus.PENDING else now


def _timer_row(t: Timer, now: datetime) -> dict[str, Any]:
    return {
        "timer_id": t.timer_id,
        "cluster_id": t.cluster_id,
        "kind": t.kind.value,
        "due_at": t.due_at,
        "ref": t.ref,
        "days_left": t.days_left,
        "status": t.status.value,
        "closed_at": _closed_at(t, now),
    }


def _mark_clean(cluster: Cluster) -> None:
    cluster.persisted = True
    cluster.changed = False
    for child in (*cluster.labels, *cluster.obligations, *cluster.timers):
        child.persisted = True
        child.changed = False
    cluster.timers = [t for t in cluster.timers if t.status is TimerStatus.PENDING]
    cluster.obligations = [o for o in cluster.obligations if o.status in ACTIVE_OBLIGATION]


def due_clusters(
    conn: Connection, until: datetime, limit: int, breaches_until: datetime | None = None
) -> list[str]:
    """Clusters with a pending timer due by `until` (a breach: by `breaches_until` where
    given), earliest first: by their earliest due timer, then cluster id.

    The next due timers are read in that order from the pending timers' index, a window
    at a time, until they name `limit` clusters: a round costs the same whatever the
    size of the backlog behind it.
    """
    due = timers.c.due_at <= until
    if breaches_until is not None:
        due = and_(
            due,
            or_(timers.c.kind != TimerKind.BREACH.value, timers.c.due_at <= breaches_until),
        )
    window = max(1, limit) * _TIMERS_PER_CLUSTER
    while True:
        query = (
            select(timers.c.cluster_id)
            .where(PENDING_TIMER, due)
            .order_by(timers.c.due_at, timers.c.cluster_id)
            .limit(window)
        )
        rows = list(conn.execute(query).scalars())
        found = list(dict.fromkeys(rows))  # first appearance: earliest due timer
        if len(found) >= limit or len(rows) < window:
            return found[:limit]
        window *= 4  # clusters with many due timers each: look further


def next_due(
    conn: Connection, after: datetime, breach_allowance: timedelta = timedelta(0)
) -> datetime | None:
    """When the next pending timer comes due after `after`: a breach only
    `breach_allowance` after its due time (the wall clock's late_result_allowance)."""
    breach = timers.c.kind == TimerKind.BREACH.value
    other = conn.execute(
        select(func.min(timers.c.due_at)).where(PENDING_TIMER, ~breach, timers.c.due_at > after)
    ).scalar_one()
    first_breach = conn.execute(
        select(func.min(timers.c.due_at)).where(
            PENDING_TIMER, breach, timers.c.due_at > after - breach_allowance
        )
    ).scalar_one()
    times = [other, first_breach + breach_allowance if first_breach is not None else None]
    return min((t for t in times if t is not None), default=None)
