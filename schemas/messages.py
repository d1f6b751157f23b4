"""Typed input messages: what a validated CloudEvent of each input type decodes to.

The domain reads only these, never raw JSON, so a field the schema lets through
is a field the domain can rely on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any


class Level(StrEnum):
    BRONZE = "bronze"
    SILVER = "silver"
    GOLD = "gold"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Level.BRONZE: 1, Level.SILVER: 2, Level.GOLD: 3}


class InterviewKind(StrEnum):
    BENCHMARKING = "benchmarking"
    SILVER_AUDIT = "silver_audit"
    GOLD_ASSESSMENT = "gold_assessment"


class EventType(StrEnum):
    APPLICATION_SUBMITTED = "gocluster.application.submitted"
    APPLICATION_ASSESSED = "gocluster.application.assessed"
    APPLICATION_WITHDRAWN = "gocluster.application.withdrawn"
    INTERVIEW_SCHEDULED = "gocluster.interview.scheduled"
    INTERVIEW_COMPLETED = "gocluster.interview.completed"
    INTERVIEW_CANCELLED = "gocluster.interview.cancelled"


class OutputType(StrEnum):
    LABEL_AWARDED = "gocluster.label.awarded"
    LABEL_EXPIRED = "gocluster.label.expired"
    DEADLINE_BREACHED = "gocluster.deadline.breached"
    DEADLINE_APPROACHING = "gocluster.deadline.approaching"
    MEMBERSHIP_CHANGED = "gocluster.membership.changed"


@dataclass(frozen=True, slots=True)
class ExistingLabel:
    level: Level
    valid_until: date


@dataclass(frozen=True, slots=True)
class ApplicationSubmitted:
    cluster_id: str
    cluster_name: str
    organisation: str
    federal_state: str
    existing_label: ExistingLabel | None = None


@dataclass(frozen=True, slots=True)
class Criteria:
    structure_and_composition: bool
    management_and_governance: bool
    activities_and_cooperation: bool
    visibility_and_impact: bool

    @property
    def all_met(self) -> bool:
        return all(
            (
                self.structure_and_composition,
                self.management_and_governance,
                self.activities_and_cooperation,
                self.visibility_and_impact,
            )
        )

    def failed(self) -> list[str]:
        return [name for name in self.__slots__ if not getattr(self, name)]


@dataclass(frozen=True, slots=True)
class ApplicationAssessed:
    cluster_id: str
    assessed_on: date
    criteria: Criteria


@dataclass(frozen=True, slots=True)
class ApplicationWithdrawn:
    cluster_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class InterviewScheduled:
    cluster_id: str
    interview_id: str
    kind: InterviewKind
    scheduled_for: datetime


@dataclass(frozen=True, slots=True)
class BenchmarkingResult:
    indicators_benchmarked: int
    eligibility_met: bool


@dataclass(frozen=True, slots=True)
class ImprovementArea:
    indicator: str
    validated: bool


@dataclass(frozen=True, slots=True)
class SilverAuditResult:
    improvement_areas: tuple[ImprovementArea, ...]
    minimum_requirements_met: bool


@dataclass(frozen=True, slots=True)
class GoldIndicator:
    score: float
    threshold: float
    max: float


@dataclass(frozen=True, slots=True)
class GoldAssessmentResult:
    indicators: Mapping[str, GoldIndicator]


InterviewResult = BenchmarkingResult | SilverAuditResult | GoldAssessmentResult


@dataclass(frozen=True, slots=True)
class InterviewCompleted:
    cluster_id: str
    interview_id: str
    kind: InterviewKind
    held_on: date
    result: InterviewResult


@dataclass(frozen=True, slots=True)
class InterviewCancelled:
    cluster_id: str
    interview_id: str
    reason: str | None = None


Payload = (
    ApplicationSubmitted
    | ApplicationAssessed
    | ApplicationWithdrawn
    | InterviewScheduled
    | InterviewCompleted
    | InterviewCancelled
)


@dataclass(frozen=True, slots=True)
class InputEvent:
    """A validated input CloudEvent: envelope attributes plus its typed `data`.

    `raw` is the event exactly as received in structured form (extension
    attributes and unknown `data` fields included), so nothing the producer
    sent is lost when the event is parked or stored.
    """

    id: str
    source: str
    type: EventType
    subject: str
    time: datetime  # timezone-aware
    data: Payload
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def cluster_id(self) -> str:
        return self.subject
