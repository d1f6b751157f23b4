"""A bounded bad-input campaign: N generated bad records per category through the real path.

Each record goes through ``consumers.event_consumer.decode`` (what the consumer
runs on every polled record) and then, in batches, through a real ``Workflow``
on a temporary SQLite database, exactly as ``gocluster run`` would apply them;
parked events left at the end are expired as the timer loop would. The JSON
summary counts, per category: records tried, what the decoder concluded, what
the workflow did, the DLQ records per ``error.class``, and the failures that
must stay at zero: exceptions that escaped (``unhandled``), records with no
outcome (``unaccounted``) and DLQ records that are not the original bytes.

    python -m reliability.bad_input --out reliability/results/bad_input.json
    python -m reliability.bad_input --per-category 50 --seed 7 --out /tmp/bad.json

Exit status 1 if any of those must-be-zero counts is not zero.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord

from consumers.config import Settings
from consumers.event_consumer import decode
from consumers.records import RecordOrigin, dlq_record
from reliability.bad_input_cases import CATEGORIES, TOPIC, Events, Record
from workflows.dates import FixedClock
from workflows.engine import Inbound, Workflow
from workflows.policy import load_policy
from workflows.store.database import create_db_engine, upgrade

BATCH = 100
NOW = datetime(2025, 6, 1, tzinfo=UTC)


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
            workflow = Workflow(engine, load_policy(), FixedClock(NOW), "/gocluster/campaign")
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
