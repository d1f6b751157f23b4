"""A bounded bad-input campaign: N generated bad records per category through the real path.

Each record goes through ``consumers.event_consumer.decode`` (what the consumer
runs on every polled record) and then, in batches, through a real ``Workflow``
on a temporary SQLite database, exactly as ``gocluster run`` would apply them;
parked events left at the end are expired as the timer loop would. The JSON
summary counts, per category: records tried, what the decoder concluded, what
the workflow did, the DLQ records per ``error.class``, and the failures that
must stay at zero: exceptions that escaped (``unhandled``), records with no
outcome (``unaccounted``) and DLQ records that are not the original bytes.

    python bench/bad_input_report.py --out bench/results/bad_input.json
    python bench/bad_input_report.py --per-category 50 --seed 7 --out /tmp/bad.json

Exit status 1 if any of those must-be-zero counts is not zero.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/bad_input_report.py` from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kafka.consumer.fetcher import ConsumerRecord

from consumers.config import Settings
from consumers.event_consumer import decode
from consumers.records import RecordOrigin, dlq_record
from workflows.dates import FixedClock
from workflows.engine import Inbound, Workflow
from workflows.policy import load_policy
from workflows.store.database import create_db_engine, upgrade

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
STRUCTURED = [("content-type", b"application/cloudevents+json")]
TOPIC = "gocluster.applications"
BATCH = 100
NOW = datetime(2025, 6, 1, tzinfo=UTC)

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
            "source": "/bench/portal",
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


# -- the campaign ---------------------------------------------------------------------------

Originals = dict[tuple[str, int], tuple[bytes | None, bytes | None]]  # (topic, offset) -> bytes


def run_category(
    name: str,
    make: Callable[..., Record],
    workflow: Workflow,
    rng: random.Random,
    n: int,
    limit: int,
    originals: Originals,
) -> dict[str, Any]:
    """Decode n records of one category, apply them in batches, count what became of each."""
    events = Events(rng, name)
    topic = f"{TOPIC}.{name}"
    stats: Counter[str] = Counter()
    dlq: Counter[str] = Counter()
    examples: list[str] = []
    items: list[Inbound] = []
    for offset in range(n):
        stats["tried"] += 1
        try:
            key, value, headers = make(rng, events, limit)
            record = ConsumerRecord(
                topic, 0, None, offset, 0, 0, key, value, headers, None, -1, -1, -1
            )
            originals[(topic, offset)] = (key, value)
            item = decode(record, limit)
        except Exception:
            stats["unhandled"] += 1
            examples.append(traceback.format_exc(limit=3))
            continue
        stats["decoder_accepted" if item.event is not None else "decoder_rejected"] += 1
        items.append(item)
    seen: set[int] = set()
    for start in range(0, len(items), BATCH):
        try:
            result = workflow.apply_batch(items[start : start + BATCH])
        except Exception:
            stats["unhandled"] += 1
            examples.append(traceback.format_exc(limit=3))
            continue
        for outcome in result.outcomes:
            if outcome.outcome != "rejected":
                stats[outcome.outcome] += 1
            seen.add(outcome.origin["offset"])
        for rejection in result.rejections:
            dlq[rejection.error_class.value] += 1
            seen.add(rejection.origin["offset"])
            stats["dlq_original_kept"] += _dlq_keeps_original(rejection, originals)
    mine = {offset for t, offset in originals if t == topic}
    stats["unaccounted"] = len(mine - seen) if not stats["unhandled"] else 0
    return {**stats, "dlq": dict(dlq), "examples": examples[:3]}


def _dlq_keeps_original(rejection: Any, originals: Originals) -> int:
    """Whether the DLQ record built from this rejection carries the original key and value."""
    origin = RecordOrigin.from_json(rejection.origin)
    key, value, _ = dlq_record(origin, rejection.error_class.value, rejection.message)
    return int((key, value) == originals.get((origin.topic, origin.offset)))


def expire_leftovers(workflow: Workflow, report: dict[str, Any], originals: Originals) -> None:
    """Parked events whose state never came go to the DLQ as expired_park, per category."""
    later = NOW + workflow.policy.park_ttl + timedelta(days=1)
    while True:
        result = workflow.expire_parked(now=later)
        if not result.rejections:
            return
        for rejection in result.rejections:
            category = report["categories"][rejection.origin["topic"].removeprefix(f"{TOPIC}.")]
            category["dlq"]["expired_park"] = category["dlq"].get("expired_park", 0) + 1
            category["dlq_original_kept"] += _dlq_keeps_original(rejection, originals)


def campaign(per_category: int, seed: int, limit: int) -> dict[str, Any]:
    started = time.perf_counter()
    report: dict[str, Any] = {
        "what": "bad-input campaign: consumers.event_consumer.decode, then "
        "Workflow.apply_batch on SQLite in batches of 100; parked leftovers expired",
        "per_category": per_category,
        "seed": seed,
        "max_record_bytes": limit,
        "categories": {},
    }
    with tempfile.TemporaryDirectory(prefix="gocluster-bad-input-") as folder:
        engine = create_db_engine(f"sqlite:///{folder}/bad-input.db")
        try:
            upgrade(engine)
            workflow = Workflow(engine, load_policy(), FixedClock(NOW), "/gocluster/bench")
            originals: Originals = {}
            for n, (name, make) in enumerate(CATEGORIES.items()):
                rng = random.Random(f"{seed}-{n}")
                report["categories"][name] = run_category(
                    name, make, workflow, rng, per_category, limit, originals
                )
            expire_leftovers(workflow, report, originals)
        finally:
            engine.dispose()
    totals: Counter[str] = Counter()
    dlq: Counter[str] = Counter()
    for name, category in report["categories"].items():
        category.setdefault("unhandled", 0)
        category.setdefault("dlq_original_kept", 0)
        category["dlq_total"] = sum(category["dlq"].values())
        category["dlq_original_changed"] = category["dlq_total"] - category["dlq_original_kept"]
        counts = {k: v for k, v in category.items() if isinstance(v, int)}
        report["categories"][name] = {
            **dict(sorted(counts.items())),
            "dlq": dict(sorted(category["dlq"].items())),
            "examples": category["examples"],
        }
        totals.update(counts)
        dlq.update(category["dlq"])
    report["totals"] = {**dict(sorted(totals.items())), "dlq": dict(sorted(dlq.items()))}
    report["elapsed_s"] = round(time.perf_counter() - started, 2)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the JSON summary goes")
    parser.add_argument("--per-category", type=int, default=200, help="records per category")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-record-bytes",
        type=int,
        default=None,
        help="the size limit (default: GOCLUSTER_MAX_RECORD_BYTES, else 1 MiB)",
    )
    args = parser.parse_args(argv)
    limit = args.max_record_bytes or Settings().max_record_bytes
    report = campaign(args.per_category, args.seed, limit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    totals = report["totals"]
    print(
        f"{totals['tried']} records in {len(CATEGORIES)} categories, {report['elapsed_s']} s: "
        f"DLQ {totals['dlq']}, applied {totals.get('applied', 0)}, "
        f"unhandled {totals.get('unhandled', 0)}, unaccounted {totals.get('unaccounted', 0)}, "
        f"DLQ records changed {totals.get('dlq_original_changed', 0)} -> {args.out}"
    )
    failed = sum(totals.get(k, 0) for k in ("unhandled", "unaccounted", "dlq_original_changed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
