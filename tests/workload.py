"""A deterministic, seeded multi-cluster workload (for bench/ and reliability/): CloudEvents
as the upstream systems send them.

Each cluster lives a plausible go-cluster life (CONTRACT.md section 3): it applies
(the portal) and is assessed; a rejected one (10 %) stops there, an admitted one
has its Bronze benchmarking scheduled and held (sometimes cancelled and
rescheduled, sometimes failed and retried), some go on to a Silver audit and a
few to a Gold assessment, and labels are renewed every two years. Stories are
cut after their share of the events, so ``workload(2000, 20000)`` is exactly
20,000 events over 2,000 clusters (what rejected clusters leave over goes to
the admitted ones).

No withdrawals and no second application cycles, on purpose: the two input
topics are not ordered against each other, so when the service drains a
backlog, a re-application (or a withdrawal) on the applications topic can be
overtaken by interview events of the same cluster on the interviews topic,
which the service then refuses to the DLQ as ``invalid_transition`` (it parks
only while a cluster is unknown or applied). The benchmarks check that
nothing reaches the DLQ.

Applications go to the applications topic in structured mode, interview
events to the interviews topic in binary mode (``ce_*`` headers), like the
demo; the record key is the cluster id. Events are returned in global
publication-time order, which is also the order a paced producer sends them.

    python -m tests.workload --clusters 3 --events 30   # print the events as JSON Lines
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["Record", "cloud_events", "to_record", "workload"]

BERLIN = ZoneInfo("Europe/Berlin")
PORTAL = "/go-cluster/portal"
INTERVIEWS = "/ecei/benchmarking"
START = date(2016, 1, 4)  # first submissions; stories run for years from here
SPREAD_DAYS = 730  # submissions are spread over two years

APPLICATIONS = "applications"
INTERVIEW_STREAM = "interviews"

_FIELDS = (
    "automotive",
    "photonics",
    "medtech",
    "logistics",
    "aerospace",
    "biotech",
    "hydrogen",
    "textiles",
    "microelectronics",
    "foodtech",
    "maritime",
    "robotics",
    "energy",
    "chemistry",
    "software",
    "timber",
)
_STATES = (
    "DE-BW",
    "DE-BY",
    "DE-BE",
    "DE-BB",
    "DE-HB",
    "DE-HH",
    "DE-HE",
    "DE-MV",
    "DE-NI",
    "DE-NW",
    "DE-RP",
    "DE-SL",
    "DE-SN",
    "DE-ST",
    "DE-SH",
    "DE-TH",
)
_CRITERIA = (
    "structure_and_composition",
    "management_and_governance",
    "activities_and_cooperation",
    "visibility_and_impact",
)
MAX_STORY_EVENTS = 1000  # bound on one cluster's story
ADMITTED = 0.9  # share of applications that pass the assessment


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to produce, with what the benchmarks need to match it."""

    stream: str  # APPLICATIONS | INTERVIEW_STREAM
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    event_id: str
    event_type: str


class _Story:
    """One cluster's life as an endless sequence of events, in its own time order."""

    def __init__(self, index: int, rng: random.Random) -> None:
        self.rng = rng
        self.cluster_id = f"cluster-{_FIELDS[index % len(_FIELDS)]}-{index:05d}"
        self.name = f"Cluster {_FIELDS[index % len(_FIELDS)].title()} {index}"
        self.state = _STATES[rng.randrange(len(_STATES))]
        self.seq = 0
        self.interviews = 0

    # -- event builders ------------------------------------------------------------

    def _event(self, kind: str, data: dict[str, Any], at: datetime, source: str) -> dict[str, Any]:
        self.seq += 1
        prefix = "portal" if source == PORTAL else "ecei"
        return {
            "specversion": "1.0",
            "id": f"{prefix}-{self.cluster_id}-{self.seq:03d}",
            "source": source,
            "type": f"gocluster.{kind}",
            "subject": self.cluster_id,
            "time": at.isoformat(),
            "datacontenttype": "application/json",
            "data": {"cluster_id": self.cluster_id, **data},
        }

    def _office_hours(self, day: date) -> datetime:
        minute = self.rng.randrange(8 * 60, 18 * 60)
        return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=BERLIN)

    def submitted(self, day: date, existing: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "cluster_name": self.name,
            "organisation": f"{self.name} e.V.",
            "federal_state": self.state,
        }
        if existing:
            until = day + timedelta(days=self.rng.randrange(200, 600))
            data["existing_label"] = {"level": "bronze", "valid_until": until.isoformat()}
        return self._event("application.submitted", data, self._office_hours(day), PORTAL)

    def assessed(self, day: date, admitted: bool) -> dict[str, Any]:
        criteria = dict.fromkeys(_CRITERIA, True)
        if not admitted:
            criteria[_CRITERIA[self.rng.randrange(len(_CRITERIA))]] = False
        data = {"assessed_on": day.isoformat(), "criteria": criteria}
        return self._event("application.assessed", data, self._office_hours(day), PORTAL)

    def scheduled(self, day: date, kind: str, held: date) -> tuple[dict[str, Any], str]:
        self.interviews += 1
        interview_id = f"ecei-{kind[:2]}-{self.cluster_id}-{self.interviews:02d}"
        when = datetime.combine(held, time(10), tzinfo=BERLIN)
        data = {"interview_id": interview_id, "kind": kind, "scheduled_for": when.isoformat()}
        event = self._event("interview.scheduled", data, self._office_hours(day), INTERVIEWS)
        return event, interview_id

    def cancelled(self, day: date, interview_id: str) -> dict[str, Any]:
        data = {"interview_id": interview_id, "reason": "postponed at the cluster's request"}
        return self._event("interview.cancelled", data, self._office_hours(day), INTERVIEWS)

    def completed(
        self, interview_id: str, kind: str, held: date, result: dict[str, Any]
    ) -> dict[str, Any]:
        data = {"interview_id": interview_id, "kind": kind, "held_on": held.isoformat()}
        data["result"] = result
        published = held + timedelta(days=self.rng.randrange(1, 4))
        return self._event("interview.completed", data, self._office_hours(published), INTERVIEWS)

    # -- results -------------------------------------------------------------------

    def benchmarking_result(self, passing: bool) -> dict[str, Any]:
        if passing:
            return {"indicators_benchmarked": self.rng.randrange(36, 61), "eligibility_met": True}
        if self.rng.random() < 0.5:
            return {"indicators_benchmarked": self.rng.randrange(20, 36), "eligibility_met": True}
        return {"indicators_benchmarked": self.rng.randrange(36, 61), "eligibility_met": False}

    def silver_result(self, passing: bool) -> dict[str, Any]:
        areas = [
            {"indicator": f"{n}.{self.rng.randrange(1, 9)}", "validated": True}
            for n in self.rng.sample(range(1, 12), 3)
        ]
        if not passing:
            areas[self.rng.randrange(3)]["validated"] = False
        return {"improvement_areas": areas, "minimum_requirements_met": True}

    def gold_result(self) -> dict[str, Any]:
        indicators = {}
        for n in range(1, 6):
            threshold = self.rng.randrange(5, 8)
            score = min(10, threshold + self.rng.randrange(1, 4))
            indicators[f"gold-{n}"] = {"score": score, "threshold": threshold, "max": 10}
        return {"indicators": indicators}

    # -- the life ------------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        """Endless for an admitted cluster (label cycles); two events for a rejected one."""
        rng = self.rng
        day = START + timedelta(days=rng.randrange(SPREAD_DAYS))
        yield self.submitted(day, existing=rng.random() < 0.05)
        day += timedelta(days=rng.randrange(30, 91))
        admitted = rng.random() < ADMITTED
        yield self.assessed(day, admitted)
        first = True
        while admitted:
            day = yield from self.interview(day, "benchmarking", first=first)
            first = False
            if rng.random() < 0.35:
                day = yield from self.interview(day + timedelta(days=rng.randrange(120, 300)), "s")
                if rng.random() < 0.25:
                    start = day + timedelta(days=rng.randrange(120, 300))
                    day = yield from self.interview(start, "gold_assessment")
            day += timedelta(days=rng.randrange(540, 680))  # renewal before the label runs out

    def interview(self, day: date, kind: str, *, first: bool = False) -> Iterator[dict[str, Any]]:
        """Schedule (maybe cancel and reschedule) and hold one interview; returns the day held."""
        rng = self.rng
        kind = "silver_audit" if kind == "s" else kind
        for attempt in range(3):
            booked = day + timedelta(days=rng.randrange(7, 30))
            held = booked + timedelta(days=rng.randrange(30, 110 if first else 60))
            event, interview_id = self.scheduled(booked, kind, held)
            yield event
            if rng.random() < 0.1:
                day = held - timedelta(days=rng.randrange(2, 10))
                yield self.cancelled(day, interview_id)
                continue
            passing = attempt == 2 or rng.random() < 0.9
            if kind == "benchmarking":
                result = self.benchmarking_result(passing)
            elif kind == "silver_audit":
                result = self.silver_result(passing)
            else:
                result = self.gold_result()
            yield self.completed(interview_id, kind, held, result)
            day = held
            if passing:
                break
        return day


def cloud_events(clusters: int, events: int, seed: int = 20250101) -> list[dict[str, Any]]:
    """``events`` CloudEvents over ``clusters`` clusters, in global publication-time order.

    Each cluster gets ``events // clusters`` events where its story is that long;
    what a short (rejected) story leaves over goes to the admitted ones in turn.
    """
    if clusters <= 0 or events < 2 * clusters:
        raise ValueError("need at least one cluster and two events per cluster")
    share = events // clusters
    cap = min(MAX_STORY_EVENTS, 3 * share + 10)
    stories = []
    for index in range(clusters):
        story = _Story(index, random.Random(f"{seed}:{index}"))
        stories.append(list(itertools.islice(story.events(), cap)))
    counts = [min(share, len(story)) for story in stories]
    missing = events - sum(counts)
    for _ in range(cap):  # round-robin top-up, bounded by the longest story
        if missing <= 0:
            break
        for index, story in enumerate(stories):
            if missing > 0 and counts[index] < len(story):
                counts[index] += 1
                missing -= 1
    if missing > 0:
        raise ValueError(f"cannot spread {events} events over {clusters} clusters")
    chosen = [e for story, count in zip(stories, counts, strict=True) for e in story[:count]]
    # Publication order across clusters; per cluster it is the story's order already.
    order = {id(e): n for n, e in enumerate(chosen)}
    chosen.sort(key=lambda e: (datetime.fromisoformat(e["time"]), order[id(e)]))
    return chosen


def to_record(event: dict[str, Any]) -> Record:
    """Applications structured, interviews binary, keyed by cluster id (CONTRACT.md 1)."""
    key = event["subject"].encode()
    if event["type"].startswith("gocluster.application."):
        value = json.dumps(event, separators=(",", ":")).encode()
        headers = [("content-type", b"application/cloudevents+json")]
        return Record(APPLICATIONS, key, value, headers, event["id"], event["type"])
    attributes = {k: v for k, v in event.items() if k not in ("data", "datacontenttype")}
    headers = [(f"ce_{name}", str(value).encode()) for name, value in attributes.items()]
    headers.append(("content-type", b"application/json"))
    value = json.dumps(event["data"], separators=(",", ":")).encode()
    return Record(INTERVIEW_STREAM, key, value, headers, event["id"], event["type"])


def workload(clusters: int, events: int, seed: int = 20250101) -> list[Record]:
    return [to_record(e) for e in cloud_events(clusters, events, seed)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--seed", type=int, default=20250101)
    args = parser.parse_args()
    for event in cloud_events(args.clusters, args.events, args.seed):
        print(json.dumps(event, separators=(",", ":")))


if __name__ == "__main__":
    main()
