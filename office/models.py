"""The shapes of the programme office's views: one definition for the CLI's `--json`,
the HTTP API (and its OpenAPI document) and the dashboard's templates.

Dates are RFC 3339 full-dates (`2026-12-01`); instants are RFC 3339 date-times
with the policy time zone's offset (`2026-09-03T00:00:00+02:00`), as in the
service's output events.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas.messages import Level
from workflows.aggregate import (
    LabelStatus,
    MemberState,
    ObligationKind,
    ObligationStatus,
    TimerKind,
)

DeadlineStatus = Literal["open", "breached"]


class LabelView(BaseModel):
    level: Level
    awarded_on: date | None = Field(description="null for a label the cluster held at entry")
    valid_until: date
    status: LabelStatus = Field(
        description="as of today: a valid label past valid_until is expired"
    )
    renewal: bool
    interview_id: str | None


class NextDeadline(BaseModel):
    obligation: ObligationKind
    due_on: date
    status: DeadlineStatus
    days_left: int = Field(description="due_on minus today; negative once the date has passed")


class Deadline(NextDeadline):
    """An open obligation: unmet and not cancelled, breached ones included."""

    cluster_id: str
    cluster_name: str | None
    uid: str = Field(description="stable identity, also the UID of its iCalendar event")


class ClusterSummary(BaseModel):
    cluster_id: str
    cluster_name: str | None
    organisation: str | None
    federal_state: str | None
    state: MemberState
    cycle: int = Field(description="application cycle: 2 after a second application")
    admitted_on: date | None
    current_label: Level | None = Field(description="the highest valid label")
    labels: list[LabelView]
    next_deadline: NextDeadline | None = Field(
        description="the earliest open obligation, a breached one first (it is the most overdue)"
    )
    updated_at: datetime


class ObligationView(BaseModel):
    obligation: ObligationKind
    due_on: date
    status: ObligationStatus
    days_left: int | None = Field(description="only while the obligation is open or breached")


class TimerView(BaseModel):
    kind: TimerKind
    due_at: datetime
    days_left: int | None = Field(description="for reminders: the days they announce")


class HistoryEntryView(BaseModel):
    at: datetime
    cause_type: str
    cause_id: str
    from_state: str | None
    to_state: str | None
    note: str


class ParkedEventView(BaseModel):
    event_id: str
    source: str
    type: str | None
    effective_at: datetime
    parked_at: datetime


class ClusterDetail(ClusterSummary):
    obligations: list[ObligationView]
    timers: list[TimerView] = Field(description="pending timers, in firing order")
    parked: list[ParkedEventView]
    history: list[HistoryEntryView]


class RejectionView(BaseModel):
    seq: int = Field(description="position in the outbox: newer rejections have higher numbers")
    error_class: str
    error_message: str
    event_id: str | None = Field(description="the rejected event's id, when it could be read")
    event_type: str | None
    cluster_id: str | None
    topic: str | None
    partition: int | None
    offset: int | None
    at: datetime
    published: bool = Field(description="already on the DLQ topic")


class ExpiringLabel(BaseModel):
    cluster_id: str
    cluster_name: str | None
    level: Level
    valid_until: date
    days_left: int


class Overview(BaseModel):
    today: date
    clusters: int
    by_state: dict[MemberState, int]
    by_label: dict[Level, int] = Field(description="clusters holding a valid label of each level")
    breaches: list[Deadline] = Field(description="breached obligations, still unmet")
    due_30_days: list[Deadline] = Field(description="open obligations due in the next 30 days")
    due_90_days: list[Deadline] = Field(description="open obligations due in the next 90 days")
    expiring_labels: list[ExpiringLabel] = Field(description="valid labels ending within 90 days")
    rejections: int = Field(description="input records in the dead-letter queue")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]
