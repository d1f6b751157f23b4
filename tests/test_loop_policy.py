"""Each loop's failure policy (consumers/supervision.py): transient errors are retried
with back-off and the loop lives on; a bug kills the loop, fails /healthz and stops the
service with exit code 70.

The loops run for real (threads of a `Service` on SQLite and the test broker); the
failure is injected at the narrow port between a loop and the domain, the workflow.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumers.bootstrap import build
from consumers.health import Health
from consumers.metrics import Metrics
from consumers.service import Service
from tests.kafka_fixtures import KafkaTopics
from tests.service_process import wait_until
from workflows.engine import BatchResult, Workflow
from workflows.store.aggregates import StaleAggregate

pytestmark = pytest.mark.kafka


class FailingTimers(Workflow):
    """The real workflow, except that firing timers raises `errors` in turn first."""

    def __init__(self, real: Workflow, errors: list[BaseException]) -> None:
        super().__init__(real.db, real.policy, real.clock, real.source)
        self.errors = errors
        self.calls = 0

    def fire_due_timers(
        self,
        until: datetime | None = None,
        limit: int = 200,
        *,
        allow_late_results: bool = False,
    ) -> BatchResult:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return super().fire_due_timers(until, limit, allow_late_results=allow_late_results)


def _service(
    kafka_topics: KafkaTopics,
    tmp_path: Path,
    errors: list[BaseException],
    metrics: Metrics | None = None,
) -> tuple[Service, FailingTimers, threading.Event]:
    app = build(kafka_topics.settings(database_url=f"sqlite:///{tmp_path / 'loops.db'}"))
    workflow = FailingTimers(app.workflow, errors)
    app.workflow = workflow
    stop = threading.Event()
    service = Service(
        app,
        stop,
        loops=frozenset({"timers"}),
        timer_interval_s=0.1,
        metrics=metrics,
    )
    return service, workflow, stop


def test_a_transient_error_escaping_the_timer_loop_is_retried_and_the_service_runs_on(
    kafka_topics: KafkaTopics, tmp_path: Path
) -> None:
    """A concurrent writer that won the race five times (StaleAggregate) is not a bug."""
    service, workflow, stop = _service(
        kafka_topics, tmp_path, [StaleAggregate("a concurrent writer won")]
    )
    service.start()
    try:
        wait_until(lambda: workflow.calls >= 3 or stop.is_set(), 30, "the timer loop to go on")
        assert not stop.is_set(), "the timer loop died on a transient error and stopped the service"
        assert service.threads["timers"].is_alive()
    finally:
        stop.set()
        service.join()
        service.app.close()


def test_a_loop_that_dies_on_a_bug_fails_liveness_and_stops_the_service_with_exit_code_70(
    kafka_topics: KafkaTopics, tmp_path: Path
) -> None:
    metrics = Metrics(CollectorRegistry())
    service, workflow, stop = _service(
        kafka_topics, tmp_path, [ZeroDivisionError("a bug")], metrics
    )
    service.start()
    try:
        wait_until(stop.is_set, 30, "the dead timer loop to stop the service")
        live, body = service.health.liveness()
        assert not live
        assert body["loops"]["timers"] == "died: ZeroDivisionError: a bug"
        assert (
            metrics.registry.get_sample_value(
                "gocluster_loop_failures_total", {"loop": "timers", "kind": "fatal"}
            )
            == 1
        )
    finally:
        stop.set()
        service.join()
        service.app.close()
    assert service.exit_code == 70
    assert workflow.calls == 1
    assert not any(thread.is_alive() for thread in service.threads.values())


def test_a_loop_that_makes_no_progress_fails_liveness() -> None:
    now = [1000.0]
    health = Health(liveness_timeout_s=60, readiness_timeout_s=30, clock=lambda: now[0])
    relay = health.loop("relay")
    health.loop("timers")
    now[0] += 45
    relay.beat()
    assert health.liveness() == (True, {"loops": {"relay": "ok", "timers": "ok"}})
    now[0] += 30
    live, body = health.liveness()
    assert not live
    assert body["loops"] == {"relay": "ok", "timers": "no progress for 75 s"}
