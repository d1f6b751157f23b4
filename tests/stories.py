"""Deterministic multi-cluster stories: CloudEvent dicts for the tests and the benchmarks.

`generate(clusters=50, seed=7)` returns the same events on every call with the
same arguments. Each cluster is submitted and assessed on the applications
topic; a share is rejected; the admitted ones go through interviews on the
interviews topic (benchmarking, some Silver audits, a few Gold assessments),
some of which fail, and whose `held_on` dates are spread around the policy's
deadlines (Bronze within 6 months, Silver within 24), so reminders, breaches,
cures and label expiries all happen when timers fire.

Why a replay gives the same outputs whatever the cross-topic order
------------------------------------------------------------------
Kafka keeps the order of one cluster's events within a topic, never across the
two input topics. Every story is built so that, per cluster, the effective
times (CONTRACT.md section 4) of its interview events increase in topic order,
and a cluster that gets interviews is admitted and never leaves membership
again (no withdrawals, no interviews for rejected clusters). An interview that
arrives before the admission is parked and, once the cluster is admitted,
applied in effective-time order, which is then its topic order: the
sequence of causes applied to each cluster (submitted, assessed, interviews,
timers fired by effective time) is the same for every interleaving of the two
topics, and output ids, contents and final states are functions of that
sequence. Withdrawals or interviews of rejected clusters would break that (an
interview refused or applied depending on which topic was read first), which
is why `generate` does not produce them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

__all__ = [
    "Mode",
    "Story",
    "binary_record",
    "generate",
    "interleave",
    "record",
    "structured_record",
    "topic_of",
    "write_jsonl",
]

BERLIN = ZoneInfo("Europe/Berlin")
PORTAL = "/go-cluster/portal"
ECEI = "/ecei/benchmarking"
STATES = ("DE-BW", "DE-BY", "DE-BE", "DE-HE", "DE-NI", "DE-NW", "DE-SN", "DE-TH")
CRITERIA = (
    "structure_and_composition",
    "management_and_governance",
    "activities_and_cooperation",
    "visibility_and_impact",
)

Event = dict[str, Any]
Mode = Literal["structured", "binary"]
KafkaRecord = tuple[bytes, bytes, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class Story:
    """All events of a story, in publication-time order (consistent per topic and cluster)."""

    events: tuple[Event, ...]
    clusters: tuple[str, ...]
    rejected: frozenset[str]

    def on(self, topic: str) -> list[Event]:
        """The events of one input topic ("applications" or "interviews"), in topic order."""
        return [e for e in self.events if topic_of(e) == topic]

    def of(self, cluster_id: str) -> list[Event]:
        return [e for e in self.events if e["subject"] == cluster_id]

    @property
    def event_keys(self) -> set[tuple[str, str]]:
        return {(e["source"], e["id"]) for e in self.events}


def generate(clusters: int = 50, seed: int = 7, prefix: str = "cl") -> Story:
    """A story of `clusters` clusters; equal arguments give equal stories."""
    rng = random.Random(seed)
    builder = _Builder(rng, prefix)
    ids = [f"{prefix}-{n:04d}" for n in range(clusters)]
    rejected: set[str] = set()
    for cluster_id in ids:
        if not builder.cluster(cluster_id):
            rejected.add(cluster_id)
    events = sorted(builder.events, key=lambda e: (_instant(e["time"]), builder.order[id(e)]))
    return Story(tuple(events), tuple(ids), frozenset(rejected))


def topic_of(event: Event) -> str:
    """The input topic an event travels on (CONTRACT.md section 2)."""
    return "applications" if event["type"].startswith("gocluster.application.") else "interviews"


def interleave(story: Story, seed: int) -> list[Event]:
    """A random merge of the two topics that keeps each topic's own order."""
    rng = random.Random(seed)
    queues = [story.on("applications"), story.on("interviews")]
    merged: list[Event] = []
    while any(queues):
        weights = [len(q) for q in queues]
        queue = rng.choices(queues, weights=weights)[0]
        merged.append(queue.pop(0))
    return merged


def structured_record(event: Event) -> KafkaRecord:
    """Structured mode: the whole event as application/cloudevents+json."""
    value = json.dumps(event, separators=(",", ":")).encode("utf-8")
    return event["subject"].encode(), value, [("content-type", b"application/cloudevents+json")]


def binary_record(event: Event) -> KafkaRecord:
    """Binary mode: attributes as ce_* headers, `data` as the JSON value."""
    headers = [
        (f"ce_{name}", str(value).encode("utf-8"))
        for name, value in event.items()
        if name not in ("data", "datacontenttype")
    ]
    headers.append(("content-type", event.get("datacontenttype", "application/json").encode()))
    value = json.dumps(event["data"], separators=(",", ":")).encode("utf-8")
    return event["subject"].encode(), value, headers


def record(event: Event, mode: Mode) -> KafkaRecord:
    return structured_record(event) if mode == "structured" else binary_record(event)


def mixed_records(events: Iterable[Event], seed: int) -> Iterator[KafkaRecord]:
    """Each event in a (seeded) random mode: both bindings in one topic."""
    rng = random.Random(seed)
    for event in events:
        yield record(event, rng.choice(("structured", "binary")))


def write_jsonl(events: Sequence[Event], path: Path) -> Path:
    path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events), "utf-8")
    return path


# -- building -------------------------------------------------------------------


class _Builder:
    def __init__(self, rng: random.Random, prefix: str) -> None:
        self.rng = rng
        self.prefix = prefix
        self.events: list[Event] = []
        self.order: dict[int, int] = {}  # tie-break equal times by creation order
        # A story spans up to six years from here: it ends before the wall clock, so a
        # service on the wall clock parks none of its events as future (max_clock_skew).
        self.start = date(2020, 11, 2)

    def cluster(self, cluster_id: str) -> bool:
        """Add one cluster's events; False when its application is rejected."""
        rng = self.rng
        submitted_on = self.start + timedelta(days=rng.randrange(0, 540))
        self._add(
            cluster_id,
            "gocluster.application.submitted",
            PORTAL,
            _at(submitted_on, 9 + rng.randrange(8)),
            {
                "cluster_name": f"Cluster {cluster_id}",
                "organisation": f"Organisation of {cluster_id} e.V.",
                "federal_state": rng.choice(STATES),
            },
        )
        assessed_on = submitted_on + timedelta(days=rng.randrange(30, 120))
        admitted = rng.random() >= 0.15
        criteria = dict.fromkeys(CRITERIA, True)
        if not admitted:
            criteria[rng.choice(CRITERIA)] = False
        self._add(
            cluster_id,
            "gocluster.application.assessed",
            PORTAL,
            _at(assessed_on, 16),
            {"assessed_on": assessed_on.isoformat(), "criteria": criteria},
        )
        if admitted:
            self._interviews(cluster_id, assessed_on)
        return admitted

    def _interviews(self, cluster_id: str, admitted_on: date) -> None:
        rng = self.rng
        # Bronze is due 6 months (~182 days) after admission: about a third are late
        # (breach, then cure); some clusters never get one before the story ends.
        if rng.random() < 0.1:
            return
        held = admitted_on + timedelta(days=rng.randrange(40, 260))
        passed = rng.random() >= 0.15
        self._interview(cluster_id, "benchmarking", held, _benchmarking(rng, passed))
        if not passed or rng.random() < 0.4:
            return
        # Silver is due 24 months (~730 days) after admission.
        held = held + timedelta(days=rng.randrange(200, 760))
        passed = rng.random() >= 0.2
        self._interview(cluster_id, "silver_audit", held, _silver(rng, passed))
        if not passed or rng.random() < 0.6:
            return
        held = held + timedelta(days=rng.randrange(150, 500))
        self._interview(cluster_id, "gold_assessment", held, _gold(rng, rng.random() >= 0.3))

    def _interview(self, cluster_id: str, kind: str, held: date, result: Event) -> None:
        rng = self.rng
        interview_id = f"{self.prefix}-iv-{len(self.events):05d}"
        scheduled_at = _at(held - timedelta(days=rng.randrange(14, 40)), 11)
        self._add(
            cluster_id,
            "gocluster.interview.scheduled",
            ECEI,
            scheduled_at,
            {
                "interview_id": interview_id,
                "kind": kind,
                "scheduled_for": _at(held, 10).isoformat(),
            },
        )
        self._add(
            cluster_id,
            "gocluster.interview.completed",
            ECEI,
            _at(held + timedelta(days=rng.randrange(1, 6)), 9),
            {
                "interview_id": interview_id,
                "kind": kind,
                "held_on": held.isoformat(),
                "result": result,
            },
        )

    def _add(self, cluster_id: str, kind: str, source: str, at: datetime, data: Event) -> None:
        short = kind.rsplit(".", 2)[-2][:3] + "-" + kind.rsplit(".", 1)[-1][:4]
        event = {
            "specversion": "1.0",
            "id": f"{self.prefix}-{short}-{len(self.events):05d}",
            "source": source,
            "type": kind,
            "subject": cluster_id,
            "time": at.isoformat(),
            "datacontenttype": "application/json",
            "data": {"cluster_id": cluster_id, **data},
        }
        self.order[id(event)] = len(self.events)
        self.events.append(event)


def _benchmarking(rng: random.Random, passed: bool) -> Event:
    if passed:
        return {"indicators_benchmarked": rng.randrange(36, 60), "eligibility_met": True}
    if rng.random() < 0.5:
        return {"indicators_benchmarked": rng.randrange(10, 36), "eligibility_met": True}
    return {"indicators_benchmarked": rng.randrange(36, 60), "eligibility_met": False}


def _silver(rng: random.Random, passed: bool) -> Event:
    areas = [{"indicator": f"area-{n}", "validated": True} for n in range(1, 4)]
    minimum = True
    if not passed:
        if rng.random() < 0.5:
            areas[rng.randrange(3)]["validated"] = False
        else:
            minimum = False
    return {"improvement_areas": areas, "minimum_requirements_met": minimum}


def _gold(rng: random.Random, passed: bool) -> Event:
    indicators = {
        f"ind-{n}": {"score": rng.randrange(9, 11), "threshold": 6, "max": 10} for n in range(4)
    }
    if not passed:
        indicators["ind-0"]["score"] = 4  # under its threshold
    return {"indicators": indicators}


def _at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=BERLIN)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)
