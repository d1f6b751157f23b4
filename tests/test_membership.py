"""The membership workflow through the Decider: in-memory aggregates, typed messages, no database.

`Member` plays the engine's part for one cluster: timers due up to an event's
effective time fire before the event is applied (CONTRACT.md section 4), and
`tick` fires what is due up to an instant, like `gocluster tick --now`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from schemas.messages import OutputType
from tests.builders import (
    BERLIN,
    CLUSTER,
    INTERVIEWS,
    PORTAL,
    assessed,
    benchmarking_result,
    bronze,
    bundled_policy,
    cancelled,
    completed,
    gold,
    gold_result,
    noon,
    scheduled,
    silver,
    submitted,
    typed,
    withdrawn,
)
from workflows.actions import Step
from workflows.aggregate import (
    Cluster,
    Label,
    LabelStatus,
    MemberState,
    Obligation,
    ObligationKind,
    ObligationStatus,
    Output,
    TimerKind,
    TimerStatus,
)
from workflows.dates import start_of_day
from workflows.decider import Decider, Park, Refuse
from workflows.membership import allows
from workflows.policy import Policy, load_policy

POLICY = load_policy()
SERVICE = "/gocluster/membership"
ADMITTED = date(2025, 9, 4)  # the seed story
BRONZE_DUE = date(2026, 3, 4)
SILVER_DUE = date(2027, 9, 4)


def day(d: date) -> datetime:
    """The start of a Berlin calendar day, as the UTC instant timers use."""
    return start_of_day(d, BERLIN)


class Member:
    """One cluster driven through the Decider the way the engine drives it."""

    def __init__(self, policy: Policy = POLICY, cluster_id: str = CLUSTER) -> None:
        self.decider = Decider(policy, SERVICE)
        self.cluster = Cluster(cluster_id)
        self.machine = self.decider.machine(self.cluster)
        self.steps: list[Step] = []

    def send(self, raw: Mapping[str, Any]) -> Step | Park | Refuse:
        event = typed(raw)
        verdict = self.decider.check(self.cluster, event)
        if verdict is not None:
            return verdict
        self.steps += self.decider.fire_due(
            self.cluster, self.machine, self.decider.effective_time(event)
        )
        step = self.decider.apply(self.cluster, self.machine, event)
        self.steps.append(step)
        return step

    def apply(self, raw: Mapping[str, Any]) -> Step:
        step = self.send(raw)
        assert isinstance(step, Step), step
        return step

    def tick(self, until: datetime) -> list[Step]:
        fired = self.decider.fire_due(self.cluster, self.machine, until)
        self.steps += fired
        return fired

    @property
    def state(self) -> MemberState:
        return self.cluster.member_state

    @property
    def outputs(self) -> list[Output]:
        return [o for s in self.steps for o in s.outputs]

    def emitted(self, kind: OutputType) -> list[dict[str, Any]]:
        return [o.data for o in self.outputs if o.type is kind]

    def obligation(self, kind: ObligationKind) -> Obligation:
        (found,) = [o for o in self.cluster.obligations if o.kind is kind]
        return found

    def label(self, level: str) -> Label:
        (found,) = [lb for lb in self.cluster.labels if lb.level == level]
        return found


def admitted_member(policy: Policy = POLICY, on: date = ADMITTED) -> Member:
    member = Member(policy)
    member.apply(submitted(date(2025, 5, 12)))
    member.apply(assessed(on))
    return member


def transitions(member: Member) -> list[tuple[str | None, str]]:
    return [(d["from"], d["to"]) for d in member.emitted(OutputType.MEMBERSHIP_CHANGED)]


# -- admission ----------------------------------------------------------------------------


def test_a_first_submission_moves_from_nothing_to_applied_at_the_event_time() -> None:
    member = Member()
    at = datetime(2025, 5, 12, 9, 30, tzinfo=BERLIN)
    step = member.apply(submitted(at, event_id="portal-2025-0412"))
    assert member.state is MemberState.APPLIED
    (change,) = step.outputs
    assert change.type is OutputType.MEMBERSHIP_CHANGED
    assert change.data == {
        "cluster_id": CLUSTER,
        "from": None,
        "to": "applied",
        "cause_id": "portal-2025-0412",
        "cause_source": PORTAL,
    }
    assert change.time == at
    assert step.history[0].from_state is None
    assert step.history[0].to_state == "applied"


def test_assessment_with_all_criteria_admits_on_the_assessed_day() -> None:
    member = Member()
    member.apply(submitted(date(2025, 5, 12)))
    step = member.apply(assessed(ADMITTED, published=datetime(2025, 9, 6, 10, tzinfo=UTC)))
    assert member.state is MemberState.ADMITTED
    assert member.cluster.admitted_on == ADMITTED
    (change,) = [o for o in step.outputs if o.type is OutputType.MEMBERSHIP_CHANGED]
    assert (change.data["from"], change.data["to"]) == ("applied", "admitted")
    assert change.time == day(ADMITTED)  # the effective time, not the publication time


def test_the_seed_story_owes_bronze_by_2026_03_04_and_silver_by_2027_09_04() -> None:
    member = admitted_member()
    assert member.obligation(ObligationKind.BRONZE_INTERVIEW).due_on == BRONZE_DUE
    assert member.obligation(ObligationKind.SILVER_LABEL).due_on == SILVER_DUE
    assert {o.status for o in member.cluster.obligations} == {ObligationStatus.OPEN}


def test_the_seed_story_replays_to_a_silver_breach_on_2027_09_05() -> None:
    member = admitted_member()
    member.apply(scheduled(datetime(2025, 10, 2, 11, tzinfo=BERLIN), "ecei-bm-2025-117"))
    member.apply(bronze(date(2025, 11, 20), interview_id="ecei-bm-2025-117"))
    member.tick(datetime(2027, 9, 10, tzinfo=UTC))
    kinds = [o.type for o in member.outputs]
    assert kinds == [
        OutputType.MEMBERSHIP_CHANGED,
        OutputType.MEMBERSHIP_CHANGED,
        OutputType.LABEL_AWARDED,
        OutputType.DEADLINE_APPROACHING,
        OutputType.DEADLINE_APPROACHING,
        OutputType.DEADLINE_BREACHED,
        OutputType.MEMBERSHIP_CHANGED,
    ]
    (award,) = member.emitted(OutputType.LABEL_AWARDED)
    assert award["awarded_on"] == "2025-11-20"
    assert award["valid_until"] == "2027-11-20"
    assert award["renewal"] is False
    assert [(o.data["days_left"], o.time) for o in member.outputs[3:5]] == [
        (90, day(date(2027, 6, 6))),
        (30, day(date(2027, 8, 5))),
    ]
    breach = member.outputs[5]
    assert breach.data["obligation"] == "silver_label"
    assert breach.data["due_on"] == "2027-09-04"
    assert breach.time == datetime(2027, 9, 4, 22, tzinfo=UTC)  # 2027-09-05 00:00 CEST
    assert member.state is MemberState.IN_BREACH


def test_a_failed_assessment_rejects_and_creates_no_obligations() -> None:
    member = Member()
    member.apply(submitted(date(2025, 5, 12)))
    step = member.apply(assessed(ADMITTED, passed=False))
    assert member.state is MemberState.REJECTED
    assert member.cluster.obligations == []
    assert member.cluster.timers == []
    assert transitions(member)[-1] == ("applied", "rejected")
    assert "visibility_and_impact" in step.history[0].note
    member.tick(datetime(2030, 1, 1, tzinfo=UTC))
    assert member.emitted(OutputType.DEADLINE_BREACHED) == []


def test_a_rejected_cluster_may_apply_again_in_a_new_cycle() -> None:
    member = Member()
    member.apply(submitted(date(2025, 5, 12)))
    member.apply(assessed(date(2025, 9, 4), passed=False))
    member.apply(submitted(date(2026, 1, 10)))
    member.apply(assessed(date(2026, 4, 15)))
    assert member.cluster.cycle == 2
    assert transitions(member) == [
        (None, "applied"),
        ("applied", "rejected"),
        ("rejected", "applied"),
        ("applied", "admitted"),
    ]
    assert member.obligation(ObligationKind.BRONZE_INTERVIEW).due_on == date(2026, 10, 15)
    assert member.obligation(ObligationKind.SILVER_LABEL).due_on == date(2028, 4, 15)


def test_a_withdrawn_cluster_may_apply_again_with_deadlines_from_the_new_admission() -> None:
    member = admitted_member()
    member.apply(withdrawn(date(2025, 12, 1)))
    member.apply(submitted(date(2026, 6, 1)))
    member.apply(assessed(date(2026, 8, 31)))
    assert member.cluster.cycle == 2
    open_ = {o.kind: o.due_on for o in member.cluster.active_obligations()}
    assert open_ == {
        ObligationKind.BRONZE_INTERVIEW: date(2027, 2, 28),
        ObligationKind.SILVER_LABEL: date(2028, 8, 31),
    }
    old = [o for o in member.cluster.obligations if o.cycle == 1]
    assert {o.status for o in old} == {ObligationStatus.CANCELLED}


# -- parking and refusing -----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        scheduled(date(2025, 10, 2), "iv-1"),
        bronze(date(2025, 11, 20)),
        cancelled(date(2025, 10, 3), "iv-1"),
        assessed(ADMITTED),
        withdrawn(date(2025, 10, 1)),
    ],
    ids=["scheduled", "completed", "cancelled", "assessed", "withdrawn"],
)
def test_an_event_for_an_unknown_cluster_is_parked(raw: dict[str, Any]) -> None:
    member = Member()
    assert isinstance(member.send(raw), Park)
    assert member.state is MemberState.UNKNOWN
    assert member.steps == []


@pytest.mark.parametrize(
    "raw",
    [
        scheduled(date(2025, 10, 2), "iv-1"),
        bronze(date(2025, 11, 20)),
        cancelled(date(2025, 10, 3), "iv-1"),
    ],
    ids=["scheduled", "completed", "cancelled"],
)
def test_an_interview_event_for_a_cluster_not_yet_admitted_is_parked(raw: dict[str, Any]) -> None:
    member = Member()
    member.apply(submitted(date(2025, 5, 12)))
    assert isinstance(member.send(raw), Park)
    assert member.state is MemberState.APPLIED


def test_an_interview_parked_before_admission_earns_its_label_once_admitted() -> None:
    member = Member()
    member.apply(submitted(date(2025, 5, 12)))
    held = bronze(date(2025, 9, 20))
    assert isinstance(member.send(held), Park)
    member.apply(assessed(ADMITTED))
    member.apply(held)  # what the engine's retry does
    assert member.obligation(ObligationKind.BRONZE_INTERVIEW).status is ObligationStatus.MET


@pytest.mark.parametrize(
    ("setup", "raw"),
    [
        ("admitted", assessed(ADMITTED)),
        ("admitted", submitted(date(2025, 10, 1))),
        ("rejected", withdrawn(date(2025, 10, 1))),
        ("withdrawn", withdrawn(date(2025, 12, 1))),
        ("withdrawn", assessed(date(2025, 12, 1))),
    ],
)
def test_an_impossible_transition_is_refused(setup: str, raw: dict[str, Any]) -> None:
    member = Member()
    member.apply(submitted(date(2025, 5, 12)))
    member.apply(assessed(ADMITTED, passed=setup != "rejected"))
    if setup == "withdrawn":
        member.apply(withdrawn(date(2025, 9, 30)))
    before = (member.state, len(member.steps))
    refusal = member.send(raw)
    assert isinstance(refusal, Refuse)
    assert setup in refusal.message
    assert (member.state, len(member.steps)) == before


@pytest.mark.parametrize(
    ("setup", "raw"),
    [
        ("rejected", bronze(date(2025, 11, 20))),
        ("withdrawn", bronze(date(2025, 11, 20))),
        ("withdrawn", scheduled(date(2025, 12, 1), "iv-9")),
    ],
)
def test_an_interview_for_an_ended_membership_waits_for_a_new_admission(
    setup: str, raw: dict[str, Any]
) -> None:
    member = Member()
    member.apply(submitted(date(2025, 5, 12)))
    member.apply(assessed(ADMITTED, passed=setup != "rejected"))
    if setup == "withdrawn":
        member.apply(withdrawn(date(2025, 9, 30)))
    before = (member.state, len(member.steps))
    assert isinstance(member.send(raw), Park)
    assert (member.state, len(member.steps)) == before


def test_the_chart_allows_submission_only_from_nothing_or_a_closed_membership() -> None:
    can_submit = {state for state in MemberState if allows(state.value, "submit")}
    assert can_submit == {
        MemberState.UNKNOWN,
        MemberState.REJECTED,
        MemberState.WITHDRAWN,
        MemberState.EXCLUDED,
    }
    assert {s for s in MemberState if allows(s.value, "exclude")} == {MemberState.IN_BREACH}
    assert all(allows(s.value, "expire_label") for s in MemberState)


INPUT_EVENTS = (
    "submit",
    "assess",
    "withdraw",
    "schedule_interview",
    "complete_interview",
    "cancel_interview",
)


def test_a_breach_changes_no_input_event_that_the_member_may_send() -> None:
    # Decider.check simulates due timers only when an exclusion can be among them.
    def allowed(state: MemberState) -> set[str]:
        return {name for name in INPUT_EVENTS if allows(state.value, name)}

    assert allowed(MemberState.ADMITTED) == allowed(MemberState.IN_BREACH)
    assert allowed(MemberState.IN_BREACH) != allowed(MemberState.EXCLUDED)


# -- labels -------------------------------------------------------------------------------


def test_a_passing_benchmarking_awards_bronze_for_24_months_at_the_start_of_the_interview_day() -> (
    None
):
    member = admitted_member()
    step = member.apply(bronze(date(2025, 11, 20), interview_id="ecei-bm-2025-117"))
    (award,) = step.outputs
    assert award.type is OutputType.LABEL_AWARDED
    assert award.time == day(date(2025, 11, 20))
    assert award.data == {
        "cluster_id": CLUSTER,
        "level": "bronze",
        "awarded_on": "2025-11-20",
        "valid_until": "2027-11-20",
        "interview_id": "ecei-bm-2025-117",
        "renewal": False,
        "cause_id": step.cause_id,
        "cause_source": INTERVIEWS,
    }
    assert member.obligation(ObligationKind.BRONZE_INTERVIEW).status is ObligationStatus.MET
    assert member.obligation(ObligationKind.SILVER_LABEL).status is ObligationStatus.OPEN


def test_an_interview_that_earns_nothing_is_recorded_in_history_with_its_reason() -> None:
    member = admitted_member()
    step = member.apply(
        completed(date(2025, 11, 20), "benchmarking", benchmarking_result(30), interview_id="bm-1")
    )
    assert step.outputs == []
    (entry,) = step.history
    assert entry.cause_type == "gocluster.interview.completed"
    assert (entry.from_state, entry.to_state) == ("admitted", "admitted")
    assert "bm-1" in entry.note
    assert "only 30 of 36 indicators" in entry.note
    assert member.cluster.labels == []
    assert member.obligation(ObligationKind.BRONZE_INTERVIEW).status is ObligationStatus.OPEN


def test_a_silver_audit_without_a_prior_label_is_recorded_with_its_reason() -> None:
    member = admitted_member()
    step = member.apply(silver(date(2025, 11, 20)))
    assert step.outputs == []
    assert "no prior Bronze" in step.history[0].note


def test_silver_after_bronze_meets_the_silver_obligation() -> None:
    member = admitted_member()
    member.apply(bronze(date(2025, 11, 20)))
    step = member.apply(silver(date(2027, 5, 10)))
    (award,) = step.outputs
    assert (award.data["level"], award.data["valid_until"]) == ("silver", "2029-05-10")
    assert member.obligation(ObligationKind.SILVER_LABEL).status is ObligationStatus.MET
    assert [t for t in member.cluster.pending_timers() if t.kind is TimerKind.BREACH] == []


def test_a_gold_award_meets_both_admission_obligations() -> None:
    member = admitted_member()
    member.apply(gold(date(2025, 11, 20)))
    statuses = {o.kind: o.status for o in member.cluster.obligations}
    assert statuses == {
        ObligationKind.BRONZE_INTERVIEW: ObligationStatus.MET,
        ObligationKind.SILVER_LABEL: ObligationStatus.MET,
    }


def test_a_label_expires_at_the_start_of_the_day_after_valid_until_in_berlin() -> None:
    member = admitted_member()
    member.apply(bronze(date(2025, 11, 20)))
    expires = day(date(2027, 11, 21))
    assert expires == datetime(2027, 11, 20, 23, tzinfo=UTC)
    member.tick(expires - timedelta(microseconds=1))
    assert member.emitted(OutputType.LABEL_EXPIRED) == []
    (step,) = [s for s in member.tick(expires) if s.cause_type == "timer.label_expiry"]
    (expiry,) = step.outputs
    assert expiry.type is OutputType.LABEL_EXPIRED
    assert expiry.time == expires
    assert expiry.data["level"] == "bronze"
    assert expiry.data["expired_on"] == "2027-11-21"
    assert expiry.data["cause_id"] == step.cause_id
    assert member.label("bronze").status is LabelStatus.EXPIRED


def test_label_expiry_is_not_a_breach() -> None:
    member = admitted_member()
    member.apply(gold(date(2025, 11, 20)))
    member.tick(day(date(2027, 11, 22)))
    assert member.emitted(OutputType.LABEL_EXPIRED) != []
    assert member.emitted(OutputType.DEADLINE_BREACHED) == []
    assert member.state is MemberState.ADMITTED


def test_with_validity_ends_month_end_the_label_runs_to_the_end_of_its_month() -> None:
    member = admitted_member(bundled_policy(validity_ends="month_end"))
    member.apply(bronze(date(2025, 11, 20)))
    assert member.emitted(OutputType.LABEL_AWARDED)[0]["valid_until"] == "2027-11-30"
    member.tick(day(date(2027, 12, 1)))
    assert member.emitted(OutputType.LABEL_EXPIRED)[0]["expired_on"] == "2027-12-01"


def test_a_renewal_while_valid_extends_by_36_months_and_supersedes_without_expiry() -> None:
    member = admitted_member()
    member.apply(bronze(date(2025, 11, 20)))
    member.apply(bronze(date(2027, 10, 1)))
    first, second = member.emitted(OutputType.LABEL_AWARDED)
    assert (second["renewal"], second["valid_until"]) == (True, "2030-11-20")
    old, new = member.cluster.labels
    assert old.status is LabelStatus.SUPERSEDED
    assert new.status is LabelStatus.VALID
    member.tick(day(date(2030, 11, 21)))
    assert member.emitted(OutputType.LABEL_EXPIRED) == [
        {
            "cluster_id": CLUSTER,
            "level": "bronze",
            "expired_on": "2030-11-21",
            "cause_id": member.steps[-1].cause_id,
            "cause_source": SERVICE,
        }
    ]
    assert first["valid_until"] == "2027-11-20"


def test_a_renewal_within_the_grace_year_after_expiry_continues_the_old_validity() -> None:
    member = admitted_member()
    member.apply(gold(date(2025, 11, 20)))  # valid until 2027-11-20
    member.apply(gold(date(2028, 11, 20)))  # expired on 11-21, last day of grace
    renewal = member.emitted(OutputType.LABEL_AWARDED)[-1]
    assert (renewal["renewal"], renewal["valid_until"]) == (True, "2030-11-20")
    assert member.emitted(OutputType.LABEL_EXPIRED)[0]["expired_on"] == "2027-11-21"


def test_an_award_after_the_grace_year_is_a_first_award() -> None:
    member = admitted_member()
    member.apply(gold(date(2025, 11, 20)))
    member.apply(gold(date(2028, 11, 21)))
    again = member.emitted(OutputType.LABEL_AWARDED)[-1]
    assert (again["renewal"], again["valid_until"]) == (False, "2030-11-21")


# -- labels held at entry -------------------------------------------------------------------


def test_a_valid_bronze_at_entry_is_recorded_without_an_award_and_meets_the_bronze_obligation() -> (
    None
):
    member = Member()
    member.apply(submitted(date(2025, 5, 12), existing=("bronze", date(2026, 6, 30))))
    member.apply(assessed(ADMITTED))
    assert member.emitted(OutputType.LABEL_AWARDED) == []
    entry = member.label("bronze")
    assert (entry.awarded_on, entry.status) == (None, LabelStatus.VALID)
    assert [o.kind for o in member.cluster.obligations] == [ObligationKind.SILVER_LABEL]
    member.tick(day(date(2026, 7, 1)))
    (expiry,) = member.emitted(OutputType.LABEL_EXPIRED)
    assert expiry["expired_on"] == "2026-07-01"
    assert member.obligation(ObligationKind.SILVER_LABEL).status is ObligationStatus.OPEN


@pytest.mark.parametrize("level", ["silver", "gold"])
def test_a_valid_silver_or_gold_at_entry_meets_both_obligations(level: str) -> None:
    member = Member()
    member.apply(submitted(date(2025, 5, 12), existing=(level, date(2027, 6, 30))))
    member.apply(assessed(ADMITTED))
    assert member.cluster.obligations == []


def test_a_label_that_expired_before_entry_is_history_and_meets_nothing() -> None:
    member = Member()
    member.apply(submitted(date(2025, 5, 12), existing=("gold", date(2025, 1, 31))))
    member.apply(assessed(ADMITTED))
    assert member.label("gold").status is LabelStatus.EXPIRED
    assert {o.kind for o in member.cluster.obligations} == set(ObligationKind) - {
        ObligationKind.LABEL_RENEWAL
    }
    member.tick(day(date(2026, 1, 1)))
    assert member.emitted(OutputType.LABEL_EXPIRED) == []


def test_a_label_at_entry_expiring_before_admission_meets_nothing_and_owes_no_renewal() -> None:
    member = Member()
    member.apply(submitted(date(2025, 5, 12), existing=("silver", date(2025, 7, 31))))
    member.apply(assessed(ADMITTED))
    (expiry,) = member.emitted(OutputType.LABEL_EXPIRED)
    assert expiry["expired_on"] == "2025-08-01"
    kinds = {o.kind for o in member.cluster.obligations}
    assert kinds == {ObligationKind.BRONZE_INTERVIEW, ObligationKind.SILVER_LABEL}


# -- label_renewal --------------------------------------------------------------------------


def silver_member() -> Member:
    """Admitted with a valid Silver held at entry, valid until 2026-11-30."""
    member = Member()
    member.apply(submitted(date(2025, 5, 12), existing=("silver", date(2026, 11, 30))))
    member.apply(assessed(ADMITTED))
    return member


def test_the_last_silver_expiring_owes_a_new_one_within_12_months_with_reminders() -> None:
    member = silver_member()
    member.tick(day(date(2026, 12, 1)))
    renewal = member.obligation(ObligationKind.LABEL_RENEWAL)
    assert renewal.due_on == date(2027, 11, 30)
    member.tick(day(date(2027, 12, 1)))
    approaching = member.emitted(OutputType.DEADLINE_APPROACHING)
    assert [(a["obligation"], a["days_left"]) for a in approaching] == [
        ("label_renewal", 90),
        ("label_renewal", 30),
    ]
    (breach,) = member.emitted(OutputType.DEADLINE_BREACHED)
    assert (breach["obligation"], breach["due_on"]) == ("label_renewal", "2027-11-30")
    assert member.state is MemberState.IN_BREACH


def test_a_silver_renewal_in_the_grace_year_meets_the_label_renewal_obligation() -> None:
    member = silver_member()
    member.tick(day(date(2026, 12, 1)))
    member.apply(silver(date(2027, 3, 15)))
    award = member.emitted(OutputType.LABEL_AWARDED)[-1]
    assert (award["renewal"], award["valid_until"]) == (True, "2029-11-30")
    assert member.obligation(ObligationKind.LABEL_RENEWAL).status is ObligationStatus.MET
    member.tick(day(date(2028, 1, 1)))
    assert member.emitted(OutputType.DEADLINE_BREACHED) == []


def test_a_bronze_does_not_meet_the_label_renewal_obligation() -> None:
    member = silver_member()
    member.tick(day(date(2026, 12, 1)))
    member.apply(bronze(date(2027, 3, 15)))
    assert member.obligation(ObligationKind.LABEL_RENEWAL).status is ObligationStatus.OPEN


def test_a_silver_expiring_while_gold_is_valid_owes_no_renewal() -> None:
    member = silver_member()
    member.apply(gold(date(2026, 1, 20)))
    member.tick(day(date(2026, 12, 1)))
    assert member.emitted(OutputType.LABEL_EXPIRED)[0]["level"] == "silver"
    assert all(o.kind is not ObligationKind.LABEL_RENEWAL for o in member.cluster.obligations)


# -- reminders and breaches ---------------------------------------------------------------


def test_reminders_come_90_and_30_days_before_the_due_date_at_the_start_of_the_day() -> None:
    member = admitted_member()
    member.tick(day(date(2026, 3, 4)))
    reminders = [o for o in member.outputs if o.type is OutputType.DEADLINE_APPROACHING]
    assert [(o.data["obligation"], o.data["due_on"], o.data["days_left"]) for o in reminders] == [
        ("bronze_interview", "2026-03-04", 90),
        ("bronze_interview", "2026-03-04", 30),
    ]
    assert [o.time for o in reminders] == [day(date(2025, 12, 4)), day(date(2026, 2, 2))]
    assert member.emitted(OutputType.DEADLINE_BREACHED) == []


def test_no_reminder_once_the_obligation_is_met() -> None:
    member = admitted_member()
    member.tick(day(date(2025, 12, 10)))  # the 90-day reminder has gone out
    member.apply(bronze(date(2026, 1, 10)))
    member.tick(day(date(2026, 6, 1)))
    bronze_reminders = [
        d["days_left"]
        for d in member.emitted(OutputType.DEADLINE_APPROACHING)
        if d["obligation"] == "bronze_interview"
    ]
    assert bronze_reminders == [90]
    assert member.emitted(OutputType.DEADLINE_BREACHED) == []


def test_an_unmet_deadline_is_breached_at_the_start_of_the_next_day() -> None:
    member = admitted_member()
    passes = day(date(2026, 3, 5))
    member.tick(passes - timedelta(microseconds=1))
    assert member.state is MemberState.ADMITTED
    fired = member.tick(passes)
    outputs = [o for s in fired for o in s.outputs]
    assert [o.type for o in outputs] == [
        OutputType.DEADLINE_BREACHED,
        OutputType.MEMBERSHIP_CHANGED,
    ]
    assert outputs[0].data["obligation"] == "bronze_interview"
    assert outputs[0].data["due_on"] == "2026-03-04"
    assert outputs[0].time == outputs[1].time == passes
    assert (outputs[1].data["from"], outputs[1].data["to"]) == ("admitted", "in_breach")
    assert member.state is MemberState.IN_BREACH
    assert member.obligation(ObligationKind.BRONZE_INTERVIEW).status is ObligationStatus.BREACHED


def test_an_interview_held_on_the_due_date_meets_it_even_if_published_later() -> None:
    member = admitted_member()
    late = datetime(2026, 3, 6, 9, tzinfo=BERLIN)  # two days after the due date
    member.apply(bronze(BRONZE_DUE, published=late))
    assert member.emitted(OutputType.DEADLINE_BREACHED) == []
    assert member.obligation(ObligationKind.BRONZE_INTERVIEW).status is ObligationStatus.MET
    assert member.state is MemberState.ADMITTED


def test_an_interview_held_the_day_after_the_due_date_cures_the_breach() -> None:
    member = admitted_member()
    step = member.apply(bronze(BRONZE_DUE + timedelta(days=1)))
    assert [o.type for o in member.outputs[-4:]] == [
        OutputType.DEADLINE_BREACHED,
        OutputType.MEMBERSHIP_CHANGED,
        OutputType.LABEL_AWARDED,
        OutputType.MEMBERSHIP_CHANGED,
    ]
    assert transitions(member)[-2:] == [("admitted", "in_breach"), ("in_breach", "admitted")]
    assert step.outputs[-1].time == day(BRONZE_DUE + timedelta(days=1))
    assert member.obligation(ObligationKind.BRONZE_INTERVIEW).status is ObligationStatus.CURED
    assert member.state is MemberState.ADMITTED


def both_breached() -> Member:
    member = admitted_member()
    member.tick(day(date(2027, 9, 6)))
    assert {o.status for o in member.cluster.obligations} == {ObligationStatus.BREACHED}
    return member


def test_the_member_stays_in_breach_until_every_breached_obligation_is_met() -> None:
    member = both_breached()
    member.apply(bronze(date(2027, 10, 1)))
    assert member.state is MemberState.IN_BREACH
    assert member.obligation(ObligationKind.BRONZE_INTERVIEW).status is ObligationStatus.CURED
    member.apply(silver(date(2027, 12, 1)))
    assert member.state is MemberState.ADMITTED
    assert member.obligation(ObligationKind.SILVER_LABEL).status is ObligationStatus.CURED
    assert transitions(member)[-2:] == [("admitted", "in_breach"), ("in_breach", "admitted")]


def test_one_gold_award_cures_every_breached_obligation() -> None:
    member = both_breached()
    member.apply(gold(date(2027, 10, 1)))
    assert member.state is MemberState.ADMITTED
    assert {o.status for o in member.cluster.obligations} == {ObligationStatus.CURED}


def test_a_failed_interview_in_breach_changes_nothing_but_history() -> None:
    member = both_breached()
    failing = gold_result((9, 6, 10), (5, 6, 10))
    step = member.apply(completed(date(2027, 10, 1), "gold_assessment", failing))
    assert step.outputs == []
    assert member.state is MemberState.IN_BREACH
    assert "ind-1" in step.history[0].note


def test_a_second_breach_while_in_breach_emits_the_breach_but_no_state_change() -> None:
    member = admitted_member()
    member.tick(day(date(2027, 9, 6)))
    assert [d["obligation"] for d in member.emitted(OutputType.DEADLINE_BREACHED)] == [
        "bronze_interview",
        "silver_label",
    ]
    assert transitions(member)[-1] == ("admitted", "in_breach")
    assert transitions(member).count(("admitted", "in_breach")) == 1


def test_a_label_expiry_fires_before_a_breach_due_at_the_same_instant() -> None:
    member = Member()
    member.apply(submitted(date(2025, 5, 12), existing=("bronze", SILVER_DUE)))
    member.apply(assessed(ADMITTED))
    fired = member.tick(day(SILVER_DUE + timedelta(days=1)))
    kinds = [o.type for s in fired for o in s.outputs]
    assert kinds[-3:] == [
        OutputType.LABEL_EXPIRED,
        OutputType.DEADLINE_BREACHED,
        OutputType.MEMBERSHIP_CHANGED,
    ]


def test_a_reminder_fires_before_a_breach_due_at_the_same_instant() -> None:
    # Silver due 2027-09-04 minus 548 days is 2026-03-05, the instant Bronze passes.
    member = admitted_member(bundled_policy(reminder_days_before=[548]))
    fired = member.tick(day(date(2026, 3, 5)))
    outputs = [o for s in fired for o in s.outputs]
    assert [(o.type, o.data.get("obligation")) for o in outputs] == [
        (OutputType.DEADLINE_APPROACHING, "silver_label"),
        (OutputType.DEADLINE_BREACHED, "bronze_interview"),
        (OutputType.MEMBERSHIP_CHANGED, None),
    ]
    assert outputs[0].data["days_left"] == 548
    assert {o.time for o in outputs} == {day(date(2026, 3, 5))}


# -- withdrawal and exclusion -------------------------------------------------------------


def test_withdrawal_cancels_obligations_and_reminders_but_labels_still_expire() -> None:
    member = admitted_member()
    member.apply(bronze(date(2025, 11, 20)))
    step = member.apply(withdrawn(datetime(2026, 2, 1, 10, tzinfo=BERLIN)))
    assert member.state is MemberState.WITHDRAWN
    assert step.outputs[-1].time == datetime(2026, 2, 1, 10, tzinfo=BERLIN)
    assert {o.status for o in member.cluster.obligations} == {
        ObligationStatus.MET,
        ObligationStatus.CANCELLED,
    }
    pending = member.cluster.pending_timers()
    assert [t.kind for t in pending] == [TimerKind.LABEL_EXPIRY]
    member.tick(day(date(2028, 1, 1)))
    assert member.emitted(OutputType.DEADLINE_APPROACHING) == []
    assert member.emitted(OutputType.DEADLINE_BREACHED) == []
    (expiry,) = member.emitted(OutputType.LABEL_EXPIRED)
    assert expiry["expired_on"] == "2027-11-21"
    assert member.state is MemberState.WITHDRAWN


def test_a_silver_expiring_after_withdrawal_owes_no_renewal() -> None:
    member = silver_member()
    member.apply(withdrawn(date(2026, 1, 5)))
    member.tick(day(date(2028, 1, 1)))
    assert member.emitted(OutputType.LABEL_EXPIRED) != []
    assert member.cluster.active_obligations() == []


def test_a_member_in_breach_may_withdraw() -> None:
    member = both_breached()
    member.apply(withdrawn(date(2027, 10, 1)))
    assert member.state is MemberState.WITHDRAWN
    assert member.cluster.active_obligations() == []


def test_without_exclude_after_breach_months_a_member_stays_in_breach_forever() -> None:
    member = admitted_member()
    member.tick(datetime(2040, 1, 1, tzinfo=UTC))
    assert member.state is MemberState.IN_BREACH
    assert all(t.kind is not TimerKind.EXCLUSION for t in member.cluster.timers)


EXCLUDING = bundled_policy(exclude_after_breach_months=6)


def test_a_member_still_in_breach_after_the_policy_months_is_excluded() -> None:
    member = admitted_member(EXCLUDING)
    breach_at = day(date(2026, 3, 5))
    exclusion_at = day(date(2026, 9, 5))
    member.tick(exclusion_at - timedelta(microseconds=1))
    assert member.state is MemberState.IN_BREACH
    (step,) = member.tick(exclusion_at)
    assert step.cause_type == "timer.exclusion"
    (change,) = step.outputs
    assert (change.data["from"], change.data["to"]) == ("in_breach", "excluded")
    assert change.time == exclusion_at > breach_at
    assert member.state is MemberState.EXCLUDED
    assert member.cluster.active_obligations() == []
    member.tick(datetime(2030, 1, 1, tzinfo=UTC))
    (breach_step,) = [s for s in member.steps if s.cause_type == "timer.breach"]
    assert member.emitted(OutputType.DEADLINE_BREACHED) == [
        {
            "cluster_id": CLUSTER,
            "obligation": "bronze_interview",
            "due_on": "2026-03-04",
            "cause_id": breach_step.cause_id,
            "cause_source": SERVICE,
        }
    ]
    assert breach_step.outputs[0].time == breach_at


def test_a_cure_before_the_exclusion_date_cancels_the_exclusion() -> None:
    member = admitted_member(EXCLUDING)
    member.apply(gold(date(2026, 5, 1)))
    assert member.state is MemberState.ADMITTED
    exclusions = [t for t in member.cluster.timers if t.kind is TimerKind.EXCLUSION]
    assert [t.status for t in exclusions] == [TimerStatus.CANCELLED]
    member.tick(day(date(2027, 12, 31)))  # before the Gold expires and a renewal falls due
    assert member.state is MemberState.ADMITTED
    assert transitions(member)[-2:] == [("admitted", "in_breach"), ("in_breach", "admitted")]


def test_the_exclusion_period_counts_from_the_latest_breach_after_a_cure() -> None:
    member = admitted_member(EXCLUDING)
    member.apply(bronze(date(2026, 5, 1)))  # breached 2026-03-05, cured
    member.tick(day(date(2028, 3, 5)) - timedelta(microseconds=1))
    assert member.state is MemberState.IN_BREACH  # silver_label breached 2027-09-05
    member.tick(day(date(2028, 3, 5)))
    assert member.state is MemberState.EXCLUDED
    assert transitions(member)[2:] == [
        ("admitted", "in_breach"),
        ("in_breach", "admitted"),
        ("admitted", "in_breach"),
        ("in_breach", "excluded"),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        cancelled(date(2026, 9, 10), "iv-3"),
        bronze(date(2026, 9, 10)),
        withdrawn(date(2026, 9, 10)),
    ],
    ids=["cancelled", "completed", "withdrawn"],
)
def test_an_event_after_a_due_exclusion_is_parked_or_refused_not_crashed(
    raw: dict[str, Any],
) -> None:
    member = admitted_member(EXCLUDING)
    member.tick(day(date(2026, 3, 5)))  # in breach; the exclusion is due 2026-09-05
    assert member.state is MemberState.IN_BREACH
    decision = member.send(raw)
    if raw["type"] == "gocluster.application.withdrawn":
        assert isinstance(decision, Refuse)
        assert "excluded" in decision.message
    else:  # an interview waits for a new admission (or its park_ttl)
        assert isinstance(decision, Park)
    assert member.state is MemberState.IN_BREACH  # check fired nothing itself


def test_a_submission_after_a_due_exclusion_is_a_new_application() -> None:
    member = admitted_member(EXCLUDING)
    member.tick(day(date(2026, 3, 5)))
    member.apply(submitted(date(2026, 9, 10)))
    assert transitions(member)[-2:] == [("in_breach", "excluded"), ("excluded", "applied")]


def test_an_excluded_cluster_may_apply_again() -> None:
    member = admitted_member(EXCLUDING)
    member.tick(day(date(2026, 9, 5)))
    member.apply(submitted(date(2026, 10, 1)))
    member.apply(assessed(date(2026, 12, 1)))
    assert transitions(member)[-3:] == [
        ("in_breach", "excluded"),
        ("excluded", "applied"),
        ("applied", "admitted"),
    ]
    assert member.cluster.cycle == 2


# -- determinism --------------------------------------------------------------------------


def test_the_same_events_give_the_same_output_ids_and_every_cause_id_is_cited() -> None:
    events = [
        submitted(date(2025, 5, 12), event_id="a-1"),
        assessed(ADMITTED, event_id="a-2"),
        bronze(date(2025, 11, 20), event_id="i-1", interview_id="bm-1"),
    ]
    first, second = Member(), Member()
    for raw in events:
        first.apply(raw)
        second.apply(raw)
    first.tick(datetime(2028, 1, 1, tzinfo=UTC))
    second.tick(datetime(2028, 1, 1, tzinfo=UTC))
    assert [o.event_id for o in first.outputs] == [o.event_id for o in second.outputs]
    assert len({o.event_id for o in first.outputs}) == len(first.outputs)
    causes = {o.data["cause_id"] for o in first.outputs}
    assert {"a-1", "a-2", "i-1"} <= causes
    timer_ids = {t.timer_id for t in first.cluster.timers}
    assert causes - {"a-1", "a-2", "i-1"} <= timer_ids


def test_a_fired_timer_does_not_fire_again() -> None:
    member = admitted_member()
    member.tick(day(date(2026, 3, 5)))
    count = len(member.steps)
    member.tick(day(date(2026, 3, 5)))
    assert len(member.steps) == count
    fired = [t for t in member.cluster.timers if t.status is TimerStatus.FIRED]
    assert len(fired) == 3  # two reminders and the breach of bronze_interview


def test_scheduling_and_cancelling_an_interview_only_records_history() -> None:
    member = admitted_member()
    step = member.apply(scheduled(noon(date(2025, 10, 2)), "iv-7"))
    assert step.outputs == []
    assert "iv-7 scheduled" in step.history[0].note
    step = member.apply(cancelled(noon(date(2025, 10, 9)), "iv-7"))
    assert "iv-7 cancelled" in step.history[0].note
    assert member.state is MemberState.ADMITTED
