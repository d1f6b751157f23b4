"""Applies one input event or one fired timer to a cluster aggregate.

The decider chooses between applying, parking (the event needs a state the
cluster has not reached yet) and refusing (an impossible transition); the
statechart does the rest. No I/O: the engine persists what comes out.
"""

from __future__ import annotations

import copy
import functools
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from statemachine.exceptions import TransitionNotAllowed

from schemas.messages import (
    ApplicationAssessed,
    EventType,
    InputEvent,
    InterviewCompleted,
)
from workflows import ids
from workflows.actions import Actions, Step
from workflows.aggregate import (
    Cluster,
    HistoryEntry,
    LabelStatus,
    MemberState,
    ObligationStatus,
    Timer,
    TimerKind,
    TimerStatus,
)
from workflows.dates import start_of_day
from workflows.membership import SELF_TRANSITIONS, MembershipMachine, allows
from workflows.policy import Policy
from workflows.rules import evaluate_interview
from workflows.self_transitions import run_self_transition

_MACHINE_EVENT = {
    EventType.APPLICATION_SUBMITTED: "submit",
    EventType.APPLICATION_ASSESSED: "assess",
    EventType.APPLICATION_WITHDRAWN: "withdraw",
    EventType.INTERVIEW_SCHEDULED: "schedule_interview",
    EventType.INTERVIEW_COMPLETED: "complete_interview",
    EventType.INTERVIEW_CANCELLED: "cancel_interview",
}

# Interview events wait while the cluster is not a member: before its first
# admission, and between an ended membership (rejected, withdrawn, excluded) and a
# new application's admission, which the other input topic may not have delivered
# yet. What never becomes applicable leaves by park_ttl as expired_park.
_BEFORE_MEMBERSHIP = frozenset(
    {
        MemberState.UNKNOWN,
        MemberState.APPLIED,
        MemberState.REJECTED,
        MemberState.WITHDRAWN,
        MemberState.EXCLUDED,
    }
)

# States in which an event waits (parks) for the state it needs, instead of
# being refused: the other input topic has not delivered that state yet.
_PARK_WHILE = {
    EventType.APPLICATION_ASSESSED: frozenset({MemberState.UNKNOWN}),
    EventType.APPLICATION_WITHDRAWN: frozenset({MemberState.UNKNOWN}),
    EventType.INTERVIEW_SCHEDULED: _BEFORE_MEMBERSHIP,
    EventType.INTERVIEW_COMPLETED: _BEFORE_MEMBERSHIP,
    EventType.INTERVIEW_CANCELLED: _BEFORE_MEMBERSHIP,
}

_TIMER_EVENT = {
    TimerKind.REMINDER: "remind",
    TimerKind.BREACH: "breach_deadline",
    TimerKind.LABEL_EXPIRY: "expire_label",
    TimerKind.EXCLUSION: "exclude",
}

MAX_TIMERS_PER_STEP = 1000  # a safety bound: a cluster has a handful of timers


@dataclass(frozen=True, slots=True)
class Park:
    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    message: str


class Decider:
    def __init__(
        self, policy: Policy, service_source: str, *, fast_self_transitions: bool = True
    ) -> None:
        self.policy = policy
        # Internal self-transitions skip `send`'s event loop (workflows/self_transitions.py);
        # False sends every event, the reference the property test compares against.
        self.self_transitions = SELF_TRANSITIONS if fast_self_transitions else {}
        # Timers are the service's own causes: their outputs cite (service source, timer id).
        self.service_source = service_source
        self.actions = Actions(policy)
        self._local = threading.local()

    def machine(self, cluster: Cluster) -> MembershipMachine:
        """This thread's machine, bound to `cluster` (built once per thread, not per event)."""
        machine: MembershipMachine | None = getattr(self._local, "machine", None)
        if machine is None:
            machine = self._local.machine = MembershipMachine(cluster, self.actions)
        return machine.bind(cluster)

    def effective_time(self, event: InputEvent) -> datetime:
        """The start of the event's business date (policy zone), else its `time`."""
        data = event.data
        if isinstance(data, ApplicationAssessed):
            return start_of_day(data.assessed_on, self.policy.zone)
        if isinstance(data, InterviewCompleted):
            return start_of_day(data.held_on, self.policy.zone)
        return event.time

    def check(
        self, cluster: Cluster, event: InputEvent, now: datetime | None = None
    ) -> Park | Refuse | None:
        """None if the event applies in the current state; else whether it waits or never can.

        `now` is the service clock: an event effective more than max_clock_skew after
        it waits for the clock, whatever the state, since applying it would fire the
        cluster's timers up to its date.
        """
        if now is not None and self.is_future(event, now):
            return Park(
                f"effective {self.effective_time(event).isoformat()}, more than "
                f"max_clock_skew ({self.policy.max_clock_skew}) after the service clock "
                f"({now.isoformat()})"
            )
        current = self._state_when_applied(cluster, event)
        if allows(current, _MACHINE_EVENT[event.type]):
            return None
        state = MemberState(current)
        if state in _PARK_WHILE.get(event.type, frozenset()):
            return Park(f"{event.type} waits for the cluster's admission (now {state})")
        return Refuse(f"{event.type} is not possible while cluster {cluster.cluster_id} is {state}")

    def is_future(self, event: InputEvent, now: datetime) -> bool:
        return self.effective_time(event) > now + self.policy.max_clock_skew

    @staticmethod
    def releasable_types(state: str) -> frozenset[str]:
        """The input types that do not wait in `state` (they apply or are refused there):
        which parked events a cluster in `state` may release."""
        return _releasable_types(state)

    def _state_when_applied(self, cluster: Cluster, event: InputEvent) -> str:
        """The state the event will meet once the timers due by its effective time fired.

        The caller fires those timers between `check` and `apply`, and an exclusion
        among them (in_breach -> excluded) changes which events are possible. The
        timers are fired on a throwaway copy, so `check` stays free of side effects.
        Only an exclusion changes which input events are allowed (admitted and
        in_breach allow the same ones), so without `exclude_after_breach_months`
        nothing is copied.
        """
        if self.policy.exclude_after_breach_months is None:
            return cluster.state
        at = self.effective_time(event)
        if not any(timer.due_at <= at for timer in cluster.pending_timers()):
            return cluster.state
        trial = copy.deepcopy(cluster)
        self.fire_due(trial, self.machine(trial), at)
        return trial.state

    def apply(self, cluster: Cluster, machine: MembershipMachine, event: InputEvent) -> Step:
        """Apply an event that `check` allowed."""
        name = _MACHINE_EVENT[event.type]
        step = Step(
            cluster.cluster_id,
            ids.event_key(event.source, event.id),
            event.id,
            event.source,
            event.type.value,
            self.effective_time(event),
        )
        kwargs: dict[str, Any] = {"payload": event.data, "step": step}
        if isinstance(event.data, InterviewCompleted):
            kwargs["verdict"] = evaluate_interview(self.policy, cluster, event.data)
        elif event.type in (EventType.INTERVIEW_SCHEDULED, EventType.INTERVIEW_CANCELLED):
            step.note(
                f"interview {getattr(event.data, 'interview_id', '')} "
                f"{event.type.rsplit('.', 1)[1]}"
            )
        self._send(cluster, machine, name, step, kwargs)
        cluster.changed = True
        return step

    def fire_due(
        self,
        cluster: Cluster,
        machine: MembershipMachine,
        until: datetime,
        *,
        breaches_until: datetime | None = None,
    ) -> list[Step]:
        """Fire, in order, every pending timer due at or before `until`; breaches only
        up to `breaches_until` where it is given (the wall clock's late-result allowance).

        A fired timer may set new ones (a label_renewal obligation's reminders),
        so the pending set is re-read after each.
        """
        breach_edge = until if breaches_until is None else breaches_until

        def is_due(timer: Timer) -> bool:
            return timer.due_at <= (breach_edge if timer.kind is TimerKind.BREACH else until)

        steps: list[Step] = []
        for _ in range(MAX_TIMERS_PER_STEP):
            due = next((t for t in cluster.pending_timers() if is_due(t)), None)
            if due is None:
                return steps
            steps.append(self.fire(cluster, machine, due))
        raise RuntimeError(f"cluster {cluster.cluster_id}: more than {MAX_TIMERS_PER_STEP} timers")

    def fire(self, cluster: Cluster, machine: MembershipMachine, timer: Timer) -> Step:
        timer.status = TimerStatus.FIRED
        timer.touch()
        cluster.changed = True
        step = Step(
            cluster.cluster_id,
            timer.timer_id,
            timer.timer_id,
            self.service_source,
            f"timer.{timer.kind}",
            timer.due_at,
        )
        kwargs: dict[str, Any] = {"step": step}
        if timer.kind is TimerKind.LABEL_EXPIRY:
            label = next((lb for lb in cluster.labels if lb.label_id == timer.ref), None)
            if label is None or label.status is not LabelStatus.VALID:
                return self._stale(cluster, step, "label no longer valid")
            kwargs["label"] = label
        elif timer.kind in (TimerKind.REMINDER, TimerKind.BREACH):
            obligation = next(
                (o for o in cluster.obligations if o.obligation_id == timer.ref), None
            )
            if obligation is None or obligation.status is not ObligationStatus.OPEN:
                return self._stale(cluster, step, "obligation no longer open")
            kwargs["obligation"] = obligation
            kwargs["days_left"] = timer.days_left
        name = _TIMER_EVENT[timer.kind]
        if not allows(cluster.state, name):
            return self._stale(cluster, step, f"not applicable while {cluster.state}")
        self._send(cluster, machine, name, step, kwargs)
        return step

    def _send(
        self,
        cluster: Cluster,
        machine: MembershipMachine,
        name: str,
        step: Step,
        kwargs: dict[str, Any],
    ) -> None:
        before = cluster.state
        machine.bind(cluster)
        fast = self.self_transitions.get((before, name))
        try:
            if fast is not None:
                run_self_transition(machine, fast, name, kwargs)
            else:
                machine.send(name, **kwargs)
        except TransitionNotAllowed as exc:  # guarded by allowed_events_names; a bug if hit
            raise RuntimeError(f"statechart refused {name} in {before}: {exc}") from exc
        after = cluster.state
        step.history.append(
            HistoryEntry(
                cluster.cluster_id,
                step.at,
                step.cause_id,
                step.cause_type,
                None if before == MemberState.UNKNOWN else before,
                after,
                "; ".join(step.notes),
            )
        )

    def _stale(self, cluster: Cluster, step: Step, why: str) -> Step:
        step.history.append(
            HistoryEntry(
                cluster.cluster_id,
                step.at,
                step.cause_id,
                step.cause_type,
                cluster.state,
                cluster.state,
                f"nothing to do: {why}",
            )
        )
        return step


@functools.cache
def _releasable_types(state: str) -> frozenset[str]:
    member_state = MemberState(state)
    return frozenset(
        kind.value
        for kind, name in _MACHINE_EVENT.items()
        if allows(state, name) or member_state not in _PARK_WHILE.get(kind, frozenset())
    )
