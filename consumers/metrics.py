"""Prometheus metrics for ops dashboards and alerts (served by `gocluster run` on
GOCLUSTER_HTTP_PORT, see consumers/http_server.py).

The service registers on prometheus-client's default registry, so the process and
Python collectors (memory, CPU, open files, GC) come along. Tests and tools that run
several services in one process pass a registry of their own.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info

from workflows.engine import BatchResult, Inbound

OUTCOMES = ("applied", "parked", "duplicate", "rejected")


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records = Counter(
            "gocluster_input_records",
            "Input records by outcome; the outcomes add up to every record polled",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:  # every outcome is exported from the start, at 0
            self.records.labels(outcome)
        self.unparked = Counter(
            "gocluster_parked_resolved",
            "Parked events of earlier batches that were later applied or rejected",
            ["outcome"],
            registry=registry,
        )
        self.rejected = Counter(
            "gocluster_rejected_records",
            "Records sent to the DLQ by error class",
            ["error_class"],
            registry=registry,
        )
        self.published = Counter(
            "gocluster_published_records",
            "Outbox rows published to Kafka",
            registry=registry,
        )
        self.timers = Counter("gocluster_timers_fired", "Durable timers fired", registry=registry)
        self.batch_seconds = Histogram(
            "gocluster_batch_seconds",
            "Time to apply one polled batch (one transaction)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.loop_failures = Counter(
            "gocluster_loop_failures",
            "Failed rounds of a loop, by loop and kind (transient: retried; fatal: loop died)",
            ["loop", "kind"],
            registry=registry,
        )
        # -- operator gauges, refreshed by consumers/monitor.py --------------------------
        self.lag = Gauge(
            "gocluster_consumer_lag",
            "Records not yet consumed: end offset minus the group's committed offset",
            ["topic", "partition"],
            registry=registry,
        )
        self.outbox_unsent = Gauge(
            "gocluster_outbox_unsent", "Outbox rows not yet published", registry=registry
        )
        self.outbox_oldest_age = Gauge(
            "gocluster_outbox_oldest_unsent_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none)",
            registry=registry,
        )
        self.parked = Gauge(
            "gocluster_parked_events", "Events parked now, waiting for a state", registry=registry
        )
        self.parked_oldest_age = Gauge(
            "gocluster_parked_oldest_age_seconds",
            "How long the longest-waiting parked event has waited (0 when none)",
            registry=registry,
        )
        self.timers_pending = Gauge(
            "gocluster_timers_pending", "Durable timers not yet fired", registry=registry
        )
        self.timers_overdue = Gauge(
            "gocluster_timers_overdue_seconds",
            "Age of the oldest timer that is due but not fired (0 when none)",
            registry=registry,
        )
        self.gauges_refreshed = Gauge(
            "gocluster_gauges_refreshed_timestamp_seconds",
            "When the gauges above were last refreshed from the database (Unix time)",
            registry=registry,
        )
        self.last_poll_age = Gauge(
            "gocluster_consumer_last_poll_age_seconds",
            "Seconds since the consumer last polled while in its group",
            registry=registry,
        )
        self.ready = Gauge(
            "gocluster_ready", "1 while /readyz answers 200, else 0", registry=registry
        )
        self.live = Gauge(
            "gocluster_live", "1 while /healthz answers 200, else 0", registry=registry
        )
        self.build = Info("gocluster_build", "Version of gocluster and Python", registry=registry)
        self.build.info({"version": _version(), "python": platform.python_version()})
        self.dlq_value_omitted = Counter(
            "gocluster_dlq_value_omitted",
            "DLQ records published without their value: the broker refused them for their size",
            registry=self.registry,
        )

    @classmethod
    @cache
    def default(cls) -> Metrics:
        """The process's metrics, on prometheus-client's default registry (built once)."""
        return cls(REGISTRY)

    def observe(
        self, result: BatchResult, seconds: float | None = None, items: Sequence[Inbound] = ()
    ) -> None:
        """One transaction: each input record of `items` counts once, under its fate in it;
        parked events of earlier batches that it applied or refused count as resolved."""
        fates, resolved = input_outcomes(items, result)
        for outcome in fates:
            self.records.labels(outcome).inc()
        for outcome in resolved:
            self.unparked.labels(outcome).inc()
        for rejection in result.rejections:
            self.rejected.labels(rejection.error_class.value).inc()
        if result.timers_fired:
            self.timers.inc(result.timers_fired)
        if seconds is not None:
            self.batch_seconds.observe(seconds)

    def track(self, gauge: Gauge, since: Callable[[], float | None]) -> None:
        """`gauge` reads, at scrape time, the seconds since `since()` (0 while it is None)."""

        def age() -> float:
            at = since()
            return 0.0 if at is None else max(0.0, time.monotonic() - at)

        gauge.set_function(age)


def input_outcomes(items: Sequence[Inbound], result: BatchResult) -> tuple[list[str], list[str]]:
    """(one outcome per input record, outcomes of events parked by earlier batches).

    An input record's fate is its last outcome in the batch (a record parked and then
    applied in the same batch was applied); a record refused before it was an event
    (decode, schema, a key that is not the subject) has only a rejection.
    """
    fate: dict[Any, str] = {}
    for rejection in result.rejections:
        fate[_where(rejection.origin)] = "rejected"
    for outcome in result.outcomes:
        fate[_where(outcome.origin)] = outcome.outcome
    inputs = [_where(item.origin) for item in items]
    known = set(inputs)
    resolved = [outcome for where, outcome in fate.items() if where not in known]
    return [fate.get(where, "rejected") for where in inputs], resolved


def _where(origin: dict[str, Any]) -> tuple[Any, ...]:
    return (
        origin.get("kind"),
        origin.get("topic"),
        origin.get("partition"),
        origin.get("offset"),
        origin.get("line"),
    )


def _version() -> str:
    try:
        return version("gocluster")
    except PackageNotFoundError:
        return "unknown"
