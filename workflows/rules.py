"""The programme's rules over the policy: which interview earns which label,
how long a label is valid, which obligations a member has and when they fall due.

Pure functions of the aggregate and the policy: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from schemas.messages import (
    BenchmarkingResult,
    GoldAssessmentResult,
    InterviewCompleted,
    Level,
    SilverAuditResult,
)
from workflows.aggregate import Cluster, Label, LabelStatus, ObligationKind
from workflows.dates import add_months, month_end
from workflows.policy import Policy, ValidityEnds


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an interview earns: a level, or None with the reason it earns nothing."""

    level: Level | None
    reason: str


def evaluate_interview(policy: Policy, cluster: Cluster, completed: InterviewCompleted) -> Verdict:
    result = completed.result
    if isinstance(result, BenchmarkingResult):
        return _benchmarking(policy, result)
    if isinstance(result, SilverAuditResult):
        return _silver_audit(policy, cluster, result)
    return _gold_assessment(policy, result)


def _benchmarking(policy: Policy, result: BenchmarkingResult) -> Verdict:
    needed = policy.labels.bronze.min_indicators
    if result.indicators_benchmarked < needed:
        return Verdict(None, f"only {result.indicators_benchmarked} of {needed} indicators")
    if not result.eligibility_met:
        return Verdict(None, "eligibility criteria not met")
    return Verdict(Level.BRONZE, f"{result.indicators_benchmarked} indicators benchmarked")


def _silver_audit(policy: Policy, cluster: Cluster, result: SilverAuditResult) -> Verdict:
    if not cluster.labels:
        return Verdict(None, "no prior Bronze benchmarking")
    needed = policy.labels.silver.improvement_areas
    areas = result.improvement_areas
    if len(areas) < needed:
        return Verdict(None, f"{len(areas)} improvement areas audited, {needed} required")
    failed = [area.indicator for area in areas if not area.validated]
    if failed:
        return Verdict(None, f"improvement areas not validated: {', '.join(failed)}")
    if not result.minimum_requirements_met:
        return Verdict(None, "minimum requirements not met")
    return Verdict(Level.SILVER, f"all {needed} improvement areas validated")


def _gold_assessment(policy: Policy, result: GoldAssessmentResult) -> Verdict:
    below = sorted(name for name, ind in result.indicators.items() if ind.score < ind.threshold)
    if below:
        return Verdict(None, f"indicators under threshold: {', '.join(below)}")
    # Fix (tests/test_rules.py, exactly 80 %): summed and compared in binary floats,
    # 1 + 0.7 + 0.7 = 2.4 was "under" 0.8 * 3 = 2.4000000000000004. Decimal of each
    # value's shortest repr is the number as the producer wrote it, summed exactly.
    score = sum((_exact(ind.score) for ind in result.indicators.values()), Decimal(0))
    maximum = sum((_exact(ind.max) for ind in result.indicators.values()), Decimal(0))
    ratio = policy.labels.gold.min_total_score_ratio
    total = f"total score {float(score):g} of {float(maximum):g}"
    if maximum <= 0 or score < _exact(ratio) * maximum:
        return Verdict(None, f"{total} is under {ratio:.0%}")
    return Verdict(Level.GOLD, total)


def _exact(value: float) -> Decimal:
    return Decimal(repr(value))


def label_end(policy: Policy, day: date) -> date:
    """Published validity runs to the day or to the end of that month (policy)."""
    return month_end(day) if policy.validity_ends is ValidityEnds.MONTH_END else day


@dataclass(frozen=True, slots=True)
class Validity:
    valid_until: date
    renewal: bool
    previous: Label | None  # the label this award continues, if a renewal


def award_validity(policy: Policy, cluster: Cluster, level: Level, on: date) -> Validity:
    """A renewal continues the previous label of that level seamlessly; else a first award."""
    rules = policy.level(level)
    previous = _renewable(cluster, level, on, rules.renewal_grace_months)
    if previous is not None:
        until = add_months(previous.valid_until, rules.renewal_extension_months)
        return Validity(label_end(policy, until), True, previous)
    until = add_months(on, rules.first_validity_months)
    return Validity(label_end(policy, until), False, None)


def _renewable(cluster: Cluster, level: Level, on: date, grace_months: int) -> Label | None:
    candidates = [
        label
        for label in cluster.labels
        if label.level is level
        and label.status is not LabelStatus.SUPERSEDED
        and on <= add_months(label.valid_until, grace_months)
    ]
    return max(candidates, key=lambda label: label.valid_until, default=None)


def obligations_met_by(level: Level) -> frozenset[ObligationKind]:
    if level is Level.BRONZE:
        return frozenset({ObligationKind.BRONZE_INTERVIEW})
    return frozenset(ObligationKind)


def admission_obligations(
    policy: Policy, cluster: Cluster, admitted_on: date
) -> dict[ObligationKind, date]:
    """A label valid at entry satisfies what it covers (DOMAIN.md, Admission)."""
    held = {label.level for label in cluster.valid_labels(admitted_on)}
    due: dict[ObligationKind, date] = {}
    if not held:
        due[ObligationKind.BRONZE_INTERVIEW] = add_months(
            admitted_on, policy.admission.bronze_interview_months
        )
    if not held & {Level.SILVER, Level.GOLD}:
        due[ObligationKind.SILVER_LABEL] = add_months(
            admitted_on, policy.admission.silver_label_months
        )
    return due


def renewal_due(policy: Policy, cluster: Cluster, expired: Label) -> date | None:
    """A member whose last valid Silver/Gold expired owes a new one (label_renewal)."""
    if expired.level is Level.BRONZE:
        return None
    expired_on = expired.valid_until + timedelta(days=1)
    still_held = [
        label
        for label in cluster.valid_labels(expired_on)
        if label.level in (Level.SILVER, Level.GOLD) and label is not expired
    ]
    if still_held:
        return None
    return add_months(expired.valid_until, policy.label_renewal_months)


def reminder_days(policy: Policy, due_on: date, created_on: date) -> list[tuple[int, date]]:
    """Reminders that still lie ahead of the obligation's creation."""
    return [
        (days, due_on - timedelta(days=days))
        for days in policy.reminder_days_before
        if due_on - timedelta(days=days) > created_on
    ]
