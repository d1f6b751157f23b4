"""Prometheus metrics count what the engine did, every input record once, and are served
over HTTP with /healthz and /readyz."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from consumers.health import STABLE, Health
from consumers.http_server import HttpServer, create_app
from consumers.metrics import Metrics
from schemas.errors import ErrorClass, Rejected
from tests.http_probe import free_port, get
from workflows.engine import BatchResult, Inbound, Outcome, Rejection


def _origin(offset: int) -> dict[str, object]:
    return {"kind": "kafka", "topic": "t", "partition": 0, "offset": offset}


def _batch() -> tuple[list[Inbound], BatchResult]:
    """Six records: applied, duplicate, parked, parked-then-applied in the same batch,
    undecodable, a key conflict; plus an event parked by an earlier batch, now applied."""
    items = [Inbound(_origin(n)) for n in range(1, 7)]
    earlier = {"kind": "kafka", "topic": "t", "partition": 0, "offset": 0}
    submitted = "gocluster.application.submitted"
    completed = "gocluster.interview.completed"
    result = BatchResult(
        outcomes=[
            Outcome(_origin(1), "e1", submitted, "c1", "applied"),
            Outcome(_origin(2), "e2", submitted, "c1", "duplicate"),
            Outcome(_origin(3), "e3", completed, "c2", "parked"),
            Outcome(_origin(4), "e4", completed, "c1", "parked"),
            Outcome(_origin(4), "e4", completed, "c1", "applied"),
            Outcome(earlier, "e0", completed, "c1", "applied"),
        ],
        rejections=[
            Rejection(_origin(5), ErrorClass.DECODE, "not JSON"),
            Rejection(_origin(6), ErrorClass.CONFLICT, "key is not the subject"),
        ],
        timers_fired=2,
    )
    return items, result


def test_input_records_by_outcome_add_up_to_every_record_polled() -> None:
    metrics = Metrics(CollectorRegistry())
    items, result = _batch()

    metrics.observe(result, seconds=0.02, items=items)

    value = metrics.registry.get_sample_value
    counted = {
        outcome: value("gocluster_input_records_total", {"outcome": outcome})
        for outcome in ("applied", "duplicate", "parked", "rejected")
    }
    assert counted == {"applied": 2, "duplicate": 1, "parked": 1, "rejected": 2}
    assert sum(counted.values()) == len(items)
    assert value("gocluster_parked_resolved_total", {"outcome": "applied"}) == 1
    assert value("gocluster_rejected_records_total", {"error_class": "decode"}) == 1
    assert value("gocluster_rejected_records_total", {"error_class": "conflict"}) == 1
    assert value("gocluster_timers_fired_total") == 2
    assert value("gocluster_batch_seconds_count") == 1


def test_a_record_without_any_outcome_counts_as_rejected_never_as_nothing() -> None:
    metrics = Metrics(CollectorRegistry())
    item = Inbound(_origin(9), rejected=Rejected(ErrorClass.SCHEMA, "data.x: required"))

    metrics.observe(BatchResult(), items=[item])

    assert (
        metrics.registry.get_sample_value("gocluster_input_records_total", {"outcome": "rejected"})
        == 1
    )


def test_healthz_readyz_and_metrics_are_served_on_loopback() -> None:
    metrics = Metrics(CollectorRegistry())
    items, result = _batch()
    metrics.observe(result, items=items)
    now = [100.0]
    health = Health(liveness_timeout_s=60, readiness_timeout_s=30, clock=lambda: now[0])
    health.loop("consumer")
    health.track_consumer()
    port = free_port()
    server = HttpServer(create_app(health, metrics.registry), "127.0.0.1", port)
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        status, body = get(f"{base}/metrics")
        assert status == 200
        assert 'gocluster_input_records_total{outcome="applied"} 2.0' in body
        assert "gocluster_build_info{" in body

        assert get(f"{base}/healthz")[0] == 200
        status, body = get(f"{base}/readyz")
        assert status == 503
        assert json.loads(body)["checks"] == {
            "database": "not checked yet",
            "kafka": "not checked yet",
            "consumer": "not in its group yet (<unjoined>)",
        }

        health.database.passed(now[0])
        health.kafka.passed(now[0])
        health.consumer_polled(STABLE, 3)
        assert get(f"{base}/readyz")[0] == 200

        now[0] += 31  # nothing refreshed the probes, nothing polled
        status, body = get(f"{base}/readyz")
        assert status == 503
        assert json.loads(body)["checks"]["consumer"] == "no poll in its group for 31 s (<stable>)"
        now[0] += 30
        status, body = get(f"{base}/healthz")
        assert status == 503
        assert json.loads(body)["loops"] == {"consumer": "no progress for 61 s"}
    finally:
        server.stop()
