"""The one handler: input events and fired timers, applied in a unit of work.

A batch is one database transaction: inbox rows (dedupe on source+id), the
clusters' aggregates loaded and locked, timers due up to each event's
effective time fired first, the statechart applied, parked events retried,
and state, history, timers and outbox rows written. The caller commits its
Kafka offsets only after this returns.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from schemas.messages import InputEvent, OutputType
from schemas.validate import ErrorClass, Rejected, parse_event
from workflows.actions import Step
from workflows.aggregate import Cluster
from workflows.dates import Clock
from workflows.decider import Decider, Park, Refuse
from workflows.membership import MembershipMachine
from workflows.policy import Policy
from workflows.store import aggregates, messages
from workflows.store.messages import ParkedEvent
from workflows.store.tables import history

T = TypeVar("T")

MAX_ATTEMPTS = 5
_STREAM = {"label": "labels", "deadline": "deadlines", "membership": "membership"}


@dataclass(frozen=True, slots=True)
class Inbound:
    """One input record: a decoded event, or the reason it could not be decoded."""

    origin: dict[str, Any]  # {"kind": "kafka", ...record...} or {"kind": "line", ...}
    event: InputEvent | None = None
    rejected: Rejected | None = None


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

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)


@dataclass
class _Work:
    """Everything one transaction will write."""

    now: datetime
    clusters: dict[str, Cluster]
    parked: dict[str, list[ParkedEvent]] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    inbox_rows: list[dict[str, Any]] = field(default_factory=list)
    outcome_updates: list[tuple[str, str, str]] = field(default_factory=list)
    unpark: list[int] = field(default_factory=list)
    result: BatchResult = field(default_factory=BatchResult)


def digest(event: InputEvent) -> str:
    """What makes two deliveries of one (source, id) the same event."""
    content = {k: event.raw.get(k) for k in ("type", "subject", "time", "data")}
    return hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()


class Workflow:
    def __init__(
        self,
        db: Engine,
        policy: Policy,
        clock: Clock,
        service_source: str,
        *,
        mark_sent: bool = False,
    ) -> None:
        self.db = db
        self.policy = policy
        self.clock = clock
        self.source = service_source
        self.mark_sent = mark_sent  # replay prints its outputs instead of publishing them
        self.decider = Decider(policy)

    # -- entry points -----------------------------------------------------------

    def apply_batch(self, items: Sequence[Inbound]) -> BatchResult:
        """Apply a batch in one transaction.

        A record that makes the handler itself fail (a bug, not bad input) must
        not stop its partition for ever: the batch is split, and a record that
        fails on its own is rejected with the error instead of being applied.
        Database errors are not split: they are the caller's to retry.
        """
        try:
            return self._transaction(lambda conn: self._apply(conn, items))
        except (SQLAlchemyError, aggregates.StaleAggregate):
            raise
        except Exception as exc:
            if len(items) > 1:
                return _merge([self.apply_batch(items[i : i + 1]) for i in range(len(items))])
            poisoned = Inbound(
                items[0].origin,
                rejected=Rejected(
                    ErrorClass.INVALID_TRANSITION,
                    f"could not be applied: internal error {type(exc).__name__}: {exc}",
                ),
            )
            return self._transaction(lambda conn: self._apply(conn, [poisoned]))

    def fire_due_timers(self, until: datetime | None = None, limit: int = 200) -> BatchResult:
        """Fire timers due by `until` (default: now) for up to `limit` clusters."""
        deadline = until or self.clock.now()
        return self._transaction(lambda conn: self._fire(conn, deadline, limit))

    def expire_parked(self, now: datetime | None = None, limit: int = 500) -> BatchResult:
        at = now or self.clock.now()
        return self._transaction(lambda conn: self._expire(conn, at, limit))

    # -- transactions -----------------------------------------------------------

    def _transaction(self, work: Callable[[Connection], BatchResult]) -> BatchResult:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.db.begin() as conn:
                    result = work(conn)
                result.attempts = attempt
                return result
            except (IntegrityError, aggregates.StaleAggregate) as exc:
                if attempt == MAX_ATTEMPTS:
                    raise
                _ = exc  # a concurrent writer won the race; re-read and apply again
            except DBAPIError as exc:
                if attempt == MAX_ATTEMPTS or not _is_retryable(exc):
                    raise
            time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def _apply(self, conn: Connection, items: Sequence[Inbound]) -> BatchResult:
        now = self.clock.now()
        events = [i.event for i in items if i.event is not None]
        known = messages.seen(conn, [(e.source, e.id) for e in events])
        cluster_ids = {e.cluster_id for e in events}
        work = _Work(now, aggregates.load(conn, cluster_ids))
        work.parked = messages.parked_for(conn, sorted(cluster_ids))
        for item in items:
            if item.event is None:
                assert item.rejected is not None
                self._reject(work, item.origin, item.rejected.error_class, item.rejected.message)
                continue
            self._receive(work, item.event, item.origin, known)
        self._write(conn, work)
        return work.result

    def _receive(
        self,
        work: _Work,
        event: InputEvent,
        origin: dict[str, Any],
        known: dict[tuple[str, str], str],
    ) -> None:
        key = (event.source, event.id)
        fingerprint = digest(event)
        if key in known:
            if known[key] == fingerprint:
                work.result.outcomes.append(self._outcome(origin, event, "duplicate"))
                return
            self._reject(
                work,
                origin,
                ErrorClass.CONFLICT,
                f"event id {event.id!r} from {event.source!r} was already received "
                "with different content",
                event,
            )
            return
        known[key] = fingerprint
        cluster = self._cluster(work, event.cluster_id)
        check = self.decider.check(cluster, event)
        outcome = "applied"
        if isinstance(check, Park):
            work.parked.setdefault(cluster.cluster_id, []).append(
                ParkedEvent(
                    None,
                    cluster.cluster_id,
                    event.source,
                    event.id,
                    self.decider.effective_time(event),
                    work.now,
                    dict(event.raw),
                    origin,
                    decoded=event,
                )
            )
            outcome = "parked"
        elif check is not None:
            self._reject(work, origin, ErrorClass.INVALID_TRANSITION, check.message, event)
            outcome = "rejected"
        work.inbox_rows.append(
            {
                "source": event.source,
                "event_id": event.id,
                "cluster_id": event.cluster_id,
                "digest": fingerprint,
                "outcome": outcome,
                "received_at": work.now,
            }
        )
        if outcome != "applied":
            if outcome == "parked":
                work.result.outcomes.append(self._outcome(origin, event, outcome))
            return
        before = cluster.state
        self._apply_one(work, cluster, event)
        work.result.outcomes.append(self._outcome(origin, event, "applied", before, cluster.state))
        self._retry_parked(work, cluster)

    def _apply_one(self, work: _Work, cluster: Cluster, event: InputEvent) -> None:
        machine = self._machine(work, cluster)
        work.steps.extend(
            self.decider.fire_due(cluster, machine, self.decider.effective_time(event))
        )
        work.steps.append(self.decider.apply(cluster, machine, event))

    def _retry_parked(self, work: _Work, cluster: Cluster) -> None:
        """Apply, in effective-time order, every parked event the new state allows."""
        waiting = work.parked.get(cluster.cluster_id, [])
        for _ in range(len(waiting)):
            ready = self._next_ready(cluster, waiting)
            if ready is None:
                return
            parked, decoded = ready
            waiting.remove(parked)
            if parked.row_id is not None:
                work.unpark.append(parked.row_id)
            if isinstance(decoded, Rejected):
                work.outcome_updates.append((parked.source, parked.event_id, "rejected"))
                self._reject(
                    work,
                    parked.origin,
                    decoded.error_class,
                    decoded.message,
                    event_id=parked.event_id,
                    cluster_id=parked.cluster_id,
                )
                continue
            refusal = self.decider.check(cluster, decoded)
            if isinstance(refusal, Refuse):
                work.outcome_updates.append((parked.source, parked.event_id, "rejected"))
                self._reject(
                    work, parked.origin, ErrorClass.INVALID_TRANSITION, refusal.message, decoded
                )
                continue
            work.outcome_updates.append((parked.source, parked.event_id, "applied"))
            before = cluster.state
            self._apply_one(work, cluster, decoded)
            work.result.outcomes.append(
                self._outcome(parked.origin, decoded, "applied", before, cluster.state)
            )

    def _next_ready(
        self, cluster: Cluster, waiting: list[ParkedEvent]
    ) -> tuple[ParkedEvent, InputEvent | Rejected] | None:
        """The earliest parked event that no longer has to wait."""
        for parked in sorted(waiting, key=lambda p: (p.effective_at, p.row_id or 1 << 62)):
            if parked.decoded is None:
                try:
                    parked.decoded = parse_event(parked.event)
                except Rejected as exc:
                    return parked, exc
            event: InputEvent = parked.decoded
            if not isinstance(self.decider.check(cluster, event), Park):
                return parked, event
        return None

    def _fire(self, conn: Connection, until: datetime, limit: int) -> BatchResult:
        work = _Work(self.clock.now(), {})
        ids = aggregates.due_clusters(conn, until, limit)
        work.clusters = aggregates.load(conn, ids, skip_locked=True)
        for cluster in work.clusters.values():
            steps = self.decider.fire_due(cluster, self._machine(work, cluster), until)
            work.steps.extend(steps)
            work.result.timers_fired += len(steps)
        self._write(conn, work)
        return work.result

    def _expire(self, conn: Connection, now: datetime, limit: int) -> BatchResult:
        work = _Work(now, {})
        for parked in messages.expired_parked(conn, now - self.policy.park_ttl, limit):
            assert parked.row_id is not None
            work.unpark.append(parked.row_id)
            work.outcome_updates.append((parked.source, parked.event_id, "rejected"))
            self._reject(
                work,
                parked.origin,
                ErrorClass.EXPIRED_PARK,
                f"waited since {parked.parked_at.isoformat()} (park_ttl "
                f"{self.policy.park_ttl}) for a state that never came",
                event_id=parked.event_id,
                cluster_id=parked.cluster_id,
            )
        self._write(conn, work)
        return work.result

    # -- helpers ------------------------------------------------------------------

    def _cluster(self, work: _Work, cluster_id: str) -> Cluster:
        cluster = work.clusters.get(cluster_id)
        if cluster is None:
            cluster = work.clusters[cluster_id] = Cluster(cluster_id)
        return cluster

    def _machine(self, work: _Work, cluster: Cluster) -> MembershipMachine:
        return self.decider.machine(cluster)

    def _outcome(
        self,
        origin: dict[str, Any],
        event: InputEvent,
        outcome: str,
        before: str | None = None,
        after: str | None = None,
    ) -> Outcome:
        return Outcome(origin, event.id, event.type.value, event.cluster_id, outcome, before, after)

    def _reject(
        self,
        work: _Work,
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
            work.result.outcomes.append(self._outcome(origin, event, "rejected"))
        work.result.rejections.append(Rejection(origin, error_class, message, event_id, cluster_id))

    def _write(self, conn: Connection, work: _Work) -> None:
        messages.record_received(conn, work.inbox_rows)
        messages.set_outcomes(conn, work.outcome_updates)
        aggregates.save(conn, [c for c in work.clusters.values() if c.changed], work.now)
        entries = [h for step in work.steps for h in step.history]
        if entries:
            conn.execute(
                history.insert(),
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
        rows = [self._output_row(work, o) for step in work.steps for o in step.outputs]
        rows += [
            self._dlq_row(work, r)
            for r in work.result.rejections
            if r.origin.get("kind") == "kafka"
        ]
        messages.enqueue(conn, rows)
        messages.park(conn, [p for ps in work.parked.values() for p in ps if p.row_id is None])
        messages.unpark(conn, work.unpark)
        work.result.outputs = [r["payload"] for r in rows if r["stream"] != "dlq"]

    def _output_row(self, work: _Work, output: Any) -> dict[str, Any]:
        kind: OutputType = output.type
        payload = {
            "specversion": "1.0",
            "id": output.event_id,
            "source": self.source,
            "type": kind.value,
            "subject": output.cluster_id,
            "time": output.time.astimezone(self.policy.zone).isoformat(),
            "datacontenttype": "application/json",
            "data": output.data,
        }
        return {
            "event_id": output.event_id,
            "cluster_id": output.cluster_id,
            "stream": _STREAM[kind.value.split(".")[1]],
            "payload": payload,
            "created_at": work.now,
            "sent_at": work.now if self.mark_sent else None,
        }

    def _dlq_row(self, work: _Work, rejection: Rejection) -> dict[str, Any]:
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


def _merge(results: Sequence[BatchResult]) -> BatchResult:
    merged = BatchResult()
    for result in results:
        merged.outcomes += result.outcomes
        merged.rejections += result.rejections
        merged.outputs += result.outputs
        merged.timers_fired += result.timers_fired
        merged.attempts = max(merged.attempts, result.attempts)
    return merged


def _is_retryable(exc: DBAPIError) -> bool:
    """Deadlocks and serialization failures are transient; other errors are not ours to hide."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in {"40001", "40P01"} or "database is locked" in str(exc.orig)
