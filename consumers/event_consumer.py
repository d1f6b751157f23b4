"""Poll the input topics, decode, apply in batches, commit offsets after the database.

Offsets are committed per partition only after the batch's transaction
committed, so a crash at any point re-delivers at most what the inbox then
recognises as duplicates. Nothing blocking runs in rebalance callbacks: a
batch is applied and committed before the next poll, so a revoked partition
never has work in hand.

The database also keeps each partition's progress (workflows/store/progress.py):
a newly assigned partition resumes at that progress when Kafka's committed
offset lags behind it, and a batch skips what another member already applied.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import SQLAlchemyError

from consumers.health import LoopState
from consumers.kafka_auth import AUTH_FAILURES
from consumers.metrics import Metrics
from consumers.records import DecodeFailure, RecordOrigin, record_to_event_dict
from consumers.retry import Backoff
from consumers.tracing import Tracing
from schemas.errors import ErrorClass, Rejected
from schemas.validate import parse_event
from workflows.engine import BatchResult, Inbound, Workflow
from workflows.store import progress

log = structlog.get_logger("gocluster.consumer")


def decode(record: Any, max_bytes: int) -> Inbound:
    """A Kafka record -> an event to apply, or the reason it goes to the DLQ."""
    origin = RecordOrigin.from_consumer_record(record)
    where = {"kind": "kafka", **origin.to_json()}
    try:
        event = parse_event(record_to_event_dict(origin, max_bytes))
    except DecodeFailure as exc:
        return Inbound(where, rejected=Rejected(ErrorClass.DECODE, exc.message))
    except Rejected as exc:
        return Inbound(where, rejected=exc)
    if origin.key is not None and origin.key != event.subject.encode("utf-8"):
        key = origin.key.decode("utf-8", "replace")
        message = f"record key {key!r} is not the event's subject {event.subject!r}"
        return Inbound(where, rejected=Rejected(ErrorClass.CONFLICT, message))
    return Inbound(where, event=event)


class _LogAssignments(ConsumerRebalanceListener):  # type: ignore[misc]
    """Which input partitions this instance owns, in the log: operators (and the
    multi-instance tests) see a rebalance happen. Logging only: these callbacks
    run on the loop that sends heartbeats."""

    def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions revoked", partitions=_names(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned", partitions=_names(assigned))


class _NewAssignments(_LogAssignments):
    """Partitions assigned since the consumer last looked. The callbacks may run on the
    client's own thread, so they only record; the consumer does the work after poll()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._new: set[TopicPartition] = set()

    def on_partitions_revoked(self, revoked: Any) -> None:
        super().on_partitions_revoked(revoked)
        with self._lock:
            self._new.difference_update(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        super().on_partitions_assigned(assigned)
        with self._lock:
            self._new.update(assigned)

    def take(self) -> set[TopicPartition]:
        with self._lock:
            taken, self._new = self._new, set()
        return taken

    def again(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            self._new.update(partitions)


def _names(partitions: Any) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)


class EventConsumer:
    def __init__(
        self,
        workflow: Workflow,
        consumer_config: dict[str, Any],
        topics: Sequence[str],
        *,
        max_record_bytes: int,
        stop: threading.Event,
        applied: threading.Event | None = None,
        poll_timeout_ms: int = 500,
        metrics: Metrics | None = None,
        progress: LoopState | None = None,
        on_poll: Callable[[str, int], None] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.workflow = workflow
        self.tracing = tracing or Tracing()  # off
        self.progress = progress  # liveness: beats after every round
        self.on_poll = on_poll  # readiness: group state and partitions after every poll
        self.metrics = metrics
        self.stop = stop
        self.config = consumer_config
        self.topics = list(topics)
        self.max_record_bytes = max_record_bytes
        self.applied = applied or threading.Event()  # wakes the relay
        self.poll_timeout_ms = poll_timeout_ms
        self.consumer: KafkaConsumer | None = None
        self.backoff = Backoff()
        self.assignments = _NewAssignments()

    def connect(self) -> bool:
        while not self.stop.is_set():
            try:
                self.consumer = KafkaConsumer(**self.config)
                self.consumer.subscribe(self.topics, listener=self.assignments)
                log.info(
                    "consumer subscribed", topics=self.topics, group_id=self.config.get("group_id")
                )
                self.backoff.reset()
                return True
            except KafkaError as exc:
                delay = self.backoff.next_delay()
                if AUTH_FAILURES.failing_for() is not None:
                    log.error(
                        "kafka authentication failed, retrying",
                        error=AUTH_FAILURES.error,
                        username=self.config.get("sasl_plain_username"),
                        mechanism=self.config.get("sasl_mechanism"),
                        retry_in_s=round(delay, 1),
                    )
                else:
                    log.warning(
                        "kafka unreachable, retrying", error=str(exc), retry_in_s=round(delay, 1)
                    )
                self.stop.wait(delay)
                self._beat()
        return False

    def run(self) -> None:
        """Until stopped: the batch in hand is finished and committed before it returns."""
        if not self.connect():
            return
        assert self.consumer is not None
        try:
            while not self.stop.is_set():
                self.step()
                self._beat()
        finally:
            self.consumer.close(autocommit=False)
            log.info("consumer closed")

    def step(self) -> int:
        """One poll, one batch, one commit. Returns how many records it applied."""
        assert self.consumer is not None
        polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms)
        if self.on_poll is not None:
            self.on_poll(self.consumer.group_metadata().state, len(self.consumer.assignment()))
        if fresh := self.assignments.take():
            polled = self._resume_at_progress(fresh, polled)
        records = [r for batch in polled.values() for r in batch]
        if not records:
            return 0
        decoded = [decode(r, self.max_record_bytes) for r in records]
        applying = self.tracing.applying(records, decoded)
        items = applying.items
        started = time.perf_counter()
        try:
            result = self.workflow.apply_batch(items)
        except SQLAlchemyError as exc:
            applying.end(None, error="database unavailable; the batch is retried")
            self._rewind(polled)
            delay = self.backoff.next_delay()
            log.error(
                "database unavailable, batch will be retried",
                error=_short(exc),
                records=len(records),
                retry_in_s=round(delay, 1),
            )
            self.stop.wait(delay)
            return 0
        applying.end(result)
        self.backoff.reset()
        elapsed_ms = (time.perf_counter() - started) * 1000
        if self.metrics is not None:
            self.metrics.observe(result, elapsed_ms / 1000, items)
        self._log(result, elapsed_ms / max(1, len(items)))
        self.applied.set()
        self._commit(polled)
        return len(records)

    def _beat(self) -> None:
        if self.progress is not None:
            self.progress.beat()

    def _resume_at_progress(
        self, fresh: set[TopicPartition], polled: dict[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, list[Any]]:
        """Newly assigned partitions start at the database's progress when Kafka's
        committed offset lags behind it (a failed commit, a crash between the two).

        Until their progress is known nothing of them is applied: on an error they
        go back to their first polled offset and are looked at again next round.
        """
        assert self.consumer is not None
        try:
            return self._skip_applied(sorted(fresh), polled)
        except (SQLAlchemyError, KafkaError) as exc:
            delay = self.backoff.next_delay()
            log.warning(
                "could not read partition progress; retrying",
                error=_short(exc),
                retry_in_s=round(delay, 1),
            )
            self.assignments.again(fresh)
            self._rewind({tp: batch for tp, batch in polled.items() if tp in fresh})
            self.stop.wait(delay)
            return {tp: batch for tp, batch in polled.items() if tp not in fresh}

    def _skip_applied(
        self, fresh: list[TopicPartition], polled: dict[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, list[Any]]:
        assert self.consumer is not None
        with self.workflow.db.connect() as conn:
            stored = progress.next_offsets(conn, [(tp.topic, tp.partition) for tp in fresh])
        ends = self.consumer.end_offsets(fresh) if stored else {}
        kept = dict(polled)
        for tp in fresh:
            done = stored.get((tp.topic, tp.partition))
            if done is None:
                continue
            if done > ends.get(tp, done):
                self._forget_progress(tp, done, ends[tp])
                continue
            batch = kept.pop(tp, [])
            start = batch[0].offset if batch else self.consumer.position(tp) or 0
            if done > start:
                log.info(
                    "partition resumed at the database's progress",
                    partition=f"{tp.topic}/{tp.partition}",
                    committed=start,
                    progress=done,
                )
            left = [r for r in batch if r.offset >= done]
            if left:
                kept[tp] = left
            elif done > start:
                self.consumer.seek(tp, done)
        return kept

    def _forget_progress(self, tp: TopicPartition, done: int, end: int) -> None:
        """Progress past the partition's end: the topic was deleted and created again."""
        log.warning(
            "partition progress is past the end of the partition; the topic was recreated, "
            "so its progress starts again",
            partition=f"{tp.topic}/{tp.partition}",
            progress=done,
            end_offset=end,
        )
        with self.workflow.db.begin() as conn:
            progress.rewind(conn, (tp.topic, tp.partition), 0, self.workflow.clock.now())

    def _rewind(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """Poll moved the position past records the database never saw: go back."""
        assert self.consumer is not None
        for tp, batch in polled.items():
            self.consumer.seek(tp, batch[0].offset)

    def _commit(self, polled: dict[TopicPartition, list[Any]]) -> None:
        assert self.consumer is not None
        offsets = {
            tp: OffsetAndMetadata(batch[-1].offset + 1, None, -1) for tp, batch in polled.items()
        }
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            # The batch is in the database: a re-delivery is only duplicates for the inbox.
            log.warning(
                "offset commit failed; records will be re-delivered and skipped", error=str(exc)
            )

    def _log(self, result: BatchResult, per_record_ms: float) -> None:
        outputs = outputs_by_cause(result.outputs)
        for o in result.outcomes:
            origin = o.origin
            log.info(
                "event " + o.outcome,
                cluster_id=o.cluster_id,
                event_id=o.event_id,
                type=o.event_type,
                topic=origin.get("topic"),
                partition=origin.get("partition"),
                offset=origin.get("offset"),
                transition=_transition(o.from_state, o.to_state),
                outputs=outputs.pop((o.cluster_id, o.event_id), [])
                if o.outcome == "applied"
                else [],
                duration_ms=round(per_record_ms, 3),
            )
        if outputs:  # timers that came due before an event of their cluster
            log.info("timers fired in batch", outputs=[x for xs in outputs.values() for x in xs])
        for r in result.rejections:
            event_id, cluster_id = r.event_id, r.cluster_id
            if event_id is None:
                event_id, cluster_id = _ids(r.origin)
            log.warning(
                "record rejected to DLQ",
                error_class=r.error_class.value,
                error=r.message,
                cluster_id=cluster_id,
                event_id=event_id,
                topic=r.origin.get("topic"),
                partition=r.origin.get("partition"),
                offset=r.origin.get("offset"),
            )


def outputs_by_cause(outputs: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(cluster id, cause id) -> the output events it produced, as "type id" for the log."""
    found: dict[tuple[str, str], list[str]] = {}
    for event in outputs:
        data = event.get("data") or {}
        key = (str(event.get("subject")), str(data.get("cause_id")))
        found.setdefault(key, []).append(f"{event.get('type')} {event.get('id')}")
    return found


def _ids(origin: dict[str, Any]) -> tuple[str | None, str | None]:
    """The event and cluster ids of a rejected record, where its bytes parse that far."""
    try:
        event = record_to_event_dict(RecordOrigin.from_json(origin), 1 << 62)
    except (DecodeFailure, ValueError):
        return None, None
    data = event.get("data")
    cluster = event.get("subject") or (data.get("cluster_id") if isinstance(data, dict) else None)
    return (
        event["id"] if isinstance(event.get("id"), str) else None,
        cluster if isinstance(cluster, str) else None,
    )


def _transition(before: str | None, after: str | None) -> str | None:
    if after is None:
        return None
    return f"{before or 'null'}->{after}" if before != after else after


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300]
