"""The office's views as text: aligned tables for a terminal, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import BaseModel

from office.models import ClusterSummary, Deadline, NextDeadline
from workflows.aggregate import LabelStatus


def as_json(items: Sequence[BaseModel]) -> str:
    return json.dumps([i.model_dump(mode="json") for i in items], indent=2, ensure_ascii=False)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def clusters_table(clusters: Sequence[ClusterSummary]) -> str:
    if not clusters:
        return "no clusters match"
    rows = []
    for c in clusters:
        held = ", ".join(
            f"{lb.level} until {lb.valid_until}"
            for lb in sorted(c.labels, key=lambda lb: lb.valid_until)
            if lb.status is LabelStatus.VALID
        )
        rows.append(
            [c.cluster_id, c.cluster_name or "-", c.state, held or "-", _next(c.next_deadline)]
        )
    header = ["CLUSTER", "NAME", "STATE", "VALID LABELS", "NEXT DEADLINE"]
    return table(header, rows) + f"\n\n{len(clusters)} clusters"


def deadlines_table(deadlines: Sequence[Deadline]) -> str:
    if not deadlines:
        return "no open deadlines in this window"
    rows = [
        [
            str(d.due_on),
            str(d.days_left),
            d.status,
            d.cluster_id,
            d.cluster_name or "-",
            d.obligation,
        ]
        for d in deadlines
    ]
    header = ["DUE ON", "DAYS LEFT", "STATUS", "CLUSTER", "NAME", "OBLIGATION"]
    return table(header, rows) + f"\n\n{len(deadlines)} open deadlines"


def _next(deadline: NextDeadline | None) -> str:
    if deadline is None:
        return "-"
    return f"{deadline.obligation} {deadline.due_on} ({deadline.status}, {deadline.days_left} d)"
