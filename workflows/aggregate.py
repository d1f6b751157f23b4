"""The cluster aggregate: what the workflow knows about one cluster.

Children (labels, obligations, timers) carry two flags so the store writes
only what a batch created or changed: a batch of 500 events touches a few
rows per cluster, not every row the cluster ever had.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from schemas.messages import Level, OutputType


class MemberState(StrEnum):
    UNKNOWN = "unknown"  # no submission processed yet; shown as `from: null`
    APPLIED = "applied"
    ADMITTED = "admitted"
    IN_BREACH = "in_breach"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    EXCLUDED = "excluded"


MEMBER_STATES = frozenset({MemberState.ADMITTED, MemberState.IN_BREACH})


class ObligationKind(StrEnum):
    BRONZE_INTERVIEW = "bronze_interview"
    SILVER_LABEL = "silver_label"
    LABEL_RENEWAL = "label_renewal"


class ObligationStatus(StrEnum):
    OPEN = "open"
    MET = "met"
    BREACHED = "breached"  # passed unmet, still unmet
    CURED = "cured"  # met after it was breached
    CANCELLED = "cancelled"


ACTIVE_OBLIGATION = frozenset({ObligationStatus.OPEN, ObligationStatus.BREACHED})


class LabelStatus(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"  # continued seamlessly by a renewal


class TimerKind(StrEnum):
    # The value order is the firing order for timers due at the same instant.
    LABEL_EXPIRY = "label_expiry"
    REMINDER = "reminder"
    BREACH = "breach"
    EXCLUSION = "exclusion"


TIMER_PRIORITY = {kind: rank for rank, kind in enumerate(TimerKind)}


class TimerStatus(StrEnum):
    PENDING = "pending"
    FIRED = "fired"
    CANCELLED = "cancelled"


@dataclass(eq=False)
class Tracked:
    """Dirty tracking for the store: new rows are inserted, changed rows updated."""

    persisted: bool = field(default=False, kw_only=True, repr=False)
    changed: bool = field(default=False, kw_only=True, repr=False)

    def touch(self) -> None:
        self.changed = True


@dataclass(eq=False)
class Label(Tracked):
    label_id: str
    cluster_id: str
    level: Level
    awarded_on: date | None  # None for a label the cluster held at entry
    valid_until: date
    interview_id: str | None
    renewal: bool
    status: LabelStatus
    cause_id: str

    def valid_on(self, day: date) -> bool:
        return self.status is LabelStatus.VALID and self.valid_until >= day


@dataclass(eq=False)
class Obligation(Tracked):
    obligation_id: str
    cluster_id: str
    kind: ObligationKind
    cycle: int
    due_on: date
    status: ObligationStatus
    cause_id: str
    closed_by: str | None = None


@dataclass(eq=False)
class Timer(Tracked):
    timer_id: str
    cluster_id: str
    kind: TimerKind
    due_at: datetime
    ref: str  # the obligation or label it belongs to
    status: TimerStatus = TimerStatus.PENDING
    days_left: int | None = None

    @property
    def order(self) -> tuple[datetime, int, str]:
        return (self.due_at, TIMER_PRIORITY[self.kind], self.timer_id)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    cluster_id: str
    at: datetime
    cause_id: str
    cause_type: str
    from_state: str | None
    to_state: str | None
    note: str


@dataclass(frozen=True, slots=True)
class Output:
    """An output event the workflow decided to emit; the outbox turns it into a record."""

    event_id: str
    type: OutputType
    cluster_id: str
    time: datetime
    data: dict[str, Any]


@dataclass(eq=False)
class Cluster:
    cluster_id: str
    state: str = MemberState.UNKNOWN.value
    cycle: int = 0
    version: int = 0
    cluster_name: str | None = None
    organisation: str | None = None
    federal_state: str | None = None
    admitted_on: date | None = None
    labels: list[Label] = field(default_factory=list)
    obligations: list[Obligation] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    persisted: bool = False
    changed: bool = False

    @property
    def member_state(self) -> MemberState:
        return MemberState(self.state)

    def pending_timers(self) -> list[Timer]:
        return sorted(
            (t for t in self.timers if t.status is TimerStatus.PENDING), key=lambda t: t.order
        )

    def active_obligations(self) -> list[Obligation]:
        return [o for o in self.obligations if o.status in ACTIVE_OBLIGATION]

    def valid_labels(self, day: date) -> list[Label]:
        return [label for label in self.labels if label.valid_on(day)]
