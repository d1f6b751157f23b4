"""Store rows -> the office's views, as of a given day.

Everything that depends on "today" happens here: a label stored as valid whose
`valid_until` has passed is shown expired (its expiry timer may not have fired
yet, e.g. under `--today` ahead of the service clock), and `days_left` counts
from today.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from office.models import (
    ClusterDetail,
    ClusterSummary,
    Deadline,
    ExpiringLabel,
    HistoryEntryView,
    LabelView,
    NextDeadline,
    ObligationView,
    Overview,
    ParkedEventView,
    TimerView,
)
from schemas.messages import Level
from workflows.aggregate import ACTIVE_OBLIGATION, LabelStatus, MemberState
from workflows.store import views
from workflows.store.queries import cluster_view

Row = dict[str, Any]
LEVEL_RANK = {level: rank for rank, level in enumerate(Level)}
SOON_DAYS = 90  # "expires soon" and the overview's longer deadline horizon
SHORT_DAYS = 30


def label_view(row: Row, today: date) -> LabelView:
    status = LabelStatus(row["status"])
    if status is LabelStatus.VALID and row["valid_until"] < today:
        status = LabelStatus.EXPIRED
    return LabelView(
        level=Level(row["level"]),
        awarded_on=row["awarded_on"],
        valid_until=row["valid_until"],
        status=status,
        renewal=bool(row["renewal"]),
        interview_id=row["interview_id"],
    )


def current_label(labels: Iterable[LabelView]) -> Level | None:
    valid = [lb.level for lb in labels if lb.status is LabelStatus.VALID]
    return max(valid, key=LEVEL_RANK.__getitem__, default=None)


def deadline(row: Row, today: date) -> Deadline:
    return Deadline(
        **_next(row, today).model_dump(),
        cluster_id=row["cluster_id"],
        cluster_name=row["cluster_name"],
        uid=row["obligation_id"],
    )


def in_window(due_on: date, today: date, start: date, end: date) -> bool:
    """Due within [start, end]; an overdue one (due before today, still unmet) shows in
    every window that contains today, however long ago it fell due."""
    return start <= due_on <= end or (due_on < today and start <= today <= end)


def deadlines(conn: Connection, today: date, start: date, end: date) -> list[Deadline]:
    rows = views.active_obligation_rows(conn)
    return [deadline(r, today) for r in rows if in_window(r["due_on"], today, start, end)]


def clusters(
    conn: Connection,
    today: date,
    zone: ZoneInfo,
    states: Collection[str] = (),
    label: Level | None = None,
    search: str | None = None,
) -> list[ClusterSummary]:
    """Clusters in `states`, holding a valid `label`, whose id, name or organisation
    contains `search` (case-insensitive); each filter only when given."""
    labels_of: dict[str, list[LabelView]] = {}
    for row in views.label_rows(conn):
        labels_of.setdefault(row["cluster_id"], []).append(label_view(row, today))
    next_of: dict[str, NextDeadline] = {}
    for row in views.active_obligation_rows(conn):  # earliest due first
        next_of.setdefault(row["cluster_id"], _next(row, today))
    found = []
    for row in views.cluster_rows(conn, states):
        held = labels_of.get(row["cluster_id"], [])
        if label is not None and not any(
            lb.level is label and lb.status is LabelStatus.VALID for lb in held
        ):
            continue
        if search and not _matches(row, search):
            continue
        found.append(_summary(row, held, next_of.get(row["cluster_id"]), zone))
    return found


def cluster_detail(
    conn: Connection, cluster_id: str, today: date, zone: ZoneInfo
) -> ClusterDetail | None:
    view = cluster_view(conn, cluster_id)
    if view is None:
        return None
    labels = [label_view(r, today) for r in view["labels"]]
    active = [r for r in view["obligations"] if r["status"] in ACTIVE_OBLIGATION]
    first = min(active, key=lambda r: r["due_on"], default=None)
    summary = _summary(view["cluster"], labels, first and _next(first, today), zone)
    return ClusterDetail(
        **summary.model_dump(),
        obligations=[
            ObligationView(
                obligation=r["kind"],
                due_on=r["due_on"],
                status=r["status"],
                days_left=(r["due_on"] - today).days if r in active else None,
            )
            for r in view["obligations"]
        ],
        timers=[
            TimerView(kind=t["kind"], due_at=t["due_at"].astimezone(zone), days_left=t["days_left"])
            for t in view["timers"]
        ],
        parked=[_parked(p, zone) for p in views.parked_rows(conn, cluster_id)],
        history=[
            HistoryEntryView(
                at=h["at"].astimezone(zone),
                cause_type=h["cause_type"],
                cause_id=h["cause_id"],
                from_state=h["from_state"],
                to_state=h["to_state"],
                note=h["note"],
            )
            for h in view["history"]
        ],
    )


def overview(conn: Connection, today: date, zone: ZoneInfo) -> Overview:
    summaries = clusters(conn, today, zone)
    by_state = dict.fromkeys(MemberState, 0)
    del by_state[MemberState.UNKNOWN]  # no cluster row is ever in it
    by_label = dict.fromkeys(Level, 0)
    expiring = []
    for c in summaries:
        by_state[c.state] = by_state.get(c.state, 0) + 1
        for level in {lb.level for lb in c.labels if lb.status is LabelStatus.VALID}:
            by_label[level] += 1
        expiring += [
            ExpiringLabel(
                cluster_id=c.cluster_id,
                cluster_name=c.cluster_name,
                level=lb.level,
                valid_until=lb.valid_until,
                days_left=(lb.valid_until - today).days,
            )
            for lb in c.labels
            if lb.status is LabelStatus.VALID and lb.valid_until <= today + timedelta(SOON_DAYS)
        ]
    active = [deadline(r, today) for r in views.active_obligation_rows(conn)]
    return Overview(
        today=today,
        clusters=len(summaries),
        by_state=by_state,
        by_label=by_label,
        breaches=[d for d in active if d.status == "breached"],
        due_30_days=[d for d in active if d.status == "open" and 0 <= d.days_left <= SHORT_DAYS],
        due_90_days=[d for d in active if d.status == "open" and 0 <= d.days_left <= SOON_DAYS],
        expiring_labels=sorted(expiring, key=lambda e: (e.valid_until, e.cluster_id)),
        rejections=views.dlq_count(conn),
    )


# -- helpers ------------------------------------------------------------------


def _next(row: Row, today: date) -> NextDeadline:
    return NextDeadline(
        obligation=row["kind"],
        due_on=row["due_on"],
        status=row["status"],
        days_left=(row["due_on"] - today).days,
    )


def _summary(
    row: Row, labels: list[LabelView], next_deadline: NextDeadline | None, zone: ZoneInfo
) -> ClusterSummary:
    updated: datetime = row["updated_at"]
    return ClusterSummary(
        cluster_id=row["cluster_id"],
        cluster_name=row["cluster_name"],
        organisation=row["organisation"],
        federal_state=row["federal_state"],
        state=row["state"],
        cycle=row["cycle"],
        admitted_on=row["admitted_on"],
        current_label=current_label(labels),
        labels=labels,
        next_deadline=next_deadline,
        updated_at=updated.astimezone(zone),
    )


def _matches(row: Row, search: str) -> bool:
    needle = search.casefold().strip()
    fields = (row["cluster_id"], row["cluster_name"], row["organisation"])
    return any(needle in (f or "").casefold() for f in fields)


def _parked(row: Row, zone: ZoneInfo) -> ParkedEventView:
    event = row["event"] if isinstance(row["event"], dict) else {}
    return ParkedEventView(
        event_id=row["event_id"],
        source=row["source"],
        type=event.get("type") if isinstance(event.get("type"), str) else None,
        effective_at=row["effective_at"].astimezone(zone),
        parked_at=row["parked_at"].astimezone(zone),
    )
