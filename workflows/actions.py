"""What the statechart's callbacks do to the aggregate: open and close
obligations, set and cancel timers, award and expire labels, and record the
output events to emit. In-memory only; the store persists the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from schemas.messages import Level, OutputType
from workflows import ids, rules
from workflows.aggregate import (
    Cluster,
    HistoryEntry,
    Label,
    LabelStatus,
    Obligation,
    ObligationKind,
    ObligationStatus,
    Output,
    Timer,
    TimerKind,
    TimerStatus,
)
from workflows.dates import add_months, local_date, passes_at, start_of_day
from workflows.policy import Policy


@dataclass
class Step:
    """One cause being applied: an input event or a fired timer."""

    cluster_id: str
    cause_key: str  # unique per cause; seeds the output ids
    cause_id: str  # what output events cite as `cause_id`
    cause_source: str  # and as `cause_source`: (source, id) identify the cause
    cause_type: str
    at: datetime  # effective time
    outputs: list[Output] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    # The W3C traceparent of the work that decided this step (the input record's apply
    # span); its outputs carry it. Data handed in by the caller: the domain does no tracing.
    trace: str | None = None

    def emit(self, kind: OutputType, time: datetime, **data: object) -> None:
        event_id = ids.output_id(self.cause_key, len(self.outputs))
        payload = {
            "cluster_id": self.cluster_id,
            **data,
            "cause_id": self.cause_id,
            "cause_source": self.cause_source,
        }
        self.outputs.append(Output(event_id, kind, self.cluster_id, time, payload))

    def note(self, text: str) -> None:
        self.notes.append(text)


class Actions:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def today(self, step: Step) -> date:
        return local_date(step.at, self.policy.zone)

    # -- timers ---------------------------------------------------------------

    def set_timer(
        self, cluster: Cluster, kind: TimerKind, due_at: datetime, ref: str, days: int | None
    ) -> None:
        timer_id = ids.timer_id(cluster.cluster_id, kind, ref, due_at, days)
        if any(t.timer_id == timer_id for t in cluster.timers):
            return
        cluster.timers.append(
            Timer(timer_id, cluster.cluster_id, kind, due_at, ref, days_left=days)
        )

    def cancel_timers(self, cluster: Cluster, ref: str) -> None:
        for timer in cluster.timers:
            if timer.ref == ref and timer.status is TimerStatus.PENDING:
                timer.status = TimerStatus.CANCELLED
                timer.touch()

    # -- obligations ----------------------------------------------------------

    def open_obligation(
        self, cluster: Cluster, kind: ObligationKind, due_on: date, step: Step
    ) -> None:
        oid = ids.obligation_id(cluster.cluster_id, cluster.cycle, kind, due_on)
        if any(o.obligation_id == oid for o in cluster.obligations):
            return
        cluster.obligations.append(
            Obligation(
                oid,
                cluster.cluster_id,
                kind,
                cluster.cycle,
                due_on,
                ObligationStatus.OPEN,
                step.cause_id,
            )
        )
        zone = self.policy.zone
        for days, day in rules.reminder_days(self.policy, due_on, self.today(step)):
            self.set_timer(cluster, TimerKind.REMINDER, start_of_day(day, zone), oid, days)
        self.set_timer(cluster, TimerKind.BREACH, passes_at(due_on, zone), oid, None)
        step.note(f"{kind} due {due_on}")

    def close_obligations(
        self, cluster: Cluster, kinds: frozenset[ObligationKind], step: Step
    ) -> None:
        for obligation in cluster.active_obligations():
            if obligation.kind not in kinds:
                continue
            was = obligation.status
            obligation.status = (
                ObligationStatus.CURED if was is ObligationStatus.BREACHED else ObligationStatus.MET
            )
            obligation.closed_by = step.cause_id
            obligation.touch()
            self.cancel_timers(cluster, obligation.obligation_id)
            step.note(f"{obligation.kind} {obligation.status}")

    def cancel_obligations(self, cluster: Cluster, step: Step) -> None:
        """Withdrawal and exclusion end every obligation; labels keep their own timers."""
        for obligation in cluster.active_obligations():
            obligation.status = ObligationStatus.CANCELLED
            obligation.closed_by = step.cause_id
            obligation.touch()
            self.cancel_timers(cluster, obligation.obligation_id)
        self.cancel_timers(cluster, _exclusion_ref(cluster))

    def breached_kinds(self, cluster: Cluster) -> frozenset[ObligationKind]:
        return frozenset(
            o.kind for o in cluster.obligations if o.status is ObligationStatus.BREACHED
        )

    # -- labels ---------------------------------------------------------------

    def add_label(self, cluster: Cluster, label: Label) -> None:
        cluster.labels.append(label)
        expires = passes_at(label.valid_until, self.policy.zone)
        self.set_timer(cluster, TimerKind.LABEL_EXPIRY, expires, label.label_id, None)

    def award(
        self, cluster: Cluster, level: Level, on: date, interview_id: str, step: Step
    ) -> None:
        validity = rules.award_validity(self.policy, cluster, level, on)
        if validity.previous is not None and validity.previous.status is LabelStatus.VALID:
            validity.previous.status = LabelStatus.SUPERSEDED
            validity.previous.touch()
            self.cancel_timers(cluster, validity.previous.label_id)
        label = Label(
            ids.label_id(cluster.cluster_id, level, step.cause_key),
            cluster.cluster_id,
            level,
            on,
            validity.valid_until,
            interview_id,
            validity.renewal,
            LabelStatus.VALID,
            step.cause_id,
        )
        self.add_label(cluster, label)
        step.emit(
            OutputType.LABEL_AWARDED,
            start_of_day(on, self.policy.zone),
            level=level.value,
            awarded_on=on.isoformat(),
            valid_until=validity.valid_until.isoformat(),
            interview_id=interview_id,
            renewal=validity.renewal,
        )
        kind = "renewed" if validity.renewal else "awarded"
        step.note(f"{level} {kind}, valid until {validity.valid_until}")
        self.close_obligations(cluster, rules.obligations_met_by(level), step)

    def expire(self, cluster: Cluster, label: Label, step: Step, member: bool) -> None:
        label.status = LabelStatus.EXPIRED
        label.touch()
        expired_on = label.valid_until + timedelta(days=1)
        step.emit(
            OutputType.LABEL_EXPIRED,
            start_of_day(expired_on, self.policy.zone),
            level=label.level.value,
            expired_on=expired_on.isoformat(),
        )
        step.note(f"{label.level} expired on {expired_on}")
        if member:
            due = rules.renewal_due(self.policy, cluster, label)
            if due is not None:
                self.open_obligation(cluster, ObligationKind.LABEL_RENEWAL, due, step)

    # -- breach ---------------------------------------------------------------

    def breach(self, cluster: Cluster, obligation: Obligation, step: Step) -> None:
        obligation.status = ObligationStatus.BREACHED
        obligation.touch()
        step.emit(
            OutputType.DEADLINE_BREACHED,
            step.at,
            obligation=obligation.kind.value,
            due_on=obligation.due_on.isoformat(),
        )
        step.note(f"{obligation.kind} due {obligation.due_on} breached")

    def schedule_exclusion(self, cluster: Cluster, step: Step) -> None:
        months = self.policy.exclude_after_breach_months
        if months is None:
            return
        day = add_months(self.today(step), months)
        due = start_of_day(day, self.policy.zone)
        self.set_timer(cluster, TimerKind.EXCLUSION, due, _exclusion_ref(cluster), None)

    def cancel_exclusion(self, cluster: Cluster) -> None:
        self.cancel_timers(cluster, _exclusion_ref(cluster))


def _exclusion_ref(cluster: Cluster) -> str:
    return f"exclusion/{cluster.cycle}"
