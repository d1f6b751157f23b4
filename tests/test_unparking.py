"""Releasing parked events: each one examined a bounded number of times (linear work), and
no transaction releases more than the workflow's budget, whatever a cluster has parked;
the rest follows in later transactions, in effective-time order."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from tests.builders import assessed, scheduled, submitted, typed
from tests.conftest import SERVICE_SOURCE
from workflows import parking
from workflows.dates import FixedClock
from workflows.decider import Decider
from workflows.engine import Inbound, Workflow
from workflows.policy import Policy
from workflows.store.tables import history, parked

CLUSTER = "cluster-a"
NOW = datetime(2026, 1, 10, tzinfo=UTC)
FIRST_PLAN = datetime(2025, 6, 1, 8, tzinfo=UTC)


@pytest.fixture(autouse=True, params=["read-per-state", "read-at-once"])
def stored_parked_reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs both ways of reading a cluster's stored parked events: a query per
    change of state, and all of them with one query per transaction (workflows/parking.py)."""
    per_cluster = 0 if request.param == "read-per-state" else 10_000
    monkeypatch.setattr(parking, "PREFETCH_PER_CLUSTER", per_cluster)
    monkeypatch.setattr(parking, "PREFETCH_ROWS", 10_000)


def line(raw: dict[str, Any], number: int = 1) -> Inbound:
    return Inbound({"kind": "line", "line": number, "text": "..."}, event=typed(raw))


def plans(count: int, start: int = 0) -> list[Inbound]:
    """Interviews planned an hour apart: they wait for the cluster's admission."""
    return [
        line(scheduled(FIRST_PLAN + timedelta(hours=n), f"iv-{n}", event_id=f"plan-{n:04d}"))
        for n in range(start, start + count)
    ]


def history_causes(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(history.c.cause_id).order_by(history.c.id)).scalars())


def parked_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(parked.c.id)).all())


def test_releasing_parked_events_examines_each_a_bounded_number_of_times(
    db_engine: Engine, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 interviews wait for the admission and 60 assessments for the submission; the
    first assessment rejects the cluster, the other 59 are refused. Each release step used
    to re-examine every waiting interview: 60 x 60 checks where 2 x 120 do."""
    workflow = Workflow(db_engine, policy, FixedClock(NOW), SERVICE_SOURCE)
    assessments = [
        line(assessed(date(2025, 9, 4), passed=False, event_id=f"ass-{n:02d}")) for n in range(60)
    ]
    workflow.apply_batch(plans(60) + assessments)
    checks: list[str] = []
    real_check = Decider.check

    def counting_check(self: Decider, cluster: Any, event: Any, *args: Any, **kw: Any) -> Any:
        checks.append(event.id)
        return real_check(self, cluster, event, *args, **kw)

    monkeypatch.setattr(Decider, "check", counting_check)
    result = workflow.apply_batch([line(submitted(date(2025, 5, 12)))])

    assert result.count("applied") == 2  # the submission and the first assessment
    assert len(result.rejections) == 59
    assert len(checks) <= 2 * 121, f"{len(checks)} checks to release 60 events"
    assert parked_count(db_engine) == 60, "the interviews wait for a new application"


def test_a_large_release_is_spread_over_transactions_in_effective_time_order(
    db_engine: Engine, policy: Policy
) -> None:
    workflow = Workflow(db_engine, policy, FixedClock(NOW), SERVICE_SOURCE, release_budget=25)
    workflow.apply_batch([line(submitted(date(2025, 5, 12)))])
    workflow.apply_batch(plans(60))
    later = plans(1, start=100)  # planned after all 60, arrives with the admission

    admission = workflow.apply_batch([line(assessed(date(2025, 9, 4))), *later])

    released_now = [o.event_id for o in admission.outcomes if o.outcome == "applied"][1:]
    assert released_now == [f"plan-{n:04d}" for n in range(25)]
    assert [o.outcome for o in admission.outcomes if o.event_id == "plan-0100"] == ["parked"], (
        "an event behind a release in progress waits its turn"
    )
    rounds = []
    for _ in range(10):
        result = workflow.release_parked()
        if not result.outcomes:
            break
        rounds.append([o.event_id for o in result.outcomes if o.outcome == "applied"])
    assert [len(r) for r in rounds] == [25, 11]
    assert rounds[-1][-1] == "plan-0100"
    plan_causes = [c for c in history_causes(db_engine) if c.startswith("plan-")]
    assert plan_causes == sorted(plan_causes), "effective-time order across transactions"
    assert len(plan_causes) == 61
    assert parked_count(db_engine) == 0


def test_a_cluster_that_finds_the_budget_spent_by_another_continues_next_time(
    db_engine: Engine, policy: Policy
) -> None:
    workflow = Workflow(db_engine, policy, FixedClock(NOW), SERVICE_SOURCE, release_budget=25)
    for cluster in ("cl-a", "cl-b"):
        workflow.apply_batch([line(submitted(date(2025, 5, 12), cluster_id=cluster))])
    waiting = [
        line(
            scheduled(FIRST_PLAN + timedelta(hours=n), "iv", cluster_id=c, event_id=f"{c}-{n:02d}")
        )
        for c, count in (("cl-a", 30), ("cl-b", 5))
        for n in range(count)
    ]
    workflow.apply_batch(waiting)

    both = [line(assessed(date(2025, 9, 4), cluster_id=c)) for c in ("cl-a", "cl-b")]
    first = workflow.apply_batch(both)
    rest = workflow.release_parked()

    released = [o.event_id for r in (first, rest) for o in r.outcomes if o.outcome == "applied"]
    assert len([e for e in released if e.startswith("cl-a-")]) == 30
    assert len([e for e in released if e.startswith("cl-b-")]) == 5
    assert parked_count(db_engine) == 0
    assert workflow.release_parked().clusters_woken == 0
