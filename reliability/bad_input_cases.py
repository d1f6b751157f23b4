"""The bad-input campaign's categories: valid events and what each category does to them
(arbitrary bytes, truncated or deeply nested JSON, wrong types, odd Unicode, absurd
dates, unknown types, key/subject mismatches), one Kafka record per call."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["CATEGORIES", "TOPIC", "Events", "Record"]

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
STRUCTURED = [("content-type", b"application/cloudevents+json")]
TOPIC = "gocluster.applications"

# -- events ---------------------------------------------------------------------------------

CRITERIA = {
    "structure_and_composition": True,
    "management_and_governance": True,
    "activities_and_cooperation": True,
    "visibility_and_impact": True,
}
DATA: dict[str, dict[str, Any]] = {
    "gocluster.application.submitted": {
        "cluster_name": "Cluster Nord",
        "organisation": "Nord e.V.",
        "federal_state": "DE-HH",
        "existing_label": {"level": "bronze", "valid_until": "2026-01-31"},
    },
    "gocluster.application.assessed": {"assessed_on": "2025-03-03", "criteria": CRITERIA},
    "gocluster.application.withdrawn": {"reason": "merged"},
    "gocluster.interview.scheduled": {
        "interview_id": "iv-1",
        "kind": "benchmarking",
        "scheduled_for": "2025-04-01T09:30:00+02:00",
    },
    "gocluster.interview.completed": {
        "interview_id": "iv-1",
        "kind": "benchmarking",
        "held_on": "2025-04-01",
        "result": {"indicators_benchmarked": 41, "eligibility_met": True},
    },
    "gocluster.interview.cancelled": {"interview_id": "iv-1", "reason": "postponed"},
}
ODD_TEXT = [
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\u202eevil\u202c",
    "\u200f\u200e",
    "\ufeff",
    "😀",
    "👩‍👩‍👧‍👦",
    "cafe\u0301",
    "İ",
    "１２３",
    "\u3000",
    "\x1b[31m",
]
ABSURD_DATES = [
    "0000-01-01",
    "9999-12-31",
    "2025-02-30",
    "2025-02-29",
    "2025-04-31",
    "2025-13-01",
    "2025-00-10",
    "1989-12-31",
    "2200-01-01",
    "+2025-01-01",
    "2025-1-1",
    "20250101",
]
ABSURD_TIMES = [
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2025-02-30T10:00:00Z",
    "2025-01-01T24:00:00Z",
    "2025-01-01T23:59:60Z",
    "2025-01-01T10:00:00+24:00",
    "2025-01-01T10:00:00",
    "yesterday",
]
DATE_FIELDS = {
    "gocluster.application.submitted": ("data", "existing_label", "valid_until"),
    "gocluster.application.assessed": ("data", "assessed_on"),
    "gocluster.interview.completed": ("data", "held_on"),
    "gocluster.interview.scheduled": ("data", "scheduled_for"),
}


class Events:
    """Valid input events with fresh ids over a small set of clusters."""

    def __init__(self, rng: random.Random, prefix: str) -> None:
        self.rng = rng
        self.prefix = prefix  # a category's clusters are its own: its parked events stay its own
        self.count = 0

    def valid(self, event_type: str | None = None) -> dict[str, Any]:
        self.count += 1
        kind = event_type or self.rng.choice(list(DATA))
        cluster = f"{self.prefix}-{self.rng.randrange(40)}"
        return {
            "specversion": "1.0",
            "id": f"{self.prefix}-ev-{self.count}",
            "source": "/campaign/portal",
            "type": kind,
            "subject": cluster,
            "time": "2025-03-03T12:00:00+01:00",
            "datacontenttype": "application/json",
            "data": {"cluster_id": cluster, **copy.deepcopy(DATA[kind])},
        }


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict) and value:
        for name, item in value.items():
            yield from leaf_paths(item, (*prefix, name))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from leaf_paths(item, (*prefix, index))
    elif prefix:
        yield prefix


def set_path(event: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    parent: Any = event
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return event


def encode(rng: random.Random, event: dict[str, Any], key: bytes | None = None) -> Record:
    """Structured or binary mode at random; lone surrogates become invalid UTF-8 bytes."""
    subject = event.get("subject")
    if key is None and isinstance(subject, str):
        key = subject.encode("utf-8", "surrogatepass")
    if rng.random() < 0.5:
        text = json.dumps(event, ensure_ascii=rng.random() < 0.5)
        return key, text.encode("utf-8", "surrogatepass"), list(STRUCTURED)
    headers = []
    for name, value in event.items():
        if name == "data":
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        header = "content-type" if name == "datacontenttype" else f"ce_{name}"
        headers.append((header, text.encode("utf-8", "surrogatepass")))
    data = json.dumps(event["data"], ensure_ascii=False).encode("utf-8", "surrogatepass")
    return key, data if "data" in event else None, headers


# -- categories: each returns one record ---------------------------------------------------


def arbitrary_bytes(rng: random.Random, events: Events, limit: int) -> Record:
    headers = [
        (
            rng.choice(["content-type", "ce_id", "ce_type", "x", "ce_"]),
            rng.randbytes(rng.randrange(20)),
        )
        for _ in range(rng.randrange(4))
    ]
    key = rng.choice([None, rng.randbytes(rng.randrange(1, 30))])
    return key, rng.randbytes(rng.randrange(0, 2000)), headers


def truncated_json(rng: random.Random, events: Events, limit: int) -> Record:
    key, value, headers = encode(rng, events.valid())
    assert value is not None
    return key, value[: rng.randrange(len(value))], headers


def deep_nesting(rng: random.Random, events: Events, limit: int) -> Record:
    depth = rng.choice([65, 1_000, 10_000, 10_000, 50_000])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    nested = opener * depth + ("1" if opener != "[" else "") + closer * depth
    event = events.valid()
    where = rng.choice(["ext", "data", "value"])
    if where == "value":
        return event["subject"].encode(), nested.encode(), list(STRUCTURED)
    marker = "__deep__"
    if where == "ext":
        event["ext"] = marker
    else:
        event["data"]["portal_extra"] = marker
    value = json.dumps(event).replace(json.dumps(marker), nested)
    return event["subject"].encode(), value.encode(), list(STRUCTURED)


def huge_json(rng: random.Random, events: Events, limit: int) -> Record:
    event = events.valid()
    size = limit + rng.randrange(1, 4096)
    if rng.random() < 0.5:
        event["data"]["padding"] = "x" * size
    else:  # wide rather than long: many small fields
        event["data"]["many"] = {f"f{n}": n for n in range(size // 10)}
    return encode(rng, event)


def wrong_types(rng: random.Random, events: Events, limit: int) -> Record:
    event = events.valid()
    path = rng.choice(list(leaf_paths(event)))
    current = event
    for step in path:
        current = current[step]
    choices: list[Any] = [None, True, 0, -1, 2**70, 1.5, "text", [], [1, "a"], {}, {"x": 1}]
    replacement = rng.choice([c for c in choices if type(c) is not type(current)])
    return encode(rng, set_path(event, path, replacement))


def odd_unicode(rng: random.Random, events: Events, limit: int) -> Record:
    event = events.valid()
    text_paths = [p for p in leaf_paths(event) if isinstance(_get(event, p), str)]
    path = rng.choice([("id",), ("source",), ("subject",), ("data", "cluster_id"), *text_paths])
    odd = rng.choice(ODD_TEXT)
    value = _get(event, path)
    return encode(rng, set_path(event, path, rng.choice([odd, f"{value}{odd}", odd * 3])))


def absurd_dates(rng: random.Random, events: Events, limit: int) -> Record:
    kind = rng.choice([*DATE_FIELDS, "time"])
    if kind == "time":
        event = events.valid()
        return encode(rng, set_path(event, ("time",), rng.choice(ABSURD_TIMES)))
    event = events.valid(kind)
    choices = ABSURD_TIMES if kind == "gocluster.interview.scheduled" else ABSURD_DATES
    return encode(rng, set_path(event, DATE_FIELDS[kind], rng.choice(choices)))


def unknown_types(rng: random.Random, events: Events, limit: int) -> Record:
    event = events.valid()
    event["type"] = rng.choice(
        [
            "gocluster.application.resubmitted",
            "gocluster.label.awarded",
            "gocluster.membership.changed",
            event["type"].upper(),
            event["type"] + " ",
            "com.example.other",
            f"gocluster.{rng.randrange(10**6)}",
        ]
    )
    return encode(rng, event)


def mismatches(rng: random.Random, events: Events, limit: int) -> Record:
    event = events.valid()
    other = f"other-{rng.randrange(100)}"
    which = rng.choice(["data", "key", "key-bytes"])
    if which == "data":
        event["data"]["cluster_id"] = other
        return encode(rng, event)
    key = other.encode() if which == "key" else rng.randbytes(rng.randrange(1, 20))
    return encode(rng, event, key=key)


def valid_control(rng: random.Random, events: Events, limit: int) -> Record:
    """Good records in the same stream, an application then its assessment per cluster:
    every one must be applied."""
    assessed = events.count % 2 == 1
    cluster = f"{events.prefix}-{events.count // 2}"
    event = events.valid(
        "gocluster.application.assessed" if assessed else "gocluster.application.submitted"
    )
    event["subject"] = event["data"]["cluster_id"] = cluster
    return encode(rng, event)


CATEGORIES: dict[str, Callable[[random.Random, Events, int], Record]] = {
    "arbitrary_bytes": arbitrary_bytes,
    "truncated_json": truncated_json,
    "deep_nesting_10k": deep_nesting,
    "huge_json_over_limit": huge_json,
    "wrong_types": wrong_types,
    "odd_unicode": odd_unicode,
    "absurd_dates": absurd_dates,
    "unknown_types": unknown_types,
    "subject_cluster_key_mismatch": mismatches,
    "valid_control": valid_control,
}


def _get(event: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        event = event[step]
    return event
