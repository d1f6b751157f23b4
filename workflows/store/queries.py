"""Read-only views for `gocluster show` and the tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from workflows.store.tables import clusters, history, labels, obligations, timers


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
        "timers": [t for t in rows(timers, timers.c.due_at) if t["status"] == "pending"],
        "history": rows(history, history.c.id),
    }
