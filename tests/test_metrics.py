"""Prometheus metrics count what the engine did, and are served over HTTP."""

from __future__ import annotations

import socket
import urllib.request

from consumers.metrics import Metrics
from schemas.errors import ErrorClass
from workflows.engine import BatchResult, Outcome, Rejection


def _result() -> BatchResult:
    origin = {"kind": "kafka", "topic": "t", "partition": 0, "offset": 1}
    return BatchResult(
        outcomes=[
            Outcome(origin, "e1", "gocluster.application.submitted", "c1", "applied"),
            Outcome(origin, "e2", "gocluster.application.submitted", "c1", "duplicate"),
            Outcome(origin, "e3", "gocluster.interview.completed", "c2", "parked"),
        ],
        rejections=[Rejection(origin, ErrorClass.DECODE, "not JSON")],
        timers_fired=2,
    )


def test_observe_counts_outcomes_rejections_and_timers() -> None:
    metrics = Metrics()

    metrics.observe(_result(), seconds=0.02)

    value = metrics.registry.get_sample_value
    assert value("gocluster_input_records_total", {"outcome": "applied"}) == 1
    assert value("gocluster_input_records_total", {"outcome": "duplicate"}) == 1
    assert value("gocluster_input_records_total", {"outcome": "parked"}) == 1
    assert value("gocluster_rejected_records_total", {"error_class": "decode"}) == 1
    assert value("gocluster_timers_fired_total") == 2
    assert value("gocluster_batch_seconds_count") == 1


def test_metrics_are_served_on_loopback() -> None:
    metrics = Metrics()
    metrics.observe(_result())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    metrics.serve(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()

    assert 'gocluster_input_records_total{outcome="applied"} 1.0' in body
