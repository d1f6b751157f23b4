"""Input events for the domain tests: raw CloudEvent dicts and the typed `InputEvent`s.

Every builder returns the structured CloudEvent as a producer would send it;
`typed()` decodes it with the real decoder (schemas.validate.parse_event), so a
unit test of the Decider sees exactly what the consumer would hand it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from schemas.messages import InputEvent
from schemas.validate import parse_event
from workflows.policy import Policy, load_policy

BERLIN = ZoneInfo("Europe/Berlin")
PORTAL = "/go-cluster/portal"
INTERVIEWS = "/ecei/benchmarking"
CLUSTER = "cluster-automotive"

ALL_CRITERIA = {
    "structure_and_composition": True,
    "management_and_governance": True,
    "activities_and_cooperation": True,
    "visibility_and_impact": True,
}

_ids = itertools.count(1)

Raw = dict[str, Any]


def bundled_policy(**changes: Any) -> Policy:
    """The bundled policy, with top-level keys replaced (validated like a file would be)."""
    base = load_policy().model_dump(mode="json")
    return Policy.model_validate({**base, **changes})


def noon(day: date) -> datetime:
    """Mid-day in Berlin: a publication time safely inside `day` whatever the DST offset."""
    return datetime.combine(day, time(12), tzinfo=BERLIN)


def cloud_event(
    event_type: str,
    data: Mapping[str, Any],
    *,
    at: datetime,
    cluster_id: str = CLUSTER,
    event_id: str | None = None,
    source: str = PORTAL,
) -> Raw:
    return {
        "specversion": "1.0",
        "id": event_id or f"ev-{next(_ids)}",
        "source": source,
        "type": event_type,
        "subject": cluster_id,
        "time": at.isoformat(),
        "datacontenttype": "application/json",
        "data": {"cluster_id": cluster_id, **data},
    }


def submitted(
    at: datetime | date,
    *,
    cluster_id: str = CLUSTER,
    existing: tuple[str, date] | None = None,
    event_id: str | None = None,
) -> Raw:
    data: dict[str, Any] = {
        "cluster_name": "Cluster Automotive",
        "organisation": "Bayern Innovativ GmbH",
        "federal_state": "DE-BY",
    }
    if existing is not None:
        data["existing_label"] = {"level": existing[0], "valid_until": existing[1].isoformat()}
    return cloud_event(
        "gocluster.application.submitted",
        data,
        at=_instant(at),
        cluster_id=cluster_id,
        event_id=event_id,
    )


def assessed(
    on: date,
    *,
    passed: bool = True,
    cluster_id: str = CLUSTER,
    event_id: str | None = None,
    published: datetime | None = None,
) -> Raw:
    criteria = dict(ALL_CRITERIA)
    if not passed:
        criteria["visibility_and_impact"] = False
    return cloud_event(
        "gocluster.application.assessed",
        {"assessed_on": on.isoformat(), "criteria": criteria},
        at=published or noon(on),
        cluster_id=cluster_id,
        event_id=event_id,
    )


def withdrawn(
    at: datetime | date, *, cluster_id: str = CLUSTER, event_id: str | None = None
) -> Raw:
    return cloud_event(
        "gocluster.application.withdrawn",
        {"reason": "merged with another cluster"},
        at=_instant(at),
        cluster_id=cluster_id,
        event_id=event_id,
    )


def scheduled(
    at: datetime | date,
    interview_id: str,
    *,
    kind: str = "benchmarking",
    cluster_id: str = CLUSTER,
    event_id: str | None = None,
) -> Raw:
    instant = _instant(at)
    return cloud_event(
        "gocluster.interview.scheduled",
        {
            "interview_id": interview_id,
            "kind": kind,
            "scheduled_for": (instant + timedelta(days=14)).isoformat(),
        },
        at=instant,
        cluster_id=cluster_id,
        event_id=event_id,
        source=INTERVIEWS,
    )


def cancelled(
    at: datetime | date,
    interview_id: str,
    *,
    cluster_id: str = CLUSTER,
    event_id: str | None = None,
) -> Raw:
    return cloud_event(
        "gocluster.interview.cancelled",
        {"interview_id": interview_id, "reason": "postponed"},
        at=_instant(at),
        cluster_id=cluster_id,
        event_id=event_id,
        source=INTERVIEWS,
    )


def completed(
    held_on: date,
    kind: str,
    result: Mapping[str, Any],
    *,
    interview_id: str | None = None,
    cluster_id: str = CLUSTER,
    event_id: str | None = None,
    published: datetime | None = None,
) -> Raw:
    return cloud_event(
        "gocluster.interview.completed",
        {
            "interview_id": interview_id or f"iv-{next(_ids)}",
            "kind": kind,
            "held_on": held_on.isoformat(),
            "result": dict(result),
        },
        at=published or noon(held_on + timedelta(days=1)),
        cluster_id=cluster_id,
        event_id=event_id,
        source=INTERVIEWS,
    )


# -- interview results -------------------------------------------------------------


def benchmarking_result(indicators: int = 41, *, eligible: bool = True) -> Raw:
    return {"indicators_benchmarked": indicators, "eligibility_met": eligible}


def silver_result(validated: tuple[bool, ...] = (True, True, True), *, minimum: bool = True) -> Raw:
    return {
        "improvement_areas": [
            {"indicator": f"area-{n}", "validated": ok} for n, ok in enumerate(validated, 1)
        ],
        "minimum_requirements_met": minimum,
    }


def gold_result(*scores: tuple[float, float, float]) -> Raw:
    """Each indicator as (score, threshold, max)."""
    return {
        "indicators": {
            f"ind-{n}": {"score": s, "threshold": t, "max": m} for n, (s, t, m) in enumerate(scores)
        }
    }


PASSING_GOLD = gold_result((9, 6, 10), (8, 6, 10), (9, 6, 10))


def bronze(held_on: date, **kwargs: Any) -> Raw:
    return completed(held_on, "benchmarking", benchmarking_result(), **kwargs)


def silver(held_on: date, **kwargs: Any) -> Raw:
    return completed(held_on, "silver_audit", silver_result(), **kwargs)


def gold(held_on: date, **kwargs: Any) -> Raw:
    return completed(held_on, "gold_assessment", PASSING_GOLD, **kwargs)


def typed(raw: Mapping[str, Any]) -> InputEvent:
    """Decode with the real decoder; a builder bug fails here, not in the domain."""
    return parse_event(dict(raw))


def _instant(at: datetime | date) -> datetime:
    if isinstance(at, datetime):
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return noon(at)
