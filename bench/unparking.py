"""Releasing N parked events of one cluster: total time, and the longest transaction.

One cluster has applied but is not admitted; N interview plans (a minute apart)
wait for its admission, stored directly as parked rows. Then the assessment
arrives: `apply_batch` of that one event releases what its transaction may,
and (where the code has it) `release_parked` continues the rest in further
transactions, as the timer loop does. The longest of those transactions is
what must stay under Kafka's poll interval.

Runs against whatever `workflows` is importable, so the code before a change
can be measured from an export of it:

    python -m bench.unparking --events 20000 100000
    git archive <commit> | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before python /tmp/before/../bench/unparking.py --events 20000

Prints one JSON line per run. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.validate import parse_event
from workflows.dates import FixedClock
from workflows.engine import Inbound, Workflow
from workflows.policy import load_policy
from workflows.store import messages
from workflows.store.database import create_db_engine, upgrade

CLUSTER = "flood"
NOW = datetime(2026, 1, 10, tzinfo=UTC)
FIRST_PLAN = datetime(2025, 6, 1, 8, tzinfo=UTC)
INSERT_CHUNK = 5000


def event(kind: str, event_id: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    source = "/go-cluster/portal" if kind.startswith("application") else "/ecei/benchmarking"
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": f"gocluster.{kind}",
        "subject": CLUSTER,
        "time": at.isoformat(),
        "datacontenttype": "application/json",
        "data": {"cluster_id": CLUSTER, **data},
    }


def plan(n: int) -> dict[str, Any]:
    at = FIRST_PLAN + timedelta(minutes=n)
    data = {"interview_id": f"iv-{n}", "kind": "benchmarking", "scheduled_for": at.isoformat()}
    return event("interview.scheduled", f"plan-{n:06d}", at, data)


def line(raw: dict[str, Any]) -> Inbound:
    return Inbound({"kind": "line", "line": 0, "text": ""}, event=parse_event(raw))


def park_directly(workflow: Workflow, count: int) -> None:
    fields = {f.name for f in dataclasses.fields(messages.ParkedEvent)}
    for start in range(0, count, INSERT_CHUNK):
        rows = []
        for n in range(start, min(count, start + INSERT_CHUNK)):
            raw = plan(n)
            values: dict[str, Any] = {
                "row_id": None,
                "cluster_id": CLUSTER,
                "source": raw["source"],
                "event_id": raw["id"],
                "effective_at": FIRST_PLAN + timedelta(minutes=n),
                "parked_at": NOW,
                "event": raw,
                "origin": {"kind": "line", "line": n, "text": ""},
            }
            if "event_type" in fields:
                values["event_type"] = raw["type"]
            rows.append(messages.ParkedEvent(**values))
        with workflow.db.begin() as conn:
            messages.park(conn, rows)
            messages.record_received(
                conn,
                [
                    {
                        "source": p.source,
                        "event_id": p.event_id,
                        "cluster_id": CLUSTER,
                        "digest": "-",
                        "outcome": "parked",
                        "received_at": NOW,
                    }
                    for p in rows
                ],
            )


def run(url: str, count: int) -> dict[str, Any]:
    engine = create_db_engine(url)
    try:
        upgrade(engine)
        workflow = Workflow(engine, load_policy(), FixedClock(NOW), "/gocluster/bench")
        submitted = event(
            "application.submitted",
            "sub-1",
            datetime(2025, 5, 12, 9, tzinfo=UTC),
            {"cluster_name": "Flood", "organisation": "Org", "federal_state": "DE-BY"},
        )
        workflow.apply_batch([line(submitted)])
        park_directly(workflow, count)
        criteria = dict.fromkeys(
            [
                "structure_and_composition",
                "management_and_governance",
                "activities_and_cooperation",
                "visibility_and_impact",
            ],
            True,
        )
        assessed = event(
            "application.assessed",
            "ass-1",
            datetime(2025, 9, 4, 16, tzinfo=UTC),
            {"assessed_on": date(2025, 9, 4).isoformat(), "criteria": criteria},
        )
        transactions: list[float] = []
        released = 0
        started = time.perf_counter()
        result = workflow.apply_batch([line(assessed)])
        transactions.append(time.perf_counter() - started)
        released += result.count("applied") - 1
        while hasattr(workflow, "release_parked"):
            began = time.perf_counter()
            result = workflow.release_parked()
            if not result.clusters_woken:
                break
            transactions.append(time.perf_counter() - began)
            released += result.count("applied")
        total = time.perf_counter() - started
        return {
            "backend": engine.dialect.name,
            "parked": count,
            "released": released,
            "total_s": round(total, 2),
            "transactions": len(transactions),
            "longest_transaction_s": round(max(transactions), 2),
            "events_per_s": round(released / total) if total else None,
        }
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    for count in args.events:
        if args.backend == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                print(json.dumps(run(f"sqlite:///{Path(folder) / 'bench.db'}", count)), flush=True)
        else:
            from tests.dbutil import ADMIN_URL, create_postgres_database, drop_postgres_database

            url = create_postgres_database(ADMIN_URL)
            try:
                print(json.dumps(run(url, count)), flush=True)
            finally:
                drop_postgres_database(ADMIN_URL, url)


if __name__ == "__main__":
    main()
