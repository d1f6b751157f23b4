"""What one transaction of the handler collects, and how it is written out.

The engine decides (inbox rows, steps of the statechart, rejections, parked
events); this module turns a finished unit of work into rows: inbox and its
outcome updates, cluster aggregates, history, outbox (outputs and DLQ records),
parked events and their wake-ups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from schemas.messages import InputEvent, OutputType
from schemas.published import DEFAULT_SCHEMA_BASE_URL, dataschema
from schemas.validate import ErrorClass, Rejected
from workflows.actions import Step
from workflows.aggregate import Cluster, Output
from workflows.store import aggregates, messages
from workflows.store.bulk import insert_rows
from workflows.store.tables import history

_STREAM = {"label": "labels", "deadline": "deadlines", "membership": "membership"}


@dataclass(frozen=True, slots=True)
class Inbound:
    """One input record: a decoded event, or the reason it could not be decoded."""

    origin: dict[str, Any]  # {"kind": "kafka", ...record...} or {"kind": "line", ...}
    event: InputEvent | None = None
    rejected: Rejected | None = None
    trace: str | None = None  # W3C traceparent of its apply span (consumers/tracing.py)


@dataclass(frozen=True, slots=True)
class Rejection:
    origin: dict[str, Any]
    error_class: ErrorClass
    message: str
    event_id: str | None = None
    cluster_id: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one input event: the canonical log line's content."""

    origin: dict[str, Any]
    event_id: str
    event_type: str
    cluster_id: str
    outcome: str  # applied | parked | duplicate | rejected
    from_state: str | None = None
    to_state: str | None = None


@dataclass
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    timers_fired: int = 0
    attempts: int = 1
    clusters_woken: int = 0  # release_parked: clusters whose parked events it looked at

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)


@dataclass
class UnitOfWork:
    """Everything one transaction will write."""

    now: datetime
    clusters: dict[str, Cluster]
    steps: list[Step] = field(default_factory=list)
    inbox_rows: list[dict[str, Any]] = field(default_factory=list)
    outcome_updates: list[tuple[str, str, str]] = field(default_factory=list)
    result: BatchResult = field(default_factory=BatchResult)
    trace: str | None = None  # of the input record being applied; steps decided now carry it

    def cluster(self, cluster_id: str) -> Cluster:
        found = self.clusters.get(cluster_id)
        if found is None:
            found = self.clusters[cluster_id] = Cluster(cluster_id)
        return found

    def outcome(
        self,
        origin: dict[str, Any],
        event: InputEvent,
        outcome: str,
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        self.result.outcomes.append(
            Outcome(origin, event.id, event.type.value, event.cluster_id, outcome, before, after)
        )

    def reject(
        self,
        origin: dict[str, Any],
        error_class: ErrorClass,
        message: str,
        event: InputEvent | None = None,
        *,
        event_id: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        if event is not None:
            event_id, cluster_id = event.id, event.cluster_id
            self.outcome(origin, event, "rejected")
        self.result.rejections.append(Rejection(origin, error_class, message, event_id, cluster_id))


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """How outputs become structured CloudEvents: the service's source, time zone and
    the base URI of the published data schemas."""

    source: str
    zone: ZoneInfo
    mark_sent: bool  # replay prints its outputs instead of publishing them
    schema_base: str = DEFAULT_SCHEMA_BASE_URL


def write(conn: Connection, work: UnitOfWork, formats: OutputFormat) -> None:
    messages.record_received(conn, work.inbox_rows)
    messages.set_outcomes(conn, work.outcome_updates)
    aggregates.save(conn, [c for c in work.clusters.values() if c.changed], work.now)
    entries = [h for step in work.steps for h in step.history]
    insert_rows(
        conn,
        history,
        [
            {
                "cluster_id": h.cluster_id,
                "at": h.at,
                "cause_id": h.cause_id,
                "cause_type": h.cause_type,
                "from_state": h.from_state,
                "to_state": h.to_state,
                "note": h.note,
                "recorded_at": work.now,
            }
            for h in entries
        ],
    )
    rows = [_output_row(work, formats, o, s.trace) for s in work.steps for o in s.outputs]
    rows += [_dlq_row(work, r) for r in work.result.rejections if r.origin.get("kind") == "kafka"]
    messages.enqueue(conn, rows)
    work.result.outputs = [r["payload"] for r in rows if r["stream"] != "dlq"]


def _output_row(
    work: UnitOfWork, formats: OutputFormat, output: Output, trace: str | None
) -> dict[str, Any]:
    """The complete event, as stored: the relay publishes these bytes, however often."""
    kind: OutputType = output.type
    payload = {
        "specversion": "1.0",
        "id": output.event_id,
        "source": formats.source,
        "type": kind.value,
        "subject": output.cluster_id,
        "time": output.time.astimezone(formats.zone).isoformat(),
        "datacontenttype": "application/json",
        "dataschema": dataschema(formats.schema_base, kind.value),
        "data": output.data,
    }
    if trace is not None:
        payload["traceparent"] = trace  # the CloudEvents distributed-tracing extension
    return {
        "event_id": output.event_id,
        "cluster_id": output.cluster_id,
        "stream": _STREAM[kind.value.split(".")[1]],
        "payload": payload,
        "created_at": work.now,
        "sent_at": work.now if formats.mark_sent else None,
    }


def _dlq_row(work: UnitOfWork, rejection: Rejection) -> dict[str, Any]:
    return {
        "event_id": None,
        "cluster_id": rejection.cluster_id,
        "stream": "dlq",
        "payload": {
            "origin": rejection.origin,
            "error_class": rejection.error_class.value,
            "error_message": rejection.message,
        },
        "created_at": work.now,
        "sent_at": None,
    }


def merge(results: Sequence[BatchResult]) -> BatchResult:
    merged = BatchResult()
    for result in results:
        merged.outcomes += result.outcomes
        merged.rejections += result.rejections
        merged.outputs += result.outputs
        merged.timers_fired += result.timers_fired
        merged.attempts = max(merged.attempts, result.attempts)
        merged.clusters_woken += result.clusters_woken
    return merged
