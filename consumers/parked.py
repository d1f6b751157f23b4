"""`gocluster parked` (and the parked section of `gocluster show`): what waits, since
when, and for what.

An event is parked while its cluster's state does not allow it yet (an interview
result before the admission, from the other topic), or while its effective time lies
ahead of the service clock. It is applied as soon as that changes, or goes to the DLQ
as `expired_park` after the policy's `park_ttl`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select

from consumers.bootstrap import App
from workflows.store.queries import parked_view
from workflows.store.tables import clusters


def parked_rows(app: App, cluster_id: str | None = None) -> list[dict[str, Any]]:
    """The parked events, oldest first, each with `waits_for`, `waited` and `expires_at`."""
    now = app.clock.now()
    with app.db.connect() as conn:
        rows = parked_view(conn, cluster_id)
        ids = sorted({r["cluster_id"] for r in rows})
        states = dict(
            conn.execute(
                select(clusters.c.cluster_id, clusters.c.state).where(
                    clusters.c.cluster_id.in_(ids)
                )
            ).all()
        )
    for row in rows:
        row["cluster_state"] = states.get(row["cluster_id"])
        row["waits_for"] = waits_for(row, row["cluster_state"], now)
        row["waited_s"] = int((now - row["parked_at"]).total_seconds())
        row["expires_at"] = row["parked_at"] + app.policy.park_ttl
    return rows


def waits_for(row: dict[str, Any], state: str | None, now: datetime) -> str:
    if row["effective_at"] > now:
        return (
            f"the service clock to reach its effective time {row['effective_at']:%Y-%m-%d %H:%M}Z"
        )
    return f"the cluster's admission (cluster now {state or 'unknown'})"


def render(app: App, rows: list[dict[str, Any]], *, as_json: bool = False) -> str:
    if as_json:
        return "\n".join(json.dumps(r, default=str, sort_keys=True) for r in rows)
    if not rows:
        return "no parked events"
    return "\n".join(line(app, r) for r in rows)


def line(app: App, row: dict[str, Any]) -> str:
    zone = app.policy.zone
    since = row["parked_at"].astimezone(zone)
    return (
        f"{row['cluster_id']}  {row['type'] or '?'} {row['event_id']}"
        f"  parked {since:%Y-%m-%d %H:%M %Z} ({_duration(row['waited_s'])} ago)"
        f"  waits for {row['waits_for']}"
        f"  expires {row['expires_at'].astimezone(zone):%Y-%m-%d %H:%M %Z}"
        f"  from {row['topic']}/{row['partition']}@{row['offset']}"
    )


def _duration(seconds: int) -> str:
    if seconds >= 86_400:
        return f"{seconds // 86_400} d {seconds % 86_400 // 3600} h"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s"
