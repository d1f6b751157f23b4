"""The one handler: input events, fired timers and released parked events, each batch
applied in a unit of work.

A batch is one database transaction: inbox rows (dedupe on source+id), the
clusters' aggregates loaded and locked, timers due up to each event's
effective time fired first, the statechart applied, parked events released
(workflows.parking), and state, history, timers and outbox rows written. The
caller commits its Kafka offsets only after this returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from schemas.messages import InputEvent
from schemas.published import DEFAULT_SCHEMA_BASE_URL
from schemas.validate import ErrorClass, Rejected, parse_event
from workflows.aggregate import Cluster
from workflows.dates import Clock
from workflows.decider import Decider, Park, Refuse
from workflows.digest import digest, is_same_event
from workflows.parking import RELEASE_BUDGET, Parking
from workflows.policy import Policy
from workflows.store import aggregates, messages, progress
from workflows.store.messages import ParkedEvent
from workflows.unit_of_work import (
    BatchResult,
    Inbound,
    Outcome,
    OutputFormat,
    Rejection,
    UnitOfWork,
    merge,
    write,
)

__all__ = ["MAX_ATTEMPTS", "BatchResult", "Inbound", "Outcome", "Rejection", "Workflow"]

MAX_ATTEMPTS = 5


class Workflow:
    def __init__(
        self,
        db: Engine,
        policy: Policy,
        clock: Clock,
        service_source: str,
        *,
        mark_sent: bool = False,
        release_budget: int = RELEASE_BUDGET,
        schema_base: str = DEFAULT_SCHEMA_BASE_URL,
    ) -> None:
        self.db = db
        self.policy = policy
        self.clock = clock
        self.source = service_source
        self.formats = OutputFormat(service_source, policy.zone, mark_sent, schema_base)
        self.decider = Decider(policy, service_source)
        self.release_budget = release_budget

    # -- entry points -----------------------------------------------------------

    def apply_batch(self, items: Sequence[Inbound]) -> BatchResult:
        """Apply a batch in one transaction.

        A record that makes the handler fail (a bug, not bad input), or whose effects
        violate a database constraint however often the transaction is retried (a
        race would have resolved itself), must not stop its partition for ever: the
        batch is split, and a record that fails on its own is rejected with the
        reason instead of being applied. Other database errors are the caller's to
        retry: the database is unavailable.
        """
        try:
            return self._transaction(lambda conn: self._apply(conn, items))
        except aggregates.StaleAggregate:
            raise
        except IntegrityError as exc:
            reason = str(exc.orig).strip().splitlines()[0][:300] if exc.orig else type(exc).__name__
            return self._split(
                items,
                ErrorClass.CONFLICT,
                f"could not be stored: its effects violate a database constraint ({reason})",
            )
        except SQLAlchemyError:
            raise
        except Exception as exc:
            return self._split(
                items,
                ErrorClass.INVALID_TRANSITION,
                f"could not be applied: internal error {type(exc).__name__}: {exc}",
            )

    def fire_due_timers(
        self,
        until: datetime | None = None,
        limit: int = 200,
        *,
        allow_late_results: bool = False,
    ) -> BatchResult:
        """Fire timers due by `until` (default: now) for up to `limit` clusters.

        `allow_late_results` (the wall clock's timer loop) holds each breach back
        until `until` has passed its due time by the policy's late_result_allowance;
        the breach keeps its business time.
        """
        deadline = until or self.clock.now()
        breaches_until = deadline - self.policy.late_result_allowance
        held = breaches_until if allow_late_results else None
        return self._transaction(lambda conn: self._fire(conn, deadline, limit, held))

    def next_timer_due(self, after: datetime) -> datetime | None:
        """When the next pending timer can fire after `after` (a breach: once the
        late_result_allowance has passed too): how long the timer loop may sleep."""
        with self.db.connect() as conn:
            return aggregates.next_due(conn, after, self.policy.late_result_allowance)

    def expire_parked(self, now: datetime | None = None, limit: int = 500) -> BatchResult:
        at = now or self.clock.now()
        return self._transaction(lambda conn: self._expire(conn, at, limit))

    def release_parked(self, now: datetime | None = None, limit: int = 200) -> BatchResult:
        """Continue the releases whose wake-up has come by `now` (default: the clock):
        parked events the service clock has reached, and releases that stopped at the
        budget. `clusters_woken` of the result is 0 when there was nothing to do."""
        at = now or self.clock.now()
        return self._transaction(lambda conn: self._release_due(conn, at, limit))

    # -- transactions -----------------------------------------------------------

    def _transaction(self, work: Callable[[Connection], BatchResult]) -> BatchResult:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.db.begin() as conn:
                    result = work(conn)
                result.attempts = attempt
                return result
            except (IntegrityError, aggregates.StaleAggregate):
                if attempt == MAX_ATTEMPTS:
                    raise
                # a concurrent writer won the race; re-read and apply again
            except DBAPIError as exc:
                if attempt == MAX_ATTEMPTS or not _is_retryable(exc):
                    raise
            time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def _split(
        self, items: Sequence[Inbound], error_class: ErrorClass, message: str
    ) -> BatchResult:
        if len(items) > 1:
            return merge([self.apply_batch(items[i : i + 1]) for i in range(len(items))])
        poisoned = Inbound(items[0].origin, rejected=Rejected(error_class, message))
        return self._transaction(lambda conn: self._apply(conn, [poisoned]))

    def _apply(self, conn: Connection, items: Sequence[Inbound]) -> BatchResult:
        now = self.clock.now()
        items, applied_before = progress.claim(conn, items, now)  # workflows/store/progress.py
        events = [i.event for i in items if i.event is not None]
        known = messages.seen(conn, [(e.source, e.id) for e in events])
        cluster_ids = sorted({e.cluster_id for e in events})
        work = UnitOfWork(now, aggregates.load(conn, cluster_ids))
        for item in applied_before:  # below the partition's progress: applied already
            if item.event is not None:
                work.outcome(item.origin, item.event, "duplicate")
        parking = Parking(conn, self.decider, now, self.release_budget)
        parking.load(cluster_ids)
        for item in items:
            work.trace = item.trace
            if item.event is None:
                assert item.rejected is not None
                work.reject(item.origin, item.rejected.error_class, item.rejected.message)
                continue
            self._receive(work, parking, item.event, item.origin, known)
        self._write(conn, work, parking)
        return work.result

    def _receive(
        self,
        work: UnitOfWork,
        parking: Parking,
        event: InputEvent,
        origin: dict[str, Any],
        known: dict[tuple[str, str], str],
    ) -> None:
        key = (event.source, event.id)
        fingerprint = digest(event)
        if key in known:
            if is_same_event(known[key], event, fingerprint):
                work.outcome(origin, event, "duplicate")
                return
            work.reject(
                origin,
                ErrorClass.CONFLICT,
                f"event id {event.id!r} from {event.source!r} was already received "
                "with different content",
                event,
            )
            return
        known[key] = fingerprint
        cluster = work.cluster(event.cluster_id)
        if parking.take_due(cluster.cluster_id):
            self._release(work, parking, cluster)  # what waited for the clock comes first
        check = (
            Park("waits behind the release of earlier parked events")
            if parking.holds(cluster.cluster_id)
            else self.decider.check(cluster, event, now=work.now)
        )
        outcome = "applied"
        if isinstance(check, Park):
            parking.park(self._parked(work, cluster, event, origin))
            outcome = "parked"
            work.outcome(origin, event, outcome)
        elif check is not None:
            work.reject(origin, ErrorClass.INVALID_TRANSITION, check.message, event)
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
            return
        before = cluster.state
        self._apply_one(work, cluster, event)
        work.outcome(origin, event, "applied", before, cluster.state)
        if cluster.state != before:
            self._release(work, parking, cluster)

    def _parked(
        self, work: UnitOfWork, cluster: Cluster, event: InputEvent, origin: dict[str, Any]
    ) -> ParkedEvent:
        return ParkedEvent(
            None,
            cluster.cluster_id,
            event.source,
            event.id,
            self.decider.effective_time(event),
            work.now,
            dict(event.raw),
            origin,
            event.type.value,
            decoded=event,
        )

    def _apply_one(self, work: UnitOfWork, cluster: Cluster, event: InputEvent) -> None:
        """The cluster's timers due by the event's effective time, then the event itself;
        their outputs carry the trace of the record being applied (if any)."""
        machine = self.decider.machine(cluster)
        steps = self.decider.fire_due(cluster, machine, self.decider.effective_time(event))
        steps.append(self.decider.apply(cluster, machine, event))
        for step in steps:
            step.trace = work.trace
        work.steps.extend(steps)

    def _release(self, work: UnitOfWork, parking: Parking, cluster: Cluster) -> None:
        """Apply, in effective-time order, the parked events the cluster's state allows."""
        for parked in parking.ready(cluster):
            if parked.decoded is None:
                try:
                    parked.decoded = parse_event(parked.event)
                except Rejected as exc:
                    parking.taken(parked)
                    work.outcome_updates.append((parked.source, parked.event_id, "rejected"))
                    work.reject(
                        parked.origin,
                        exc.error_class,
                        exc.message,
                        event_id=parked.event_id,
                        cluster_id=parked.cluster_id,
                    )
                    continue
            event: InputEvent = parked.decoded
            verdict = self.decider.check(cluster, event, now=work.now)
            if isinstance(verdict, Park):
                parking.skip(parked)
                continue
            parking.taken(parked)
            if isinstance(verdict, Refuse):
                work.outcome_updates.append((parked.source, parked.event_id, "rejected"))
                work.reject(parked.origin, ErrorClass.INVALID_TRANSITION, verdict.message, event)
                continue
            work.outcome_updates.append((parked.source, parked.event_id, "applied"))
            before = cluster.state
            self._apply_one(work, cluster, event)
            work.outcome(parked.origin, event, "applied", before, cluster.state)

    def _release_due(self, conn: Connection, now: datetime, limit: int) -> BatchResult:
        edge = now + self.policy.max_clock_skew
        ids = messages.due_wakeups(conn, edge, limit)
        work = UnitOfWork(now, aggregates.load(conn, ids))
        parking = Parking(conn, self.decider, now, self.release_budget)
        parking.load(ids)
        for cluster_id in ids:
            if parking.budget == 0:
                break  # the rest stays due for the next round
            if parking.take_due(cluster_id):
                work.result.clusters_woken += 1
                self._release(work, parking, work.cluster(cluster_id))
        self._write(conn, work, parking)
        return work.result

    def _fire(
        self, conn: Connection, until: datetime, limit: int, breaches_until: datetime | None
    ) -> BatchResult:
        work = UnitOfWork(self.clock.now(), {})
        ids = aggregates.due_clusters(conn, until, limit, breaches_until)
        work.clusters = aggregates.load(conn, ids, skip_locked=True)
        for cluster in work.clusters.values():
            steps = self.decider.fire_due(
                cluster, self.decider.machine(cluster), until, breaches_until=breaches_until
            )
            work.steps.extend(steps)
            work.result.timers_fired += len(steps)
        self._write(conn, work)
        return work.result

    def _expire(self, conn: Connection, now: datetime, limit: int) -> BatchResult:
        work = UnitOfWork(now, {})
        expired = messages.expired_parked(conn, now - self.policy.park_ttl, limit)
        for parked in expired:
            work.outcome_updates.append((parked.source, parked.event_id, "rejected"))
            work.reject(
                parked.origin,
                ErrorClass.EXPIRED_PARK,
                f"waited since {parked.parked_at.isoformat()} (park_ttl "
                f"{self.policy.park_ttl}) for a state that never came",
                event_id=parked.event_id,
                cluster_id=parked.cluster_id,
            )
        messages.unpark(conn, [p.row_id for p in expired if p.row_id is not None])
        self._write(conn, work)
        return work.result

    def _write(self, conn: Connection, work: UnitOfWork, parking: Parking | None = None) -> None:
        write(conn, work, self.formats)
        if parking is not None:
            parking.write()


def _is_retryable(exc: DBAPIError) -> bool:
    """Deadlocks and serialization failures are transient; other errors are not ours to hide."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in {"40001", "40P01"} or "database is locked" in str(exc.orig)
