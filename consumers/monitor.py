"""The operator gauges and the readiness probes, refreshed every GOCLUSTER_GAUGE_INTERVAL_S.

Its own thread with its own database connection and Kafka admin client, so that
neither a slow count nor a broker round trip ever blocks the consuming loop (and
nothing runs in kafka-python's rebalance callbacks). One round is the probe: the
backlog query is the database check, the lag query (list offsets and the group's
committed offsets) the broker check.

Lag is the group's, not this instance's share: end offset minus the group's
committed offset for every input partition (a partition the group never committed
counts from its earliest offset, as `auto_offset_reset=earliest` would consume it).
With several instances each reports the same figures; aggregate with `max`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import structlog
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient, OffsetSpec
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorError,
)
from sqlalchemy.exc import SQLAlchemyError

from consumers.bootstrap import App
from consumers.health import Health, LoopState
from consumers.metrics import Metrics
from workflows.store.queries import backlog

log = structlog.get_logger("gocluster.monitor")

# A probe must fail well inside a minute when the broker is away.
PROBE_TIMEOUT_MS = 10_000
_COORDINATOR_MOVING = (
    CoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotCoordinatorError,
)


class Monitor:
    def __init__(
        self,
        app: App,
        health: Health,
        metrics: Metrics,
        stop: threading.Event,
        *,
        interval_s: float,
        overdue_by_wall_clock: bool = True,
        progress: LoopState | None = None,
    ) -> None:
        self.app = app
        self.health = health
        self.metrics = metrics
        self.stop = stop
        self.interval_s = interval_s
        self.overdue_by_wall_clock = overdue_by_wall_clock
        # The wall clock's timer loop holds breaches back by the late-result allowance.
        self.breach_allowance = app.policy.late_result_allowance
        self.progress = progress
        self.admin: KafkaAdminClient | None = None
        self._reported: dict[str, str | None] = {}

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
                if self.progress is not None:
                    self.progress.beat()
                self.stop.wait(self.interval_s)
        finally:
            self.close()

    def step(self) -> None:
        self.refresh_database()
        self.refresh_lag()

    def refresh_database(self) -> None:
        now = self.app.clock.now()
        try:
            with self.app.db.connect() as conn:
                found = backlog(conn, now, self.breach_allowance)
        except SQLAlchemyError as exc:
            self._failed("database", self.health.database, exc)
            return
        self._passed("database", self.health.database)
        m = self.metrics
        m.outbox_unsent.set(found["outbox_unsent"])
        m.outbox_oldest_age.set(_age(now, found["outbox_oldest"]))
        m.parked.set(found["parked"])
        m.parked_oldest_age.set(_age(now, found["parked_oldest"]))
        m.timers_pending.set(found["timers_pending"])
        overdue = _age(now, found["timer_overdue_since"]) if self.overdue_by_wall_clock else 0.0
        m.timers_overdue.set(overdue)
        m.gauges_refreshed.set(time.time())

    def refresh_lag(self) -> None:
        try:
            lag = self.lag()
        except _COORDINATOR_MOVING as exc:
            # The broker answered; only the group's coordinator is not there yet (a group
            # that never committed, or one moving): keep the last lag figures.
            self._passed("kafka", self.health.kafka)
            log.debug("group offsets unavailable; lag not refreshed", error=str(exc))
            return
        except (KafkaError, OSError) as exc:
            self._failed("kafka", self.health.kafka, exc)
            self.close()
            return
        self._passed("kafka", self.health.kafka)
        self.health.auth.succeeded()
        self.metrics.lag.clear()
        for tp, behind in lag.items():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(behind)

    def lag(self) -> dict[TopicPartition, int]:
        """End offset minus the group's committed offset, per input partition."""
        admin = self._admin()
        settings = self.app.settings
        topics = admin.describe_topics(list(settings.input_topics))
        partitions = [
            TopicPartition(topic["name"], p["partition_index"])
            for topic in topics
            if topic["error_code"] == 0
            for p in topic["partitions"]
        ]
        if not partitions:
            return {}
        ends = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.LATEST))
        committed = admin.list_group_offsets({settings.group_id: partitions})
        offsets = committed.get(settings.group_id, {})
        never = [tp for tp in partitions if getattr(offsets.get(tp), "offset", -1) < 0]
        starts = (
            admin.list_partition_offsets(dict.fromkeys(never, OffsetSpec.EARLIEST)) if never else {}
        )
        lag = {}
        for tp in partitions:
            done = offsets.get(tp)
            position = done.offset if done is not None and done.offset >= 0 else starts[tp].offset
            lag[tp] = max(0, ends[tp].offset - position)
        return lag

    def _admin(self) -> KafkaAdminClient:
        if self.admin is None:
            config: dict[str, Any] = self.app.settings.admin_config() | {
                "client_id": f"{self.app.settings.kafka_client_id}-monitor",
                "request_timeout_ms": PROBE_TIMEOUT_MS,
                "bootstrap_timeout_ms": PROBE_TIMEOUT_MS,
            }
            self.admin = KafkaAdminClient(**config)
        return self.admin

    def close(self) -> None:
        if self.admin is not None:
            with contextlib.suppress(Exception):
                self.admin.close()
            self.admin = None

    def _failed(self, what: str, probe: Any, exc: BaseException) -> None:
        error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        probe.failed(self.health.clock(), f"{type(exc).__name__}: {error}")
        if self._reported.get(what) != "failing":
            log.warning(f"{what} probe failed; not ready", error=probe.error)
        self._reported[what] = "failing"

    def _passed(self, what: str, probe: Any) -> None:
        probe.passed(self.health.clock())
        if self._reported.get(what) == "failing":
            log.info(f"{what} probe passed again")
        self._reported[what] = "ok"


def _age(now: Any, since: Any) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())
