"""The operator gauges and counters of `gocluster run`, read from /metrics and checked
against states the test knows: lag of a stopped consumer, overdue timers with the timer
loop paused, parked events, and input counters that add up to the input.

Apache Kafka (true end offsets), SQLite, the service as a real subprocess.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests import stories
from tests.builders import assessed, bronze, submitted
from tests.http_probe import free_port, metric, metric_sum
from tests.kafka_fixtures import KafkaTopics, produce
from tests.service_process import ServiceProcess, db_scalar, run_cli, service_env, wait_until
from workflows.store.tables import timers

pytestmark = pytest.mark.kafka

STRUCTURED = [("content-type", b"application/cloudevents+json")]


def _service(
    topics: KafkaTopics, db_url: str, port: int, args: list[str], name: str, tmp_path: Path
) -> ServiceProcess:
    env = service_env(
        topics.env(),
        {
            "GOCLUSTER_DATABASE_URL": db_url,
            "GOCLUSTER_HTTP_PORT": str(port),
            "GOCLUSTER_GAUGE_INTERVAL_S": "1",
        },
    )
    return ServiceProcess(env, ["run", *args], name=name, log_dir=tmp_path)


def _wait_metric(base: str, name: str, expected: float, timeout_s: float = 60) -> None:
    wait_until(
        lambda: metric_sum(base, name) == expected,
        timeout_s,
        f"{name} to read {expected} (reads {metric_sum(base, name)})",
    )


def _submissions(count: int, first: int) -> list[Any]:
    return [
        stories.structured_record(submitted(date(2026, 2, 1), cluster_id=f"cluster-lag-{n}"))
        for n in range(first, first + count)
    ]


def test_lag_is_end_offset_minus_committed_for_records_produced_to_a_stopped_consumer(
    kafka_topics: KafkaTopics, sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    produce(kafka_topics.bootstrap, kafka_topics.applications, _submissions(3, 0))
    with _service(kafka_topics, sqlite_url, port, [], "consuming", tmp_path) as svc:
        svc.wait_for_log("event applied", count=3)
        _wait_metric(base, "gocluster_consumer_lag", 0)
        assert svc.terminate() == 0

    produced = 7
    produce(kafka_topics.bootstrap, kafka_topics.applications, _submissions(produced, 3))
    # The consumer stays stopped: this process runs the relay and the timer loop only.
    stopped = ["--only", "relay", "--only", "timers"]
    with _service(kafka_topics, sqlite_url, port, stopped, "no-consumer", tmp_path) as svc:
        _wait_metric(base, "gocluster_consumer_lag", produced)
        per_partition = [
            metric(base, "gocluster_consumer_lag", {"topic": t, "partition": str(p)})
            for t in kafka_topics.inputs
            for p in range(3)
        ]
        assert sum(v or 0 for v in per_partition) == produced
        assert all(v is not None for v in per_partition)  # every input partition is exported
        assert svc.terminate() == 0

    with _service(kafka_topics, sqlite_url, port, [], "catching-up", tmp_path) as svc:
        svc.wait_joined(timeout_s=180)
        svc.wait_for_log("event applied", count=produced, timeout_s=120)
        _wait_metric(base, "gocluster_consumer_lag", 0)
        assert svc.terminate() == 0


def test_overdue_seconds_is_the_age_of_the_oldest_due_timer_while_the_timer_loop_is_paused(
    kafka_topics: KafkaTopics, sqlite_url: str, tmp_path: Path
) -> None:
    """Admitted in 2025, no Bronze interview: reminders and the breach are long due."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    story = [submitted(date(2025, 5, 12)), assessed(date(2025, 9, 4))]
    produce(
        kafka_topics.bootstrap,
        kafka_topics.applications,
        [stories.structured_record(e) for e in story],
    )
    paused = ["--clock", "wall", "--only", "consumer", "--only", "relay"]
    with _service(kafka_topics, sqlite_url, port, paused, "timers-paused", tmp_path) as svc:
        svc.wait_for_log("event applied", count=2)
        pending = timers.c.status == "pending"
        count = int(db_scalar(sqlite_url, select(func.count()).where(pending)))
        oldest = db_scalar(sqlite_url, select(func.min(timers.c.due_at)).where(pending))
        oldest = datetime.fromisoformat(str(oldest)).replace(tzinfo=UTC)
        assert count > 0
        _wait_metric(base, "gocluster_timers_pending", count)

        def overdue_matches() -> bool:
            expected = (datetime.now(UTC) - oldest).total_seconds()
            value = metric(base, "gocluster_timers_overdue_seconds")
            return value is not None and abs(value - expected) < 30

        wait_until(overdue_matches, 60, "the overdue gauge to read the oldest due timer's age")
        assert (metric(base, "gocluster_timers_overdue_seconds") or 0) > 30 * 86_400
        assert svc.terminate() == 0

    with _service(kafka_topics, sqlite_url, port, ["--clock", "wall"], "timers-on", tmp_path) as s:
        wait_until(
            lambda: (metric(base, "gocluster_timers_fired_total") or 0) > 0, 60, "timers to fire"
        )
        wait_until(  # a refresh after they fired, not the gauge's initial 0
            lambda: (
                (metric(base, "gocluster_gauges_refreshed_timestamp_seconds") or 0)
                > time.time() - 0.5
            ),
            30,
            "a fresh refresh of the gauges",
        )
        _wait_metric(base, "gocluster_timers_overdue_seconds", 0)
        assert s.terminate() == 0


def test_parked_gauge_input_counters_and_the_parked_commands_match_what_was_produced(
    kafka_topics: KafkaTopics, sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    a, b, c = "cluster-a", "cluster-b", "cluster-c"
    c_submitted = submitted(date(2025, 5, 12), cluster_id=c, event_id="c-1")
    c_changed = {**c_submitted, "data": {**c_submitted["data"], "cluster_name": "Renamed"}}
    bad_schema = submitted(date(2025, 5, 12), cluster_id="cluster-d")
    bad_schema["data"]["federal_state"] = "Bavaria"
    wrong_key = stories.structured_record(submitted(date(2025, 5, 12), cluster_id="cluster-e"))
    applications = [
        stories.structured_record(submitted(date(2025, 5, 12), cluster_id=a)),  # applied
        stories.structured_record(c_submitted),  # applied
        stories.structured_record(c_submitted),  # duplicate
        stories.structured_record(c_changed),  # rejected: conflict (same id, new content)
        (c.encode(), b"{not json", STRUCTURED),  # rejected: decode
        stories.structured_record(bad_schema),  # rejected: schema
        (b"someone-else", wrong_key[1], wrong_key[2]),  # rejected: conflict (key)
        stories.structured_record(assessed(date(2025, 9, 4), cluster_id=c)),  # applied
        stories.structured_record(assessed(date(2025, 9, 5), cluster_id=c)),  # rejected: twice
    ]
    interviews = [
        stories.structured_record(bronze(date(2025, 11, 20), cluster_id=a)),  # parked: applied
        stories.structured_record(bronze(date(2025, 11, 20), cluster_id=b)),  # parked: unknown
    ]
    produce(kafka_topics.bootstrap, kafka_topics.applications, applications)
    produce(kafka_topics.bootstrap, kafka_topics.interviews, interviews)
    expected = {"applied": 3, "duplicate": 1, "parked": 2, "rejected": 5}
    env = {"GOCLUSTER_DATABASE_URL": sqlite_url}
    with _service(kafka_topics, sqlite_url, port, ["--clock", "event"], "svc", tmp_path) as svc:
        _wait_metric(base, "gocluster_input_records_total", len(applications) + len(interviews))
        counted = {
            o: metric(base, "gocluster_input_records_total", {"outcome": o}) for o in expected
        }
        assert counted == expected
        _wait_metric(base, "gocluster_parked_events", 2)

        listed = run_cli(["parked", "--json"], service_env(env)).stdout.splitlines()
        waiting = {row["cluster_id"]: row for row in map(json.loads, listed)}
        assert set(waiting) == {a, b}
        assert waiting[a]["type"] == "gocluster.interview.completed"
        assert waiting[a]["waits_for"] == "the cluster's admission (cluster now applied)"
        assert waiting[b]["waits_for"] == "the cluster's admission (cluster now unknown)"
        shown = run_cli(["show", a], service_env(env)).stdout
        assert "Parked events" in shown
        assert "gocluster.interview.completed" in shown.split("Parked events")[1]

        produce(
            kafka_topics.bootstrap,
            kafka_topics.applications,
            [stories.structured_record(assessed(date(2025, 9, 4), cluster_id=a))],
        )
        _wait_metric(base, "gocluster_parked_events", 1)
        _wait_metric(base, "gocluster_input_records_total", 12)
        assert metric(base, "gocluster_parked_resolved_total", {"outcome": "applied"}) == 1
        assert metric(base, "gocluster_rejected_records_total", {"error_class": "decode"}) == 1
        assert svc.terminate() == 0
