"""Prometheus metrics for ops dashboards (`GOCLUSTER_METRICS_PORT`, off by default).

A private registry per service, so tests and the demo can run several services in
one process without colliding.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from workflows.engine import BatchResult


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records = Counter(
            "gocluster_input_records",
            "Input records by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "gocluster_rejected_records",
            "Records sent to the DLQ by error class",
            ["error_class"],
            registry=self.registry,
        )
        self.published = Counter(
            "gocluster_published_records",
            "Outbox rows published to Kafka",
            registry=self.registry,
        )
        self.timers = Counter(
            "gocluster_timers_fired", "Durable timers fired", registry=self.registry
        )
        self.batch_seconds = Histogram(
            "gocluster_batch_seconds",
            "Time to apply one polled batch (one transaction)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def observe(self, result: BatchResult, seconds: float | None = None) -> None:
        for outcome in ("applied", "parked", "duplicate", "rejected"):
            count = result.count(outcome)
            if count:
                self.records.labels(outcome).inc(count)
        for rejection in result.rejections:
            self.rejected.labels(rejection.error_class.value).inc()
        if result.timers_fired:
            self.timers.inc(result.timers_fired)
        if seconds is not None:
            self.batch_seconds.observe(seconds)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
