"""The engine through its entry points (apply_batch, fire_due_timers, expire_parked),
on SQLite and PostgreSQL, with events built as raw CloudEvent dicts."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, Table, func, select

import workflows
from consumers.records import RecordOrigin
from schemas.validate import ErrorClass, Rejected, parse_event, parse_json, validate_output
from tests.dbutil import wait_for_lock_waiter
from workflows.dates import FixedClock, start_of_day
from workflows.engine import BatchResult, Inbound, Workflow
from workflows.policy import Policy
from workflows.store import aggregates, messages
from workflows.store.aggregates import StaleAggregate
from workflows.store.database import create_db_engine, upgrade
from workflows.store.queries import cluster_view
from workflows.store.tables import (
    clusters,
    history,
    inbox,
    labels,
    obligations,
    outbox,
    parked,
    timers,
)

SERVICE = "/gocluster/membership"
PORTAL = "/go-cluster/portal"
ECEI = "/ecei/benchmarking"
# The service clock: after every event of this file's stories (the latest is of 2027-10),
# so that none lies beyond max_clock_skew ahead of it (tests/test_service_clock.py).
START = datetime(2028, 7, 1, tzinfo=UTC)
SAMPLE = Path(workflows.__file__).parent / "samples" / "cluster_automotive.jsonl"


# -- building input --------------------------------------------------------------------------


def cloudevent(
    kind: str, event_id: str, cluster: str, at: str, data: dict[str, Any], source: str = PORTAL
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": f"gocluster.{kind}",
        "subject": cluster,
        "time": at,
        "datacontenttype": "application/json",
        "data": {"cluster_id": cluster, **data},
    }


def submitted(cluster: str, event_id: str, at: str = "2025-05-12T09:30:00+02:00") -> dict[str, Any]:
    data = {"cluster_name": f"Cluster {cluster}", "organisation": "Org", "federal_state": "DE-BY"}
    return cloudevent("application.submitted", event_id, cluster, at, data)


def assessed(
    cluster: str, event_id: str, on: str = "2025-09-04", ok: bool = True
) -> dict[str, Any]:
    criteria = {
        "structure_and_composition": True,
        "management_and_governance": True,
        "activities_and_cooperation": True,
        "visibility_and_impact": ok,
    }
    at = f"{on}T16:10:00+02:00"
    return cloudevent(
        "application.assessed", event_id, cluster, at, {"assessed_on": on, "criteria": criteria}
    )


def withdrawn(cluster: str, event_id: str, at: str) -> dict[str, Any]:
    return cloudevent("application.withdrawn", event_id, cluster, at, {"reason": "merged"})


def scheduled(
    cluster: str, event_id: str, at: str = "2025-10-02T11:00:00+02:00", interview: str = "bm-1"
) -> dict[str, Any]:
    data = {"interview_id": interview, "kind": "benchmarking", "scheduled_for": at}
    return cloudevent("interview.scheduled", event_id, cluster, at, data, ECEI)


def benchmarking(
    cluster: str, event_id: str, held_on: str = "2025-11-20", indicators: int = 41
) -> dict[str, Any]:
    data = {
        "interview_id": f"bm-{event_id}",
        "kind": "benchmarking",
        "held_on": held_on,
        "result": {"indicators_benchmarked": indicators, "eligibility_met": True},
    }
    published = (date.fromisoformat(held_on) + timedelta(days=1)).isoformat()
    return cloudevent(
        "interview.completed", event_id, cluster, f"{published}T09:15:00+01:00", data, ECEI
    )


def silver_audit(cluster: str, event_id: str, held_on: str) -> dict[str, Any]:
    areas = [{"indicator": f"area-{n}", "validated": True} for n in range(3)]
    data = {
        "interview_id": f"sa-{event_id}",
        "kind": "silver_audit",
        "held_on": held_on,
        "result": {"improvement_areas": areas, "minimum_requirements_met": True},
    }
    published = (date.fromisoformat(held_on) + timedelta(days=2)).isoformat()
    return cloudevent(
        "interview.completed", event_id, cluster, f"{published}T09:00:00+02:00", data, ECEI
    )


def story(cluster: str) -> list[dict[str, Any]]:
    """The sample story's shape for any cluster: submitted, admitted, Bronze."""
    return [
        submitted(cluster, f"{cluster}-sub"),
        assessed(cluster, f"{cluster}-ass"),
        scheduled(cluster, f"{cluster}-sch"),
        benchmarking(cluster, f"{cluster}-bm"),
    ]


def line(event: dict[str, Any], number: int = 1) -> Inbound:
    text = json.dumps(event)
    return Inbound({"kind": "line", "line": number, "text": text}, event=parse_event(event))


def kafka_origin(
    event: dict[str, Any] | bytes, offset: int, topic: str = "t.in", partition: int = 0
) -> dict[str, Any]:
    value = event if isinstance(event, bytes) else json.dumps(event).encode()
    key = b"cluster-a" if isinstance(event, bytes) else event["subject"].encode()
    headers = (("content-type", b"application/cloudevents+json"),)
    origin = RecordOrigin(topic, partition, offset, key, value, headers)
    return {"kind": "kafka", **origin.to_json()}


def kafka(
    event: dict[str, Any], offset: int = 0, topic: str = "t.in", partition: int = 0
) -> Inbound:
    """A record at this offset of a partition (a batch skips offsets its partition passed)."""
    return Inbound(kafka_origin(event, offset, topic, partition), event=parse_event(event))


def lines(events: Iterable[dict[str, Any]]) -> list[Inbound]:
    return [line(e, n) for n, e in enumerate(events, 1)]


def sample_inputs() -> list[Inbound]:
    return [
        Inbound({"kind": "line", "line": n, "text": text}, event=parse_json(text))
        for n, text in enumerate(SAMPLE.read_text().splitlines(), 1)
    ]


# -- reading the database --------------------------------------------------------------------


def rows(engine: Engine, table: Table, *order: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = select(table).order_by(*(order or table.primary_key.columns))
        return [dict(r) for r in conn.execute(query).mappings()]


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def outputs_in_outbox(engine: Engine) -> list[dict[str, Any]]:
    return [r["payload"] for r in rows(engine, outbox, outbox.c.seq) if r["stream"] != "dlq"]


def dlq(engine: Engine) -> list[dict[str, Any]]:
    return [r["payload"] for r in rows(engine, outbox, outbox.c.seq) if r["stream"] == "dlq"]


def summary(payload: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(type, time, data without its cause): what a downstream reader acts on."""
    cause = ("cluster_id", "cause_id", "cause_source")
    data = {k: v for k, v in payload["data"].items() if k not in cause}
    return payload["type"].removeprefix("gocluster."), payload["time"], data


def state(engine: Engine, cluster_id: str) -> str:
    with engine.connect() as conn:
        view = cluster_view(conn, cluster_id)
    assert view is not None
    return str(view["cluster"]["state"])


# -- the sample story ------------------------------------------------------------------------


def test_sample_story_admits_awards_bronze_then_reminds_and_breaches_silver(
    workflow: Workflow, db_engine: Engine
) -> None:
    result = workflow.apply_batch(sample_inputs())

    assert [o.outcome for o in result.outcomes] == ["applied"] * 4
    assert [(o.from_state, o.to_state) for o in result.outcomes] == [
        ("unknown", "applied"),
        ("applied", "admitted"),
        ("admitted", "admitted"),
        ("admitted", "admitted"),
    ]
    assert [summary(p) for p in result.outputs] == [
        ("membership.changed", "2025-05-12T09:30:00+02:00", {"from": None, "to": "applied"}),
        ("membership.changed", "2025-09-04T00:00:00+02:00", {"from": "applied", "to": "admitted"}),
        (
            "label.awarded",
            "2025-11-20T00:00:00+01:00",
            {
                "level": "bronze",
                "awarded_on": "2025-11-20",
                "valid_until": "2027-11-20",
                "interview_id": "ecei-bm-2025-117",
                "renewal": False,
            },
        ),
    ]
    assert [p["data"]["cause_id"] for p in result.outputs] == [
        "portal-2025-0412",
        "portal-2025-0977",
        "bm-2025-1342",
    ]

    fired = workflow.fire_due_timers(until=datetime(2027, 9, 10, tzinfo=UTC))

    assert [summary(p) for p in fired.outputs] == [
        (
            "deadline.approaching",
            "2027-06-06T00:00:00+02:00",
            {"obligation": "silver_label", "due_on": "2027-09-04", "days_left": 90},
        ),
        (
            "deadline.approaching",
            "2027-08-05T00:00:00+02:00",
            {"obligation": "silver_label", "due_on": "2027-09-04", "days_left": 30},
        ),
        (
            "deadline.breached",
            "2027-09-05T00:00:00+02:00",
            {"obligation": "silver_label", "due_on": "2027-09-04"},
        ),
        (
            "membership.changed",
            "2027-09-05T00:00:00+02:00",
            {"from": "admitted", "to": "in_breach"},
        ),
    ]
    breach_timer = fired.outputs[2]["data"]["cause_id"]
    assert fired.outputs[3]["data"]["cause_id"] == breach_timer
    timer_kinds = {t["timer_id"]: t["kind"] for t in rows(db_engine, timers)}
    assert timer_kinds[breach_timer] == "breach"
    assert state(db_engine, "cluster-automotive") == "in_breach"

    everything = result.outputs + fired.outputs
    assert outputs_in_outbox(db_engine) == everything, "the outbox holds them, in order"
    for payload in everything:
        validate_output(payload)  # the contract's output schemas
        assert payload["source"] == SERVICE
        assert payload["subject"] == "cluster-automotive"
    assert len({p["id"] for p in everything}) == len(everything)


def test_an_event_applied_at_its_business_date_fires_earlier_timers_first(
    workflow: Workflow, db_engine: Engine
) -> None:
    """A Silver audit held on the due date meets it, though published after the deadline."""
    workflow.apply_batch(sample_inputs())
    audit = silver_audit("cluster-automotive", "sa-1", held_on="2027-09-04")
    result = workflow.apply_batch([line(audit)])

    assert [summary(p)[0] for p in result.outputs] == [
        "deadline.approaching",
        "deadline.approaching",
        "label.awarded",
    ]
    assert result.outputs[2]["data"]["level"] == "silver"
    assert workflow.fire_due_timers(until=datetime(2027, 9, 10, tzinfo=UTC)).outputs == []
    assert state(db_engine, "cluster-automotive") == "admitted"


# -- duplicates and conflicts ----------------------------------------------------------------


def test_the_same_event_twice_in_one_batch_has_one_effect(
    workflow: Workflow, db_engine: Engine
) -> None:
    sub = submitted("cluster-a", "sub-1")
    result = workflow.apply_batch([line(sub, 1), line(sub, 2)])

    assert [o.outcome for o in result.outcomes] == ["applied", "duplicate"]
    assert len(result.outputs) == 1
    assert len(outputs_in_outbox(db_engine)) == 1
    assert [(r["event_id"], r["outcome"]) for r in rows(db_engine, inbox)] == [("sub-1", "applied")]
    assert rows(db_engine, clusters)[0]["cycle"] == 1


def test_the_same_event_in_a_later_batch_is_a_duplicate(
    workflow: Workflow, db_engine: Engine
) -> None:
    events = [submitted("cluster-a", "sub-1"), assessed("cluster-a", "ass-1")]
    first = workflow.apply_batch(lines(events))
    again = workflow.apply_batch(lines(events))

    assert [o.outcome for o in again.outcomes] == ["duplicate", "duplicate"]
    assert again.outputs == []
    assert again.rejections == []
    assert outputs_in_outbox(db_engine) == first.outputs
    assert [(o.event_id, o.cluster_id) for o in again.outcomes] == [
        ("sub-1", "cluster-a"),
        ("ass-1", "cluster-a"),
    ]


def test_a_redelivered_rejected_event_is_a_duplicate_not_a_second_dlq_record(
    workflow: Workflow, db_engine: Engine
) -> None:
    bad = assessed("cluster-a", "ass-2")
    workflow.apply_batch(lines(story("cluster-a")))
    first = workflow.apply_batch([kafka(bad, 10)])
    again = workflow.apply_batch([kafka(bad, 10)])
    assert [o.outcome for o in first.outcomes] == ["rejected"]
    assert [o.outcome for o in again.outcomes] == ["duplicate"]
    assert len(dlq(db_engine)) == 1


def test_same_source_and_id_with_other_content_is_a_conflict(
    workflow: Workflow, db_engine: Engine
) -> None:
    original = submitted("cluster-a", "sub-1")
    workflow.apply_batch([line(original)])
    changed = submitted("cluster-a", "sub-1", at="2025-06-01T10:00:00+02:00")
    other_source = {**submitted("cluster-b", "sub-1"), "source": "/another/portal"}

    result = workflow.apply_batch([kafka(changed, 5), line(other_source)])

    assert [o.outcome for o in result.outcomes] == ["rejected", "applied"]
    (rejection,) = result.rejections
    assert rejection.error_class is ErrorClass.CONFLICT
    assert "sub-1" in rejection.message
    (record,) = dlq(db_engine)
    assert record["error_class"] == "conflict"
    assert record["origin"] == kafka_origin(changed, 5)
    assert [p["subject"] for p in result.outputs] == ["cluster-b"], "another source: new event"
    assert state(db_engine, "cluster-a") == "applied"
    assert [(r["source"], r["digest"] != "") for r in rows(db_engine, inbox)] == [
        ("/another/portal", True),
        (PORTAL, True),
    ]


# -- parking ---------------------------------------------------------------------------------


def test_interviews_before_admission_are_parked_and_applied_in_effective_time_order(
    workflow: Workflow, db_engine: Engine
) -> None:
    c = "cluster-a"
    completed = benchmarking(c, "bm-1", held_on="2025-11-20")
    plan = scheduled(c, "sch-1", at="2025-10-02T11:00:00+02:00")

    first = workflow.apply_batch([line(completed)])  # the cluster is not even known yet
    second = workflow.apply_batch([line(submitted(c, "sub-1")), line(plan)])

    assert [o.outcome for o in first.outcomes] == ["parked"]
    assert [o.outcome for o in second.outcomes] == ["applied", "parked"]
    assert [r["event_id"] for r in rows(db_engine, parked)] == ["bm-1", "sch-1"]
    assert len(outputs_in_outbox(db_engine)) == 1  # only the submission's membership change

    admitted = workflow.apply_batch([line(assessed(c, "ass-1"))])

    assert [(o.event_id, o.outcome) for o in admitted.outcomes] == [
        ("ass-1", "applied"),
        ("sch-1", "applied"),  # effective 2025-10-02: before the interview held on 11-20
        ("bm-1", "applied"),
    ]
    assert [summary(p)[0] for p in admitted.outputs] == ["membership.changed", "label.awarded"]
    assert admitted.outputs[1]["data"]["awarded_on"] == "2025-11-20"
    assert rows(db_engine, parked) == []
    assert {r["event_id"]: r["outcome"] for r in rows(db_engine, inbox)} == {
        "bm-1": "applied",
        "sch-1": "applied",
        "sub-1": "applied",
        "ass-1": "applied",
    }
    causes = [h["cause_id"] for h in rows(db_engine, history, history.c.id)]
    assert causes == ["sub-1", "ass-1", "sch-1", "bm-1"]


def test_a_parked_event_applies_in_the_same_batch_as_the_admission(
    workflow: Workflow, db_engine: Engine
) -> None:
    c = "cluster-a"
    result = workflow.apply_batch(
        lines([benchmarking(c, "bm-1"), submitted(c, "sub-1"), assessed(c, "ass-1")])
    )
    assert [(o.event_id, o.outcome) for o in result.outcomes] == [
        ("bm-1", "parked"),
        ("sub-1", "applied"),
        ("ass-1", "applied"),
        ("bm-1", "applied"),
    ]
    assert rows(db_engine, parked) == []
    assert [lb["level"] for lb in rows(db_engine, labels)] == ["bronze"]
    assert {r["outcome"] for r in rows(db_engine, inbox)} == {"applied"}


def test_parked_interviews_keep_waiting_when_the_application_is_rejected(
    workflow: Workflow, db_engine: Engine
) -> None:
    c = "cluster-a"
    interview = benchmarking(c, "bm-1")
    workflow.apply_batch([kafka(submitted(c, "sub-1"), 0), kafka(interview, 1)])
    result = workflow.apply_batch([kafka(assessed(c, "ass-1", ok=False), 2)])

    # A new application may still admit the cluster; park_ttl ends the wait otherwise.
    assert [(o.event_id, o.outcome) for o in result.outcomes] == [("ass-1", "applied")]
    assert result.rejections == []
    assert dlq(db_engine) == []
    assert [r["event_id"] for r in rows(db_engine, parked)] == ["bm-1"]
    assert {r["event_id"]: r["outcome"] for r in rows(db_engine, inbox)}["bm-1"] == "parked"
    assert state(db_engine, c) == "rejected"


def test_a_parked_event_expires_after_park_ttl_into_the_dlq(
    db_engine: Engine, policy: Policy
) -> None:
    clock = FixedClock(START)
    workflow = Workflow(db_engine, policy, clock, SERVICE)
    interview = benchmarking("cluster-a", "bm-1")
    assert [o.outcome for o in workflow.apply_batch([kafka(interview, 3)]).outcomes] == ["parked"]

    clock.advance(policy.park_ttl - timedelta(seconds=1))
    assert workflow.expire_parked().rejections == []
    assert count(db_engine, parked) == 1

    clock.advance(timedelta(seconds=1))
    expired = workflow.expire_parked()

    (rejection,) = expired.rejections
    assert rejection.error_class is ErrorClass.EXPIRED_PARK
    assert (rejection.event_id, rejection.cluster_id) == ("bm-1", "cluster-a")
    assert count(db_engine, parked) == 0
    (record,) = dlq(db_engine)
    assert record["error_class"] == "expired_park"
    assert record["origin"] == kafka_origin(interview, 3)
    assert "park_ttl" in record["error_message"]
    assert [r["outcome"] for r in rows(db_engine, inbox)] == ["rejected"]

    later = workflow.apply_batch(lines(story("cluster-a")[:2]))
    assert [o.event_id for o in later.outcomes] == ["cluster-a-sub", "cluster-a-ass"]
    assert rows(db_engine, labels) == [], "an expired event never takes effect"
    assert workflow.expire_parked().rejections == [], "expired once"


@pytest.mark.postgres
def test_a_parked_event_taken_by_a_concurrent_expiry_is_not_also_applied(
    postgres_url: str, policy: Policy
) -> None:
    """The expiry of a parked event and the admission that would apply it, at the same moment:
    the event has one effect (here: the DLQ), never both a label and a DLQ record."""
    engine = create_db_engine(postgres_url)
    try:
        upgrade(engine)
        workflow = Workflow(engine, policy, FixedClock(START), SERVICE)
        c = "cluster-a"
        workflow.apply_batch([kafka(submitted(c, "sub-1"), 0), kafka(benchmarking(c, "bm-1"), 1)])

        with engine.connect() as expirer:  # what expire_parked does, held open mid-way
            expirer.begin()
            (taken,) = messages.expired_parked(expirer, START + policy.park_ttl, limit=10)
            outcome: list[BatchResult | BaseException] = []

            def admit() -> None:
                try:
                    outcome.append(workflow.apply_batch([kafka(assessed(c, "ass-1"), 2)]))
                except BaseException as exc:  # reported below
                    outcome.append(exc)

            thread = threading.Thread(target=admit)
            thread.start()
            assert wait_for_lock_waiter(engine), "the admission waits for the parked row's lock"
            assert taken.row_id is not None
            messages.unpark(expirer, [taken.row_id])
            expirer.commit()
        thread.join(10)

        (result,) = outcome
        assert isinstance(result, BatchResult), result
        assert [(o.event_id, o.outcome) for o in result.outcomes] == [("ass-1", "applied")]
        assert result.attempts == 2
        assert rows(engine, labels) == []
        assert state(engine, c) == "admitted"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_an_event_parked_for_a_new_cluster_is_not_missed_by_a_concurrent_admission(
    postgres_url: str, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two consumers (the two input topics): one parks an interview for a cluster it does not
    know yet while the other creates and admits that cluster. No cluster row exists to lock,
    yet the admission must see the parked interview, or it waits until park_ttl for nothing."""
    engine = create_db_engine(postgres_url)
    try:
        upgrade(engine)
        c = "cluster-a"
        interviews = Workflow(engine, policy, FixedClock(START), SERVICE)
        applications = Workflow(engine, policy, FixedClock(START), SERVICE)
        parked_now, go_on = threading.Event(), threading.Event()
        real_park = messages.park

        def park_then_wait(conn: Any, events: Any) -> None:
            real_park(conn, events)
            if events:  # the interview consumer, between parking and committing
                parked_now.set()
                go_on.wait(10)

        monkeypatch.setattr(messages, "park", park_then_wait)
        results: dict[str, BatchResult | BaseException] = {}

        def run(name: str, workflow: Workflow, batch: list[Inbound]) -> None:
            try:
                results[name] = workflow.apply_batch(batch)
            except BaseException as exc:  # reported below
                results[name] = exc

        first = threading.Thread(
            target=run,
            args=("interviews", interviews, [kafka(benchmarking(c, "bm-1"), 0, "t.interviews")]),
        )
        first.start()
        assert parked_now.wait(10)
        admission = [
            kafka(submitted(c, "sub-1"), 0, "t.applications"),
            kafka(assessed(c, "ass-1"), 1, "t.applications"),
        ]
        second = threading.Thread(target=run, args=("applications", applications, admission))
        second.start()
        # Without a lock for the not-yet-existing cluster, the admission would just commit.
        admission_waited = wait_for_lock_waiter(engine, done=lambda: not second.is_alive())
        go_on.set()
        first.join(10)
        second.join(10)

        assert all(isinstance(r, BatchResult) for r in results.values()), results
        assert rows(engine, parked) == [], "the interview must not stay parked"
        assert [lb["level"] for lb in rows(engine, labels)] == ["bronze"]
        assert {r["event_id"]: r["outcome"] for r in rows(engine, inbox)}["bm-1"] == "applied"
        assert admission_waited
    finally:
        engine.dispose()


def test_expire_parked_uses_the_given_time(db_engine: Engine, policy: Policy) -> None:
    workflow = Workflow(db_engine, policy, FixedClock(START), SERVICE)
    workflow.apply_batch([kafka(benchmarking("cluster-a", "bm-1"))])
    assert (
        workflow.expire_parked(now=START + policy.park_ttl - timedelta(seconds=1)).rejections == []
    )
    assert len(workflow.expire_parked(now=START + policy.park_ttl).rejections) == 1


# -- rejections ------------------------------------------------------------------------------


def test_an_impossible_transition_is_rejected_and_the_batch_goes_on(
    workflow: Workflow, db_engine: Engine
) -> None:
    c = "cluster-a"
    events = [submitted(c, "sub-1"), assessed(c, "ass-1"), assessed(c, "ass-2"), scheduled(c, "s")]
    result = workflow.apply_batch([kafka(e, n) for n, e in enumerate(events)])

    assert [(o.event_id, o.outcome) for o in result.outcomes] == [
        ("sub-1", "applied"),
        ("ass-1", "applied"),
        ("ass-2", "rejected"),
        ("s", "applied"),
    ]
    (rejection,) = result.rejections
    assert rejection.error_class is ErrorClass.INVALID_TRANSITION
    assert "admitted" in rejection.message
    (record,) = dlq(db_engine)
    assert record["error_class"] == "invalid_transition"
    assert record["error_message"] == rejection.message
    assert RecordOrigin.from_json(record["origin"]).offset == 2
    assert {r["event_id"]: r["outcome"] for r in rows(db_engine, inbox)}["ass-2"] == "rejected"
    assert state(db_engine, c) == "admitted"


def test_kafka_rejections_go_to_the_dlq_and_line_rejections_do_not(
    workflow: Workflow, db_engine: Engine
) -> None:
    undecodable = kafka_origin(b"\xff not json", 7, topic="gocluster.applications")
    items = [
        Inbound(undecodable, rejected=Rejected(ErrorClass.DECODE, "value is not valid UTF-8")),
        Inbound(
            {"kind": "line", "line": 2, "text": "{}"}, rejected=Rejected(ErrorClass.SCHEMA, "x")
        ),
        line(submitted("cluster-a", "sub-1"), 3),
    ]
    result = workflow.apply_batch(items)

    assert [r.error_class for r in result.rejections] == [ErrorClass.DECODE, ErrorClass.SCHEMA]
    assert [o.outcome for o in result.outcomes] == ["applied"]
    (record,) = dlq(db_engine)
    assert record == {
        "origin": undecodable,
        "error_class": "decode",
        "error_message": "value is not valid UTF-8",
    }
    restored = RecordOrigin.from_json(record["origin"])
    assert (restored.topic, restored.offset, restored.value) == (
        "gocluster.applications",
        7,
        b"\xff not json",
    )
    (row,) = [r for r in rows(db_engine, outbox) if r["stream"] == "dlq"]
    assert (row["event_id"], row["sent_at"]) == (None, None)


# -- timers ----------------------------------------------------------------------------------


def test_fire_due_timers_fires_each_timer_exactly_once(
    workflow: Workflow, db_engine: Engine
) -> None:
    workflow.apply_batch(sample_inputs())
    early = workflow.fire_due_timers(until=datetime(2027, 7, 1, tzinfo=UTC))
    full = workflow.fire_due_timers(until=datetime(2027, 9, 10, tzinfo=UTC))
    again = workflow.fire_due_timers(until=datetime(2027, 9, 10, tzinfo=UTC))

    assert [p["data"].get("days_left") for p in early.outputs] == [90]
    assert [summary(p)[0] for p in full.outputs] == [
        "deadline.approaching",
        "deadline.breached",
        "membership.changed",
    ]
    assert (again.timers_fired, again.outputs) == (0, [])
    timer_causes = Counter(
        h["cause_id"] for h in rows(db_engine, history) if h["cause_type"].startswith("timer.")
    )
    assert sorted(timer_causes.values()) == [1, 1, 1]
    fired = {t["timer_id"] for t in rows(db_engine, timers) if t["status"] == "fired"}
    assert fired == set(timer_causes)
    assert len(outputs_in_outbox(db_engine)) == 3 + 4


def test_fire_due_timers_defaults_to_the_clock_and_respects_the_cluster_limit(
    db_engine: Engine, policy: Policy
) -> None:
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))  # after the story, before its timers
    workflow = Workflow(db_engine, policy, clock, SERVICE)
    workflow.apply_batch(lines(story("cluster-a") + story("cluster-b")))
    assert workflow.fire_due_timers().timers_fired == 0

    clock.set(datetime(2027, 6, 10, tzinfo=UTC))
    one = workflow.fire_due_timers(limit=1)
    two = workflow.fire_due_timers(limit=1)
    assert [{p["subject"] for p in r.outputs} for r in (one, two)] == [
        {"cluster-a"},
        {"cluster-b"},
    ]
    assert workflow.fire_due_timers().timers_fired == 0


# -- identity and atomicity ------------------------------------------------------------------


def run_everything(engine: Engine, policy: Policy) -> list[tuple[str, dict[str, Any]]]:
    workflow = Workflow(engine, policy, FixedClock(START), SERVICE)
    workflow.apply_batch(sample_inputs())
    workflow.apply_batch(lines(story("cluster-b")))
    workflow.apply_batch([line(silver_audit("cluster-b", "sa-b", "2027-10-01"))])
    workflow.fire_due_timers(until=datetime(2029, 1, 1, tzinfo=UTC))
    return [(r["event_id"], r["payload"]) for r in rows(engine, outbox, outbox.c.seq)]


def test_output_ids_are_deterministic_across_fresh_databases(
    fresh_db_url: Callable[[], str], policy: Policy
) -> None:
    runs = []
    for _ in range(2):
        engine = create_db_engine(fresh_db_url())
        try:
            upgrade(engine)
            runs.append(run_everything(engine, policy))
        finally:
            engine.dispose()
    first, second = runs
    assert len(first) > 10
    assert first == second
    assert all(event_id == payload["id"] for event_id, payload in first)


def test_a_failing_write_leaves_nothing_of_the_batch(
    workflow: Workflow, db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow.apply_batch([line(submitted("cluster-a", "sub-1"))])
    before = {t.name: rows(db_engine, t) for t in (clusters, inbox, outbox, history, parked)}

    def broken_enqueue(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(messages, "enqueue", broken_enqueue)
    batch = [
        line(assessed("cluster-a", "ass-1")),
        line(submitted("cluster-b", "sub-b")),
        line(benchmarking("cluster-c", "bm-c")),  # would be parked
    ]
    with pytest.raises(RuntimeError, match="disk full"):
        workflow.apply_batch(batch)

    assert {
        t.name: rows(db_engine, t) for t in (clusters, inbox, outbox, history, parked)
    } == before
    assert count(db_engine, timers) == 0

    monkeypatch.undo()
    result = workflow.apply_batch(batch)  # nothing half-recorded: not mistaken for duplicates
    assert [o.outcome for o in result.outcomes] == ["applied", "applied", "parked"]
    assert state(db_engine, "cluster-a") == "admitted"


def test_a_stale_aggregate_is_retried_and_applied_once(
    workflow: Workflow, db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = aggregates.save
    calls = []

    def save_losing_the_first_race(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise StaleAggregate("another instance won")
        real_save(*args, **kwargs)

    monkeypatch.setattr(aggregates, "save", save_losing_the_first_race)
    result = workflow.apply_batch(sample_inputs())

    assert result.attempts == 2
    assert [o.outcome for o in result.outcomes] == ["applied"] * 4
    assert len(outputs_in_outbox(db_engine)) == 3
    assert count(db_engine, inbox) == 4


def test_mark_sent_records_outputs_as_already_published(db_engine: Engine, policy: Policy) -> None:
    workflow = Workflow(db_engine, policy, FixedClock(START), SERVICE, mark_sent=True)
    workflow.apply_batch(lines(story("cluster-a")))
    assert {r["sent_at"] for r in rows(db_engine, outbox)} == {START}


# -- concurrency (PostgreSQL) ----------------------------------------------------------------

Op = tuple[str, Any]  # ("events", list[Inbound]) | ("fire", datetime)


def effective(event: dict[str, Any]) -> datetime:
    """CONTRACT.md section 4: the start of the business date, else `time`."""
    data = event["data"]
    day = data.get("assessed_on") or data.get("held_on")
    if day:
        return start_of_day(date.fromisoformat(day), ZoneInfo("Europe/Berlin"))
    return datetime.fromisoformat(event["time"])


def concurrent_events(clusters_n: int) -> list[dict[str, Any]]:
    """Input for many clusters in effective-time order, with redeliveries, a parked
    event, refused transitions, breaches and cures.

    Timer firings go where every later event's effective time is >= U (see
    `interleave`), so whichever instance gets there first, the timers fire in the
    same order relative to each cluster's events as in a sequential run.
    """
    events: list[dict[str, Any]] = []
    for i in range(clusters_n):
        c, d = f"c{i:02d}", i % 20 + 1
        events += [
            submitted(c, f"{c}-sub", at=f"2025-05-{d:02d}T09:00:00+02:00"),
            assessed(c, f"{c}-ass", on=f"2025-09-{d:02d}", ok=i % 6 != 5),
            scheduled(c, f"{c}-sch", at=f"2025-10-{d:02d}T10:00:00+02:00"),
            benchmarking(c, f"{c}-bm", held_on=f"2025-11-{d:02d}"),
        ]
        if i % 6 in (0, 1, 2):
            events.append(silver_audit(c, f"{c}-sa", held_on=f"2027-10-{d:02d}"))  # late: cure
        elif i % 6 == 3:
            events.append(withdrawn(c, f"{c}-wd", at="2026-06-01T10:00:00+02:00"))
        elif i % 6 == 4:
            events.append(silver_audit(c, f"{c}-sa", held_on=f"2027-06-{d:02d}"))  # in time
            events.append(assessed(c, f"{c}-ass2", on=f"2027-07-{d:02d}"))  # refused
        else:
            events += [  # rejected, applies again
                submitted(c, f"{c}-sub2", at=f"2026-02-{d:02d}T09:00:00+01:00"),
                assessed(c, f"{c}-ass3", on=f"2026-03-{d:02d}"),
                benchmarking(c, f"{c}-bm2", held_on=f"2026-05-{d:02d}"),
            ]
    events.sort(key=effective)
    # A benchmarking planned before the cluster's admission is processed: parked.
    for n, event in enumerate(events):
        if event["id"].endswith("-sch"):
            cluster = event["subject"]
            at = next(k for k, e in enumerate(events) if e["id"] == f"{cluster}-ass")
            events.insert(at, events.pop(n))
            break
    # Redeliveries of a few events, right after they first came.
    for event_id in ("c01-sub", "c02-bm", "c04-sa"):
        at = next(k for k, e in enumerate(events) if e["id"] == event_id)
        events.insert(at + 1, events[at])

    return events


def cluster_of(record: Inbound) -> str:
    assert record.event is not None
    return record.event.cluster_id


def interleave(
    events: list[dict[str, Any]], order: str, segment: int = 12
) -> list[Inbound | datetime]:
    """The events, with a timer firing before every `segment` of them.

    Inside a segment, `order` "up"/"down" sorts by cluster (stable, so each
    cluster's own order is kept): two instances walking the same clusters from
    opposite ends meet in the middle and fight over the same rows.
    """
    times = [effective(e) for e in events]
    # One offset per delivery, one partition per cluster (as its key decides): sorting by
    # cluster keeps each partition's offsets in order, as a consumer reads them.
    partitions = {c: n for n, c in enumerate(dict.fromkeys(e["subject"] for e in events))}
    records = [kafka(e, n, partition=partitions[e["subject"]]) for n, e in enumerate(events)]
    stream: list[Inbound | datetime] = []
    for start in range(0, len(events), segment):
        stream.append(min(times[start:]))
        part = records[start : start + segment]
        if order != "as_is":
            part = sorted(part, key=cluster_of, reverse=order == "down")
        stream += part
    stream.append(datetime(2028, 6, 1, tzinfo=UTC))
    return stream


def ops_for(stream: list[Inbound | datetime], batch_size: int) -> list[Op]:
    ops: list[Op] = []
    pending: list[Inbound] = []
    for item in stream:
        if isinstance(item, datetime):
            if pending:
                ops.append(("events", pending))
                pending = []
            ops.append(("fire", item))
            continue
        pending.append(item)
        if len(pending) == batch_size:
            ops.append(("events", pending))
            pending = []
    if pending:
        ops.append(("events", pending))
    return ops


def run_ops(workflow: Workflow, ops: list[Op]) -> list[BatchResult]:
    results = []
    for kind, arg in ops:
        if kind == "events":
            results.append(workflow.apply_batch(arg))
        else:
            results.append(workflow.fire_due_timers(until=arg))
    return results


def database_state(engine: Engine) -> dict[str, Any]:
    """Everything but the bookkeeping that depends on how work was split into transactions."""
    per_cluster: dict[str, list[dict[str, Any]]] = {}
    for h in rows(engine, history, history.c.id):
        per_cluster.setdefault(h["cluster_id"], []).append(
            {k: v for k, v in h.items() if k not in ("id", "recorded_at")}
        )
    outputs = {}
    for r in rows(engine, outbox, outbox.c.seq):
        if r["stream"] != "dlq":
            outputs[r["event_id"]] = r["payload"]
    return {
        "clusters": [
            {k: v for k, v in c.items() if k not in ("version", "updated_at")}
            for c in rows(engine, clusters)
        ],
        "labels": rows(engine, labels),
        "obligations": rows(engine, obligations),
        # A timer set and cancelled in one transaction leaves no row: which were depends
        # on how the events were split into transactions.
        "timers": [t for t in rows(engine, timers) if t["status"] != "cancelled"],
        "history": per_cluster,
        "outputs": outputs,
        "output_rows": sum(1 for r in rows(engine, outbox) if r["stream"] != "dlq"),
        "dlq": sorted(json.dumps(p, sort_keys=True) for p in dlq(engine)),
        "inbox": [{k: v for k, v in r.items() if k != "received_at"} for r in rows(engine, inbox)],
        "parked": rows(engine, parked),
    }


def test_two_instances_on_the_same_clusters_end_where_a_sequential_run_ends(
    db_url: str, fresh_db_url: Callable[[], str], policy: Policy
) -> None:
    """Two instances (own engine, own Workflow) race over the same clusters in many small
    batches and timer firings; SQLite serialises them, PostgreSQL locks rows and retries."""
    events = concurrent_events(clusters_n=24)

    sequential_engine = create_db_engine(fresh_db_url())
    engines = [create_db_engine(db_url) for _ in range(2)]
    try:
        upgrade(sequential_engine)
        upgrade(engines[0])
        sequential = Workflow(sequential_engine, policy, FixedClock(START), SERVICE)
        run_ops(sequential, ops_for(interleave(events, "as_is"), 1))
        expected = database_state(sequential_engine)

        workers = [Workflow(e, policy, FixedClock(START), SERVICE) for e in engines]
        plans = [ops_for(interleave(events, "up"), 2), ops_for(interleave(events, "down"), 3)]
        results: list[list[BatchResult]] = [[], []]
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def work(n: int) -> None:
            try:
                barrier.wait(10)
                results[n] = run_ops(workers[n], plans[n])
            except BaseException as exc:  # reported below: nothing may escape
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        elapsed = time.perf_counter() - started

        assert errors == []
        assert not any(thread.is_alive() for thread in threads)
        attempts = [r.attempts for rs in results for r in rs]
        print(
            f"\nconcurrency on {engines[0].dialect.name}: {len(attempts)} transactions in "
            f"{elapsed:.2f}s, {sum(attempts) - len(attempts)} retries, "
            f"at most {max(attempts)} attempts for one"
        )

        actual = database_state(engines[0])
        assert actual == expected

        published: dict[str, dict[str, Any]] = {}
        for batch in (r for rs in results for r in rs):
            for payload in batch.outputs:
                assert published.setdefault(payload["id"], payload) == payload
        assert published == expected["outputs"], "each output returned by exactly the winner"

        fired = Counter(
            h["cause_id"]
            for hs in actual["history"].values()
            for h in hs
            if h["cause_type"].startswith("timer.")
        )
        assert len(fired) > 20
        assert set(fired.values()) == {1}, "each timer fired once"
        assert workers[0].fire_due_timers(until=datetime(2028, 6, 1, tzinfo=UTC)).timers_fired == 0

        states = Counter(c["state"] for c in actual["clusters"])
        assert set(states) >= {"admitted", "in_breach", "withdrawn"}, states
    finally:
        sequential_engine.dispose()
        for engine in engines:
            engine.dispose()


# -- performance sanity (numbers for the report, no timed asserts) ---------------------------


def test_a_batch_of_2000_events_applies_in_one_transaction(
    db_url: str, db_engine: Engine, policy: Policy
) -> None:
    events = [e for n in range(500) for e in story(f"perf-{n:03d}")]
    items = [kafka(e, n) for n, e in enumerate(events)]
    workflow = Workflow(db_engine, policy, FixedClock(START), SERVICE)

    started = time.perf_counter()
    result = workflow.apply_batch(items)
    applied = time.perf_counter() - started
    started = time.perf_counter()
    fired = workflow.fire_due_timers(until=datetime(2027, 9, 10, tzinfo=UTC), limit=1000)
    firing = time.perf_counter() - started
    backend = db_url.split(":", 1)[0]
    print(
        f"\n{backend}: apply_batch(2000 events) {applied:.2f}s "
        f"({2000 / applied:.0f} events/s); fire_due_timers(500 clusters, "
        f"{fired.timers_fired} timers) {firing:.2f}s"
    )

    assert result.count("applied") == 2000
    assert len(result.outputs) == 500 * 3
    assert fired.timers_fired == 500 * 3
    assert count(db_engine, inbox) == 2000
