"""Read-only queries across clusters: what the programme office's views are built from.

`queries.cluster_view` reads one cluster; these read the whole programme in a
few statements (one per table, not one per cluster), so a list of thousands
of clusters costs the same handful of round trips as a list of ten.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, func, select

from workflows.aggregate import ACTIVE_OBLIGATION
from workflows.store.tables import clusters, labels, obligations, outbox, parked

Row = dict[str, Any]


def cluster_rows(conn: Connection, states: Collection[str] = ()) -> list[Row]:
    """Every cluster (or those in `states`), by id."""
    query = select(clusters).order_by(clusters.c.cluster_id)
    if states:
        query = query.where(clusters.c.state.in_(sorted(states)))
    return [dict(r) for r in conn.execute(query).mappings()]


def label_rows(conn: Connection) -> list[Row]:
    """Every label of every cluster, oldest validity first."""
    query = select(labels).order_by(labels.c.cluster_id, labels.c.valid_until, labels.c.level)
    return [dict(r) for r in conn.execute(query).mappings()]


def active_obligation_rows(conn: Connection) -> list[Row]:
    """Obligations still unmet and not cancelled (open or breached), earliest due first."""
    query = (
        select(obligations, clusters.c.cluster_name)
        .join(clusters, clusters.c.cluster_id == obligations.c.cluster_id)
        .where(obligations.c.status.in_(sorted(ACTIVE_OBLIGATION)))
        .order_by(obligations.c.due_on, obligations.c.cluster_id, obligations.c.kind)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def parked_rows(conn: Connection, cluster_id: str) -> list[Row]:
    """Events of one cluster waiting for the state they need, in arrival order."""
    query = select(parked).where(parked.c.cluster_id == cluster_id).order_by(parked.c.id)
    return [dict(r) for r in conn.execute(query).mappings()]


def dlq_rows(conn: Connection, limit: int) -> list[Row]:
    """The latest rejected input records (outbox rows of the `dlq` stream), newest first."""
    query = (
        select(
            outbox.c.seq,
            outbox.c.cluster_id,
            outbox.c.payload,
            outbox.c.created_at,
            outbox.c.sent_at,
        )
        .where(outbox.c.stream == "dlq")
        .order_by(outbox.c.seq.desc())
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def dlq_count(conn: Connection) -> int:
    query = select(func.count()).select_from(outbox).where(outbox.c.stream == "dlq")
    return int(conn.execute(query).scalar_one())
