"""The label and deadline rules of DOMAIN.md, as pure functions of the aggregate and the policy."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from schemas.messages import InterviewCompleted, Level
from tests.builders import (
    PASSING_GOLD,
    benchmarking_result,
    bundled_policy,
    completed,
    gold_result,
    silver_result,
    typed,
)
from workflows.aggregate import Cluster, Label, LabelStatus, ObligationKind
from workflows.policy import Policy, load_policy
from workflows.rules import (
    admission_obligations,
    award_validity,
    evaluate_interview,
    label_end,
    obligations_met_by,
    reminder_days,
    renewal_due,
)

POLICY = load_policy()
MONTH_END_POLICY = bundled_policy(validity_ends="month_end")
HELD = date(2026, 5, 20)


def interview(kind: str, result: dict[str, Any], held_on: date = HELD) -> InterviewCompleted:
    data = typed(completed(held_on, kind, result)).data
    assert isinstance(data, InterviewCompleted)
    return data


def label(
    level: Level,
    valid_until: date,
    *,
    status: LabelStatus = LabelStatus.VALID,
    awarded_on: date | None = date(2024, 1, 10),
    name: str = "L",
) -> Label:
    return Label(name, "c1", level, awarded_on, valid_until, "iv", False, status, "cause")


def cluster(*labels: Label) -> Cluster:
    return Cluster("c1", state="admitted", labels=list(labels))


# -- Bronze: >= 36 indicators and eligibility --------------------------------------------


def test_a_benchmarking_of_36_indicators_with_eligibility_earns_bronze() -> None:
    verdict = evaluate_interview(
        POLICY, cluster(), interview("benchmarking", benchmarking_result(36))
    )
    assert verdict.level is Level.BRONZE


def test_a_benchmarking_of_35_indicators_earns_nothing_and_says_why() -> None:
    verdict = evaluate_interview(
        POLICY, cluster(), interview("benchmarking", benchmarking_result(35))
    )
    assert verdict.level is None
    assert "35 of 36 indicators" in verdict.reason


def test_a_benchmarking_without_eligibility_earns_nothing_and_says_why() -> None:
    result = benchmarking_result(120, eligible=False)
    verdict = evaluate_interview(POLICY, cluster(), interview("benchmarking", result))
    assert verdict.level is None
    assert "eligibility" in verdict.reason


def test_the_bronze_indicator_minimum_comes_from_the_policy() -> None:
    policy = bundled_policy(
        labels={
            **load_policy().model_dump(mode="json")["labels"],
            "bronze": {
                **load_policy().model_dump(mode="json")["labels"]["bronze"],
                "min_indicators": 40,
            },
        }
    )
    verdict = evaluate_interview(
        policy, cluster(), interview("benchmarking", benchmarking_result(39))
    )
    assert verdict.level is None
    assert "39 of 40" in verdict.reason


# -- Silver: all 3 areas validated, minimum requirements, prior Bronze ---------------------


def test_a_silver_audit_with_all_areas_validated_after_a_bronze_earns_silver() -> None:
    held = cluster(label(Level.BRONZE, date(2027, 1, 1)))
    verdict = evaluate_interview(POLICY, held, interview("silver_audit", silver_result()))
    assert verdict.level is Level.SILVER


@pytest.mark.parametrize(
    "validated", [(False, True, True), (True, False, True), (True, True, False)]
)
def test_a_silver_audit_with_any_area_not_validated_earns_nothing(
    validated: tuple[bool, ...],
) -> None:
    held = cluster(label(Level.BRONZE, date(2027, 1, 1)))
    verdict = evaluate_interview(POLICY, held, interview("silver_audit", silver_result(validated)))
    assert verdict.level is None
    failed = f"area-{validated.index(False) + 1}"
    assert failed in verdict.reason


def test_a_silver_audit_with_minimum_requirements_unmet_earns_nothing() -> None:
    held = cluster(label(Level.BRONZE, date(2027, 1, 1)))
    result = silver_result(minimum=False)
    verdict = evaluate_interview(POLICY, held, interview("silver_audit", result))
    assert verdict.level is None
    assert "minimum requirements" in verdict.reason


def test_a_silver_audit_of_fewer_than_three_areas_earns_nothing() -> None:
    held = cluster(label(Level.BRONZE, date(2027, 1, 1)))
    result = silver_result((True, True))
    verdict = evaluate_interview(POLICY, held, interview("silver_audit", result))
    assert verdict.level is None
    assert "3 required" in verdict.reason


def test_a_silver_audit_without_a_prior_bronze_earns_nothing() -> None:
    verdict = evaluate_interview(POLICY, cluster(), interview("silver_audit", silver_result()))
    assert verdict.level is None
    assert "no prior Bronze" in verdict.reason


def test_an_expired_bronze_still_counts_as_the_prior_benchmarking_for_silver() -> None:
    held = cluster(label(Level.BRONZE, date(2025, 1, 1), status=LabelStatus.EXPIRED))
    verdict = evaluate_interview(POLICY, held, interview("silver_audit", silver_result()))
    assert verdict.level is Level.SILVER


def test_a_label_held_at_entry_counts_as_the_prior_benchmarking_for_silver() -> None:
    held = cluster(label(Level.BRONZE, date(2027, 1, 1), awarded_on=None))
    verdict = evaluate_interview(POLICY, held, interview("silver_audit", silver_result()))
    assert verdict.level is Level.SILVER


def test_a_prior_gold_also_counts_as_the_prior_benchmarking_for_silver() -> None:
    held = cluster(label(Level.GOLD, date(2027, 1, 1)))
    verdict = evaluate_interview(POLICY, held, interview("silver_audit", silver_result()))
    assert verdict.level is Level.SILVER


# -- Gold: every indicator at its threshold, total >= 80 % ---------------------------------


def test_a_gold_assessment_above_all_thresholds_and_80_percent_earns_gold() -> None:
    verdict = evaluate_interview(POLICY, cluster(), interview("gold_assessment", PASSING_GOLD))
    assert verdict.level is Level.GOLD


def test_a_gold_indicator_exactly_at_its_threshold_reaches_it() -> None:
    result = gold_result((6, 6, 6), (10, 6, 10), (10, 6, 10))  # 26 of 26... of 26: 100 %
    verdict = evaluate_interview(POLICY, cluster(), interview("gold_assessment", result))
    assert verdict.level is Level.GOLD


def test_a_gold_assessment_with_one_indicator_under_threshold_earns_nothing() -> None:
    result = gold_result((10, 6, 10), (5.5, 6, 10), (10, 6, 10))
    verdict = evaluate_interview(POLICY, cluster(), interview("gold_assessment", result))
    assert verdict.level is None
    assert "ind-1" in verdict.reason
    assert "threshold" in verdict.reason


def test_a_gold_assessment_under_80_percent_of_the_maximum_earns_nothing() -> None:
    result = gold_result((7, 6, 10), (8, 6, 10), (8, 6, 10))  # 23 of 30 = 76.7 %
    verdict = evaluate_interview(POLICY, cluster(), interview("gold_assessment", result))
    assert verdict.level is None
    assert "23 of 30" in verdict.reason


@pytest.mark.parametrize(
    "scores",
    [
        ((8, 6, 10), (8, 6, 10), (8, 6, 10)),  # 24 of 30
        ((1, 0.5, 1), (0.7, 0.5, 1), (0.7, 0.5, 1)),  # 2.4 of 3: 0.8 * 3 is 2.4000000000000004
        ((4.2, 3, 5), (3.8, 3, 5)),  # 8.0 of 10
        ((2.8, 2, 3.5), (2.8, 2, 3.5)),  # 5.6 of 7
    ],
)
def test_a_gold_total_of_exactly_80_percent_earns_gold(
    scores: tuple[tuple[float, float, float], ...],
) -> None:
    verdict = evaluate_interview(
        POLICY, cluster(), interview("gold_assessment", gold_result(*scores))
    )
    assert verdict.level is Level.GOLD, verdict.reason


def test_a_gold_assessment_needs_no_prior_label() -> None:
    verdict = evaluate_interview(POLICY, cluster(), interview("gold_assessment", PASSING_GOLD))
    assert verdict.level is Level.GOLD


# -- validity -----------------------------------------------------------------------------


@pytest.mark.parametrize("level", list(Level))
def test_a_first_award_is_valid_24_months_from_the_interview(level: Level) -> None:
    validity = award_validity(POLICY, cluster(), level, date(2025, 11, 20))
    assert validity.valid_until == date(2027, 11, 20)
    assert validity.renewal is False
    assert validity.previous is None


def test_a_first_award_on_29_february_is_valid_to_28_february() -> None:
    validity = award_validity(POLICY, cluster(), Level.BRONZE, date(2024, 2, 29))
    assert validity.valid_until == date(2026, 2, 28)


def test_with_validity_ends_month_end_a_label_runs_to_the_end_of_its_month() -> None:
    validity = award_validity(MONTH_END_POLICY, cluster(), Level.BRONZE, date(2024, 11, 5))
    assert validity.valid_until == date(2026, 11, 30)


def test_label_end_is_the_date_itself_by_default() -> None:
    assert label_end(POLICY, date(2026, 2, 3)) == date(2026, 2, 3)
    assert label_end(MONTH_END_POLICY, date(2026, 2, 3)) == date(2026, 2, 28)
    assert label_end(MONTH_END_POLICY, date(2028, 2, 3)) == date(2028, 2, 29)


@pytest.mark.parametrize("level", list(Level))
def test_a_new_award_while_the_label_is_valid_is_a_renewal_of_36_months(level: Level) -> None:
    previous = label(level, date(2027, 11, 20))
    validity = award_validity(POLICY, cluster(previous), level, date(2027, 10, 1))
    assert validity.renewal is True
    assert validity.valid_until == date(2030, 11, 20)
    assert validity.previous is previous


def test_a_renewal_on_the_last_valid_day_continues_the_label() -> None:
    previous = label(Level.SILVER, date(2027, 11, 20))
    validity = award_validity(POLICY, cluster(previous), Level.SILVER, date(2027, 11, 20))
    assert (validity.renewal, validity.valid_until) == (True, date(2030, 11, 20))


def test_a_new_award_within_the_12_month_grace_after_expiry_is_a_renewal() -> None:
    previous = label(Level.GOLD, date(2027, 11, 20), status=LabelStatus.EXPIRED)
    validity = award_validity(POLICY, cluster(previous), Level.GOLD, date(2028, 11, 20))
    assert validity.renewal is True
    assert validity.valid_until == date(2030, 11, 20)


def test_a_new_award_one_day_after_the_grace_period_is_a_first_award() -> None:
    previous = label(Level.GOLD, date(2027, 11, 20), status=LabelStatus.EXPIRED)
    validity = award_validity(POLICY, cluster(previous), Level.GOLD, date(2028, 11, 21))
    assert validity.renewal is False
    assert validity.valid_until == date(2030, 11, 21)
    assert validity.previous is None


def test_a_label_of_another_level_is_no_basis_for_a_renewal() -> None:
    other = label(Level.BRONZE, date(2027, 11, 20))
    validity = award_validity(POLICY, cluster(other), Level.SILVER, date(2026, 6, 1))
    assert validity.renewal is False
    assert validity.valid_until == date(2028, 6, 1)


def test_a_superseded_label_is_no_basis_for_a_renewal() -> None:
    superseded = label(Level.BRONZE, date(2027, 11, 20), status=LabelStatus.SUPERSEDED)
    validity = award_validity(POLICY, cluster(superseded), Level.BRONZE, date(2026, 6, 1))
    assert validity.renewal is False


def test_a_renewal_continues_the_latest_label_of_that_level() -> None:
    old = label(Level.BRONZE, date(2026, 3, 1), status=LabelStatus.EXPIRED, name="old")
    newer = label(Level.BRONZE, date(2027, 11, 20), name="newer")
    validity = award_validity(POLICY, cluster(old, newer), Level.BRONZE, date(2026, 6, 1))
    assert validity.previous is newer
    assert validity.valid_until == date(2030, 11, 20)


def test_a_label_held_at_entry_is_renewed_like_an_awarded_one() -> None:
    entry = label(Level.SILVER, date(2026, 4, 30), awarded_on=None)
    validity = award_validity(POLICY, cluster(entry), Level.SILVER, date(2026, 4, 1))
    assert (validity.renewal, validity.valid_until) == (True, date(2029, 4, 30))


def test_a_renewal_under_month_end_policy_stays_on_a_month_end() -> None:
    previous = label(Level.BRONZE, date(2026, 2, 28))
    validity = award_validity(MONTH_END_POLICY, cluster(previous), Level.BRONZE, date(2026, 1, 5))
    assert validity.valid_until == date(2029, 2, 28)
    previous = label(Level.BRONZE, date(2025, 2, 28))
    validity = award_validity(MONTH_END_POLICY, cluster(previous), Level.BRONZE, date(2025, 1, 5))
    assert validity.valid_until == date(2028, 2, 29)


# -- obligations at admission ------------------------------------------------------------


def test_admission_without_a_label_owes_bronze_in_6_and_silver_in_24_months() -> None:
    due = admission_obligations(POLICY, cluster(), date(2025, 9, 4))
    assert due == {
        ObligationKind.BRONZE_INTERVIEW: date(2026, 3, 4),
        ObligationKind.SILVER_LABEL: date(2027, 9, 4),
    }


def test_a_valid_bronze_at_admission_satisfies_the_bronze_obligation() -> None:
    held = cluster(label(Level.BRONZE, date(2026, 6, 30)))
    assert admission_obligations(POLICY, held, date(2025, 9, 4)) == {
        ObligationKind.SILVER_LABEL: date(2027, 9, 4)
    }


@pytest.mark.parametrize("level", [Level.SILVER, Level.GOLD])
def test_a_valid_silver_or_gold_at_admission_satisfies_both_obligations(level: Level) -> None:
    held = cluster(label(level, date(2026, 6, 30)))
    assert admission_obligations(POLICY, held, date(2025, 9, 4)) == {}


def test_a_label_valid_through_the_admission_day_still_counts() -> None:
    held = cluster(label(Level.GOLD, date(2025, 9, 4)))
    assert admission_obligations(POLICY, held, date(2025, 9, 4)) == {}


def test_an_expired_label_at_admission_satisfies_nothing() -> None:
    held = cluster(
        label(Level.GOLD, date(2025, 9, 3), status=LabelStatus.EXPIRED),
        label(Level.BRONZE, date(2025, 9, 3)),  # past its valid_until, timer not yet fired
    )
    assert set(admission_obligations(POLICY, held, date(2025, 9, 4))) == {
        ObligationKind.BRONZE_INTERVIEW,
        ObligationKind.SILVER_LABEL,
    }


def test_admission_deadlines_come_from_the_policy() -> None:
    policy = bundled_policy(admission={"bronze_interview_months": 3, "silver_label_months": 18})
    assert admission_obligations(policy, cluster(), date(2025, 8, 31)) == {
        ObligationKind.BRONZE_INTERVIEW: date(2025, 11, 30),
        ObligationKind.SILVER_LABEL: date(2027, 2, 28),
    }


def test_bronze_meets_only_the_bronze_obligation_and_silver_or_gold_meet_all() -> None:
    assert obligations_met_by(Level.BRONZE) == {ObligationKind.BRONZE_INTERVIEW}
    assert obligations_met_by(Level.SILVER) == set(ObligationKind)
    assert obligations_met_by(Level.GOLD) == set(ObligationKind)


# -- label_renewal -----------------------------------------------------------------------


@pytest.mark.parametrize("level", [Level.SILVER, Level.GOLD])
def test_the_last_silver_or_gold_expiring_owes_a_renewal_within_12_months(level: Level) -> None:
    expired = label(level, date(2027, 11, 20), status=LabelStatus.EXPIRED)
    assert renewal_due(POLICY, cluster(expired), expired) == date(2028, 11, 20)


def test_a_bronze_expiring_owes_no_renewal() -> None:
    expired = label(Level.BRONZE, date(2027, 11, 20), status=LabelStatus.EXPIRED)
    assert renewal_due(POLICY, cluster(expired), expired) is None


def test_a_silver_expiring_while_gold_is_valid_owes_no_renewal() -> None:
    expired = label(Level.SILVER, date(2027, 11, 20), status=LabelStatus.EXPIRED, name="s")
    gold = label(Level.GOLD, date(2028, 5, 1), name="g")
    assert renewal_due(POLICY, cluster(expired, gold), expired) is None


def test_a_bronze_still_valid_does_not_spare_the_silver_renewal() -> None:
    expired = label(Level.SILVER, date(2027, 11, 20), status=LabelStatus.EXPIRED, name="s")
    bronze = label(Level.BRONZE, date(2029, 1, 1), name="b")
    assert renewal_due(POLICY, cluster(expired, bronze), expired) == date(2028, 11, 20)


def test_another_label_ending_the_same_day_does_not_spare_the_renewal() -> None:
    expired = label(Level.SILVER, date(2027, 11, 20), status=LabelStatus.EXPIRED, name="s")
    gold = label(Level.GOLD, date(2027, 11, 20), name="g")  # also gone on 11-21
    assert renewal_due(POLICY, cluster(expired, gold), expired) == date(2028, 11, 20)


# -- reminders ---------------------------------------------------------------------------


def test_reminders_fall_90_and_30_days_before_the_due_date() -> None:
    assert reminder_days(POLICY, date(2027, 9, 4), date(2025, 9, 4)) == [
        (90, date(2027, 6, 6)),
        (30, date(2027, 8, 5)),
    ]


def test_a_reminder_day_before_the_obligation_existed_is_skipped() -> None:
    due = date(2026, 3, 4)
    assert reminder_days(POLICY, due, due - timedelta(days=60)) == [(30, date(2026, 2, 2))]


def test_a_reminder_day_equal_to_the_creation_day_is_skipped() -> None:
    due = date(2026, 3, 4)
    assert reminder_days(POLICY, due, due - timedelta(days=90)) == [(30, date(2026, 2, 2))]
    assert reminder_days(POLICY, due, due - timedelta(days=91)) == [
        (90, date(2025, 12, 4)),
        (30, date(2026, 2, 2)),
    ]


def test_no_reminders_for_an_obligation_due_within_30_days() -> None:
    due = date(2026, 3, 4)
    assert reminder_days(POLICY, due, due - timedelta(days=30)) == []


def test_reminder_offsets_come_from_the_policy() -> None:
    policy: Policy = bundled_policy(reminder_days_before=[14, 60])
    assert [days for days, _ in reminder_days(policy, date(2027, 1, 1), date(2026, 1, 1))] == [
        60,
        14,
    ]
