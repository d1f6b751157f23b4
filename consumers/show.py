"""`gocluster show`: one cluster, readable by a person (or as JSON)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from consumers import parked
from consumers.bootstrap import App
from workflows.store.queries import cluster_view


def render(app: App, cluster_id: str, *, as_json: bool = False) -> str | None:
    with app.db.connect() as conn:
        view = cluster_view(conn, cluster_id)
    if view is None:
        return None
    if as_json:
        return json.dumps(view, default=str, indent=2)
    zone = app.policy.zone
    c = view["cluster"]
    today = app.clock.now().astimezone(zone).date()
    lines = [
        f"{c['cluster_name'] or cluster_id} ({cluster_id})",
        f"  organisation  {c['organisation'] or '-'}, {c['federal_state'] or '-'}",
        f"  state         {c['state']}  (application cycle {c['cycle']}"
        + (f", admitted {c['admitted_on']})" if c["admitted_on"] else ")"),
        "",
        "Labels",
    ]
    for lb in view["labels"] or []:
        current = lb["status"] == "valid" and lb["valid_until"] >= today
        awarded = f"awarded {lb['awarded_on']}" if lb["awarded_on"] else "held at entry"
        renewal = ", renewal" if lb["renewal"] else ""
        lines.append(
            f"  {lb['level']:<7} {awarded}, valid until {lb['valid_until']}{renewal}"
            f"  [{'valid' if current else lb['status']}]"
        )
    if not view["labels"]:
        lines.append("  none")
    lines += ["", "Obligations"]
    for ob in view["obligations"]:
        left = (ob["due_on"] - today).days if isinstance(ob["due_on"], date) else 0
        when = f", {left} days left" if ob["status"] == "open" and left >= 0 else ""
        lines.append(f"  {ob['kind']:<17} due {ob['due_on']}  [{ob['status']}{when}]")
    if not view["obligations"]:
        lines.append("  none")
    lines += ["", "Pending timers"]
    for t in view["timers"]:
        extra = f" ({t['days_left']} days)" if t["days_left"] else ""
        lines.append(f"  {t['due_at'].astimezone(zone):%Y-%m-%d %H:%M %Z}  {t['kind']}{extra}")
    if not view["timers"]:
        lines.append("  none")
    lines += ["", "Parked events (waiting for a state)"]
    for row in parked.parked_rows(app, cluster_id):
        lines.append("  " + parked.line(app, row).removeprefix(f"{cluster_id}  "))
    if not view["parked"]:
        lines.append("  none")
    lines += ["", "History"]
    for h in view["history"]:
        arrow = (
            f"{h['from_state'] or '-'} -> {h['to_state']}"
            if h["from_state"] != h["to_state"]
            else (h["to_state"] or "")
        )
        lines.append(_history_line(h, arrow, zone))
    return "\n".join(lines)


def _history_line(h: dict[str, Any], arrow: str, zone: Any) -> str:
    at = h["at"].astimezone(zone).strftime("%Y-%m-%d")
    note = f"  {h['note']}" if h["note"] else ""
    return f"  {at}  {h['cause_type']:<32} {arrow}{note}"
