"""The service clock (CONTRACT.md section 4): no event moves a cluster's timers past it by
more than `max_clock_skew`, and under the wall clock a breach waits for
`late_result_allowance` so that a result held on time but published late meets it."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from consumers.timer_loop import TimerLoop
from tests.builders import BERLIN, assessed, bronze, scheduled, submitted, typed
from tests.conftest import SERVICE_SOURCE
from workflows.dates import FixedClock, start_of_day
from workflows.engine import Inbound, Workflow
from workflows.policy import Policy
from workflows.store.queries import cluster_view
from workflows.store.tables import outbox, parked

CLUSTER = "cluster-automotive"
ADMITTED_ON = date(2025, 9, 4)
BRONZE_DUE = date(2026, 3, 4)  # six months after admission
BREACH_AT = start_of_day(BRONZE_DUE + timedelta(days=1), BERLIN)
NOW = datetime(2026, 1, 10, 9, tzinfo=UTC)


def line(raw: dict[str, Any], number: int = 1) -> Inbound:
    return Inbound({"kind": "line", "line": number, "text": "..."}, event=typed(raw))


def admitted(workflow: Workflow, cluster_id: str = CLUSTER) -> None:
    result = workflow.apply_batch(
        [
            line(submitted(date(2025, 5, 12), cluster_id=cluster_id)),
            line(assessed(ADMITTED_ON, cluster_id=cluster_id)),
        ]
    )
    assert result.count("applied") == 2


def outputs(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = select(outbox.c.payload, outbox.c.stream).order_by(outbox.c.seq)
        return [p for p, stream in conn.execute(query) if stream != "dlq"]


def types(payloads: list[dict[str, Any]]) -> list[str]:
    return [p["type"].removeprefix("gocluster.") for p in payloads]


def state(engine: Engine, cluster_id: str = CLUSTER) -> str:
    with engine.connect() as conn:
        view = cluster_view(conn, cluster_id)
    assert view is not None
    return str(view["cluster"]["state"])


def parked_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(parked.c.event_id).order_by(parked.c.id)).scalars())


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def workflow(db_engine: Engine, policy: Policy, clock: FixedClock) -> Workflow:
    """On `clock`, with CLUSTER admitted on 2025-09-04 (its Bronze interview due 2026-03-04)."""
    made = Workflow(db_engine, policy, clock, SERVICE_SOURCE)
    admitted(made)
    return made


# -- max_clock_skew ------------------------------------------------------------------------


def test_an_event_dated_beyond_max_clock_skew_is_parked_and_fires_no_timer(
    workflow: Workflow, db_engine: Engine
) -> None:
    """A producer clock saying 2031 must not fire five years of reminders and breaches."""
    before = outputs(db_engine)
    future = scheduled(datetime(2031, 3, 1, 10, tzinfo=UTC), "iv-2031", event_id="from-2031")

    result = workflow.apply_batch([line(future)])

    assert [(o.event_id, o.outcome) for o in result.outcomes] == [("from-2031", "parked")]
    assert result.outputs == []
    assert outputs(db_engine) == before
    assert state(db_engine) == "admitted"
    assert parked_ids(db_engine) == ["from-2031"]


def test_an_event_within_max_clock_skew_applies_at_once(
    workflow: Workflow, db_engine: Engine, policy: Policy
) -> None:
    assert policy.max_clock_skew == timedelta(hours=1)
    soon = scheduled(NOW + timedelta(minutes=59), "iv-soon", event_id="soon")

    result = workflow.apply_batch([line(soon)])

    assert [o.outcome for o in result.outcomes] == ["applied"]
    assert parked_ids(db_engine) == []


def test_a_parked_future_event_applies_once_the_clock_reaches_it_after_the_timers_before_it(
    workflow: Workflow, db_engine: Engine, policy: Policy, clock: FixedClock
) -> None:
    at = datetime(2026, 4, 1, 10, tzinfo=UTC)  # after the Bronze deadline passed
    workflow.apply_batch([line(scheduled(at, "iv-april", event_id="april"))])

    clock.set(at - policy.max_clock_skew - timedelta(seconds=1))
    early = workflow.release_parked()
    assert early.outcomes == []
    assert parked_ids(db_engine) == ["april"]

    clock.set(at - policy.max_clock_skew)
    released = workflow.release_parked()

    assert [(o.event_id, o.outcome) for o in released.outcomes] == [("april", "applied")]
    assert types(released.outputs) == [
        "deadline.approaching",
        "deadline.approaching",
        "deadline.breached",
        "membership.changed",
    ], "the timers due before the event fired first, by its effective time"
    assert parked_ids(db_engine) == []
    assert workflow.release_parked().outcomes == [], "released once"


def test_a_future_event_is_not_released_early_by_a_change_of_state(
    db_engine: Engine, policy: Policy
) -> None:
    """An interview for an unknown cluster from a producer two years ahead: the admission
    makes its state possible, its date is still beyond the service clock."""
    workflow = Workflow(db_engine, policy, FixedClock(NOW), SERVICE_SOURCE)
    future = bronze(date(2028, 1, 10), event_id="bm-2028")
    assert [o.outcome for o in workflow.apply_batch([line(future)]).outcomes] == ["parked"]

    admitted(workflow)

    assert parked_ids(db_engine) == ["bm-2028"]
    assert "label.awarded" not in types(outputs(db_engine))


def test_a_future_event_still_parked_after_park_ttl_goes_to_the_dlq_as_expired_park(
    workflow: Workflow, db_engine: Engine, policy: Policy, clock: FixedClock
) -> None:
    workflow.apply_batch([line(scheduled(datetime(2031, 3, 1, tzinfo=UTC), "iv", event_id="x"))])

    clock.advance(policy.park_ttl)
    expired = workflow.expire_parked()

    assert [(r.event_id, r.error_class.value) for r in expired.rejections] == [
        ("x", "expired_park")
    ]
    assert parked_ids(db_engine) == []
    clock.set(datetime(2031, 3, 1, tzinfo=UTC))
    assert workflow.release_parked().outcomes == [], "an expired event never takes effect"


def test_release_finds_the_clusters_whose_future_events_came_due_and_only_those(
    workflow: Workflow, db_engine: Engine, clock: FixedClock
) -> None:
    for name in ("cl-a", "cl-b"):
        admitted(workflow, name)
    workflow.apply_batch(
        [
            line(scheduled(NOW + timedelta(days=2), "iv-a", cluster_id="cl-a", event_id="a")),
            line(scheduled(NOW + timedelta(days=9), "iv-b", cluster_id="cl-b", event_id="b")),
        ]
    )

    clock.advance(timedelta(days=2))
    released = workflow.release_parked()

    assert [(o.cluster_id, o.outcome) for o in released.outcomes] == [("cl-a", "applied")]
    assert parked_ids(db_engine) == ["b"]


# -- late_result_allowance -----------------------------------------------------------------


def wall_clock_loop(workflow: Workflow, clock: FixedClock) -> TimerLoop:
    return TimerLoop(workflow, clock, threading.Event(), fire_timers=True)


def test_under_the_wall_clock_a_result_published_the_morning_after_the_due_date_meets_it(
    workflow: Workflow, db_engine: Engine, policy: Policy, clock: FixedClock
) -> None:
    """The contract's own example: held on the due date, published the next morning."""
    loop = wall_clock_loop(workflow, clock)

    clock.set(datetime(2026, 3, 5, 8, tzinfo=BERLIN))
    loop.step()
    assert types(outputs(db_engine))[-2:] == ["deadline.approaching", "deadline.approaching"]
    assert state(db_engine) == "admitted", "no breach while a late result may still come"

    published = datetime(2026, 3, 5, 9, 15, tzinfo=BERLIN)
    result = workflow.apply_batch([line(bronze(BRONZE_DUE, published=published))])
    clock.advance(policy.late_result_allowance + timedelta(days=1))
    loop.step()

    assert types(result.outputs) == ["label.awarded"]
    assert "deadline.breached" not in types(outputs(db_engine))
    assert state(db_engine) == "admitted"


def test_under_the_wall_clock_a_breach_fires_after_the_allowance_with_its_business_time(
    workflow: Workflow, db_engine: Engine, policy: Policy, clock: FixedClock
) -> None:
    loop = wall_clock_loop(workflow, clock)

    clock.set(BREACH_AT + policy.late_result_allowance - timedelta(seconds=1))
    loop.step()
    assert "deadline.breached" not in types(outputs(db_engine))

    clock.set(BREACH_AT + policy.late_result_allowance)
    loop.step()

    breached = [p for p in outputs(db_engine) if p["type"] == "gocluster.deadline.breached"]
    assert [(p["time"], p["data"]["due_on"]) for p in breached] == [
        ("2026-03-05T00:00:00+01:00", "2026-03-04")
    ]
    assert state(db_engine) == "in_breach"


def test_tick_and_event_time_fire_a_breach_at_its_due_time(
    workflow: Workflow, clock: FixedClock
) -> None:
    """The allowance is for the wall clock only: `tick --now` and event time do not wait."""
    admitted(workflow, "cl-2")
    clock.set(BREACH_AT + timedelta(hours=1))

    late = workflow.apply_batch(
        [line(scheduled(BREACH_AT + timedelta(hours=1), "iv", cluster_id="cl-2"))]
    )
    ticked = workflow.fire_due_timers(until=BREACH_AT)

    assert "deadline.breached" in types(ticked.outputs)
    assert "deadline.breached" in types(late.outputs)


def test_reminders_and_label_expiries_are_not_delayed_under_the_wall_clock(
    workflow: Workflow, db_engine: Engine, clock: FixedClock
) -> None:
    clock.set(datetime(2026, 2, 2, 12, tzinfo=BERLIN))
    workflow.apply_batch([line(bronze(date(2026, 2, 1)))])  # valid until 2028-02-01
    loop = wall_clock_loop(workflow, clock)

    clock.set(start_of_day(date(2028, 2, 2), BERLIN))
    loop.step()

    assert "label.expired" in types(outputs(db_engine))
