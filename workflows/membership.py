"""The membership statechart of a go-cluster member.

Strict `StateMachine` semantics: an event with no transition from the current
state raises `TransitionNotAllowed`, which the decider turns into a parked
event or an `invalid_transition` rejection. Callbacks change only the
in-memory aggregate and record intents on the step (outputs, timers).
"""

from __future__ import annotations

from statemachine import State, StateMachine

from schemas.messages import (
    ApplicationAssessed,
    ApplicationSubmitted,
    InterviewCompleted,
    OutputType,
)
from workflows import ids
from workflows.actions import Actions, Step
from workflows.aggregate import (
    MEMBER_STATES,
    Cluster,
    Label,
    LabelStatus,
    MemberState,
    Obligation,
)
from workflows.rules import Verdict, admission_obligations, obligations_met_by
from workflows.self_transitions import self_transitions


class _Binding:
    """The machine's model: forwards `state` to whichever cluster is bound.

    Building a machine costs far more than a send (callback registration), so
    one machine per thread serves every cluster: bind, send, bind the next.
    """

    __slots__ = ("cluster",)

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    @property
    def state(self) -> str:
        return self.cluster.state

    @state.setter
    def state(self, value: str) -> None:
        self.cluster.state = value


class MembershipMachine(StateMachine):
    """A cluster's membership; the model is the bound `Cluster` aggregate."""

    unknown = State("Unknown", initial=True)
    applied = State("Applied")
    admitted = State("Admitted")
    in_breach = State("In breach")
    rejected = State("Rejected")
    withdrawn = State("Withdrawn")
    excluded = State("Excluded")

    submit = (
        unknown.to(applied) | rejected.to(applied) | withdrawn.to(applied) | excluded.to(applied)
    )
    assess = applied.to(admitted, cond="criteria_met") | applied.to(rejected, unless="criteria_met")
    withdraw = applied.to(withdrawn) | admitted.to(withdrawn) | in_breach.to(withdrawn)
    schedule_interview = admitted.to.itself(internal=True) | in_breach.to.itself(internal=True)
    cancel_interview = admitted.to.itself(internal=True) | in_breach.to.itself(internal=True)
    complete_interview = (
        admitted.to.itself(internal=True)
        | in_breach.to(admitted, cond="cures_breach")
        | in_breach.to.itself(internal=True, unless="cures_breach")
    )
    remind = admitted.to.itself(internal=True) | in_breach.to.itself(internal=True)
    breach_deadline = admitted.to(in_breach) | in_breach.to.itself(internal=True)
    exclude = in_breach.to(excluded)
    expire_label = (
        unknown.to.itself(internal=True)
        | applied.to.itself(internal=True)
        | admitted.to.itself(internal=True)
        | in_breach.to.itself(internal=True)
        | rejected.to.itself(internal=True)
        | withdrawn.to.itself(internal=True)
        | excluded.to.itself(internal=True)
    )

    # Fix (tests/test_membership.py): callbacks receive the class-level `State`
    # while `self.rejected` etc. are per-instance `InstanceState` wrappers, so
    # `target is self.rejected` was always False (a rejection opened obligations,
    # a breach never scheduled the exclusion, a cure never cancelled it). States
    # are compared by id.

    def __init__(self, cluster: Cluster, actions: Actions) -> None:
        self._binding = _Binding(cluster)
        self.actions = actions
        super().__init__(model=self._binding, state_field="state")

    @property
    def cluster(self) -> Cluster:
        return self._binding.cluster

    def bind(self, cluster: Cluster) -> MembershipMachine:
        self._binding.cluster = cluster
        return self

    # -- guards ---------------------------------------------------------------

    def criteria_met(self, payload: ApplicationAssessed) -> bool:
        return payload.criteria.all_met

    def cures_breach(self, verdict: Verdict) -> bool:
        if verdict.level is None:
            return False
        return self.actions.breached_kinds(self.cluster) <= obligations_met_by(verdict.level)

    # -- every transition that changes state is a membership change ----------

    def after_transition(self, source: State, target: State, step: Step) -> None:
        if source.id == target.id:
            return
        previous = None if source.id == MemberState.UNKNOWN else source.id
        step.emit(OutputType.MEMBERSHIP_CHANGED, step.at, **{"from": previous, "to": target.id})

    # -- actions --------------------------------------------------------------

    def on_submit(self, payload: ApplicationSubmitted, step: Step) -> None:
        cluster = self.cluster
        cluster.cycle += 1
        cluster.cluster_name = payload.cluster_name
        cluster.organisation = payload.organisation
        cluster.federal_state = payload.federal_state
        cluster.admitted_on = None
        existing = payload.existing_label
        if existing is None or any(
            lb.level is existing.level and lb.valid_until == existing.valid_until
            for lb in cluster.labels
        ):
            return
        today = self.actions.today(step)
        status = LabelStatus.VALID if existing.valid_until >= today else LabelStatus.EXPIRED
        label = Label(
            ids.label_id(cluster.cluster_id, existing.level, step.cause_key),
            cluster.cluster_id,
            existing.level,
            None,
            existing.valid_until,
            None,
            False,
            status,
            step.cause_id,
        )
        if status is LabelStatus.VALID:
            self.actions.add_label(cluster, label)
        else:
            cluster.labels.append(label)
        step.note(f"holds {existing.level} valid until {existing.valid_until} ({status})")

    def on_assess(self, payload: ApplicationAssessed, target: State, step: Step) -> None:
        if target.id == self.rejected.id:
            step.note("criteria not met: " + ", ".join(payload.criteria.failed()))
            return
        self.cluster.admitted_on = payload.assessed_on
        obligations = admission_obligations(self.actions.policy, self.cluster, payload.assessed_on)
        for kind, due_on in obligations.items():
            self.actions.open_obligation(self.cluster, kind, due_on, step)

    def on_withdraw(self, step: Step) -> None:
        self.actions.cancel_obligations(self.cluster, step)

    def on_complete_interview(
        self, payload: InterviewCompleted, verdict: Verdict, step: Step
    ) -> None:
        if verdict.level is None:
            step.note(f"{payload.kind} {payload.interview_id}: no label, {verdict.reason}")
            return
        self.actions.award(self.cluster, verdict.level, payload.held_on, payload.interview_id, step)

    def on_enter_admitted(self, source: State) -> None:
        if source.id == self.in_breach.id:
            self.actions.cancel_exclusion(self.cluster)

    def on_breach_deadline(self, obligation: Obligation, source: State, step: Step) -> None:
        self.actions.breach(self.cluster, obligation, step)
        if source.id == self.admitted.id:
            self.actions.schedule_exclusion(self.cluster, step)

    def on_remind(self, obligation: Obligation, days_left: int, step: Step) -> None:
        step.emit(
            OutputType.DEADLINE_APPROACHING,
            step.at,
            obligation=obligation.kind.value,
            due_on=obligation.due_on.isoformat(),
            days_left=days_left,
        )
        step.note(f"{obligation.kind} due {obligation.due_on}: {days_left} days left")

    def on_exclude(self, step: Step) -> None:
        self.actions.cancel_obligations(self.cluster, step)

    def on_expire_label(self, label: Label, step: Step) -> None:
        member = MemberState(self.cluster.state) in MEMBER_STATES
        self.actions.expire(self.cluster, label, step, member)


_ALLOWED: dict[str, frozenset[str]] = {
    state.id: frozenset(str(event) for event in state.transitions.unique_events)
    for state in MembershipMachine.states
}


def allows(state: str, event: str) -> bool:
    """Whether the chart has a transition for `event` in `state` (guards aside).

    Read from the class once, so refusing or parking an event costs no send.
    """
    return event in _ALLOWED.get(state, frozenset())


# The (state, event) pairs that `send` always answers with an internal self-transition,
# read from the chart (workflows/self_transitions.py): the decider runs their callbacks
# without the library's event loop.
SELF_TRANSITIONS = self_transitions(MembershipMachine)
