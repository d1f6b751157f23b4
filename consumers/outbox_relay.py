"""The only publisher: outbox rows to Kafka, in order, marked sent after the ack.

Rows are read in `seq` order (per cluster that is the order they were
decided) and sent with the idempotent producer, `acks=all`. Only the
contiguous prefix of acknowledged rows is marked sent, so a failure never
lets a later event of a cluster overtake an earlier one; what is re-sent
after a crash carries the same event id. On PostgreSQL one relay at a time
holds a lease (consumers/relay_leadership.py), so two instances never
interleave and a paused leader is replaced.

Rows the broker acknowledged but the database would not mark sent (read-only
failover, full disk) are not published again: the relay keeps them in hand
and retries only the marking, with backoff, so a failure episode costs no
copies unless the lease moves meanwhile (then the new leader re-sends at most
that one batch).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from opentelemetry.trace import Span
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from consumers.health import LoopState
from consumers.metrics import Metrics
from consumers.records import RecordOrigin, dlq_record, output_headers, structured_value
from consumers.relay_leadership import Leadership, LostLease
from consumers.retry import Backoff
from consumers.tracing import Tracing
from schemas.published import DEFAULT_SCHEMA_BASE_URL, dataschema
from workflows.dates import Clock
from workflows.store import messages
from workflows.store.messages import OutboxRow

log = structlog.get_logger("gocluster.relay")

FLUSH_TIMEOUT_S = 30.0
RECREATE_AFTER_FAILURES = 2
# kafka-python's default max_request_size and Kafka's default message.max.bytes are
# ~1 MiB; stay below them with room for the batch framing.
MAX_PUBLISH_BYTES = 1_048_576 - 16_384
DEFAULT_LEASE_S = 15.0
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class OutboxRelay:
    def __init__(
        self,
        db: Engine,
        producer_factory: Callable[[], KafkaProducer],
        topics: dict[str, str],
        clock: Clock,
        stop: threading.Event,
        wake: threading.Event | None = None,
        batch: int = 500,
        idle_s: float = 0.5,
        metrics: Metrics | None = None,
        max_record_bytes: int = MAX_PUBLISH_BYTES,
        progress: LoopState | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        schema_base: str = DEFAULT_SCHEMA_BASE_URL,
        tracing: Tracing | None = None,
    ) -> None:
        self.db = db
        self.schema_base = schema_base  # for rows stored before outputs carried dataschema
        self.tracing = tracing or Tracing()  # off
        self.progress = progress  # liveness: beats after every round
        self.max_record_bytes = max_record_bytes
        self.metrics = metrics
        self.producer_factory = producer_factory
        self.topics = topics  # stream -> topic name
        self.clock = clock
        self.stop = stop
        self.wake = wake or threading.Event()
        self.batch = batch
        self.idle_s = idle_s
        self.producer: KafkaProducer | None = None
        self.leadership = Leadership(db, lease_s)
        self.backoff = Backoff()
        self.failed_rounds = 0
        self.published = 0
        self.unmarked: list[OutboxRow] = []  # acknowledged by the broker, not yet marked sent
        self.refused: set[int] = set()  # DLQ rows the broker refused for their size
        self.without_value: set[int] = set()  # DLQ rows last sent without their value

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                sent = self.step()
                if sent == 0:
                    self.wake.wait(self.idle_s)
                    self.wake.clear()
                if self.progress is not None:
                    self.progress.beat()
        finally:
            self.drain_once()
            self.close()

    def drain(self, max_rounds: int = 10_000) -> int:
        """Publish everything unsent now (tick); keeps trying until done or `stop` is set.

        A round that sends nothing is not the end: a broker hiccup passes within
        `tick --publish-timeout`, and next to a running service the relay that holds
        the lease publishes the rows itself, which `_pending` sees.
        """
        total = 0
        for _ in range(max_rounds):
            sent = self.step()
            total += sent
            if sent == 0 and (self.stop.is_set() or not self._pending()):
                break
        return total

    def _pending(self) -> bool:
        """Whether unsent rows are left (by us or by the relay that holds the lock)."""
        try:
            with self.db.connect() as conn:
                return bool(messages.unsent(conn, 1))
        except SQLAlchemyError:
            return True  # step() backs off on the same error

    def drain_once(self) -> None:
        """The final flush at shutdown: everything the stopped loops left (every round,
        not one batch), while it goes well; with `stop` set, drain() ends at the first
        round that sends nothing."""
        try:
            self.drain()
        except Exception as exc:
            log.warning("final outbox flush failed; rows stay unsent", error=str(exc))

    def step(self) -> int:
        if self.unmarked:
            return self._mark(self.unmarked)
        if not self.leadership.held():
            self.stop.wait(self.leadership.standby_wait_s)
            return 0
        try:
            with self.db.connect() as conn:
                rows = messages.unsent(conn, self.batch)
        except SQLAlchemyError as exc:
            delay = self.backoff.wait(self.stop)
            log.error(
                "database unavailable for the outbox",
                error=str(exc).splitlines()[0],
                retry_in_s=round(delay, 1),
            )
            return 0
        if not rows:
            return 0
        producer = self._producer()
        if producer is None:
            return 0
        acked = self._publish(producer, rows)
        return self._mark(rows[:acked]) if acked else 0

    def _mark(self, rows: Sequence[OutboxRow]) -> int:
        """Mark published rows sent, as the leader; on failure keep them to retry the marking."""
        try:
            with self.db.begin() as conn:
                self.leadership.confirm(conn)
                messages.mark_sent(conn, [r.seq for r in rows], self.clock.now())
        except LostLease:
            log.warning(
                "outbox relay lost its lease while publishing; the new leader sends these "
                "rows again with the same ids",
                rows=len(rows),
            )
            self.unmarked = []
            return 0
        except SQLAlchemyError as exc:
            self.unmarked = list(rows)
            delay = self.backoff.wait(self.stop)
            log.error(
                "could not mark published rows sent; retrying the marking, not the publishing",
                error=str(exc).splitlines()[0],
                rows=len(rows),
                retry_in_s=round(delay, 1),
            )
            return 0
        self.unmarked = []
        omitted = sum(1 for r in rows if r.seq in self.without_value)
        for row in rows:
            self.refused.discard(row.seq)
            self.without_value.discard(row.seq)
        self.published += len(rows)
        _log_published(rows, self.topics)
        if self.metrics is not None:
            self.metrics.published.inc(len(rows))
            if omitted:
                self.metrics.dlq_value_omitted.inc(omitted)
        self.backoff.reset()
        return len(rows)

    def _publish(self, producer: KafkaProducer, rows: list[OutboxRow]) -> int:
        futures: list[Any] = []
        spans: list[Span | None] = []
        try:
            for row in rows:
                topic, key, value, headers = self._record(row)
                if row.stream != "dlq":
                    spans.append(self.tracing.publishing(row.payload, topic, headers))
                futures.append(producer.send(topic, key=key, value=value, headers=headers))
        except KafkaError as exc:
            # Rows before this one are in flight: flush them so the acked prefix is
            # marked, instead of re-sending it every round.
            log.warning("publishing failed", error=repr(exc))
            if isinstance(exc, _TOO_LARGE):
                futures.append(_Refused(exc))
        try:
            producer.flush(timeout=FLUSH_TIMEOUT_S)
        except KafkaError as exc:
            log.warning("publishing failed", error=repr(exc))
        if self.tracing.enabled:
            # futures[i] is rows[i]'s; a send that raised leaves the rest without one
            sent = zip(rows, futures, strict=False)
            self.tracing.published(spans, [f for r, f in sent if r.stream != "dlq"])
        acked = 0
        for future in futures:
            if not future.is_done or future.failed():
                break
            acked += 1
        if acked < len(rows):
            stuck = futures[acked] if acked < len(futures) else None
            if (
                stuck is not None
                and stuck.is_done
                and self._refused_for_size(rows[acked], stuck.exception)
            ):
                return acked
            failure = next((f.exception for f in futures if f.is_done and f.failed()), None)
            self._failed(failure)
        else:
            self.failed_rounds = 0
        return acked

    def _refused_for_size(self, row: OutboxRow, error: Any) -> bool:
        """A DLQ record the broker (or the producer) refuses for its size goes out without
        its value on the next round; any other row or error is a real failure."""
        if row.stream != "dlq" or not isinstance(error, _TOO_LARGE) or row.seq in self.refused:
            return False
        log.warning(
            "DLQ record refused for its size; sending it without its value",
            seq=row.seq,
            error=repr(error),
        )
        self.refused.add(row.seq)
        return True

    def _failed(self, error: Any) -> None:
        self.failed_rounds += 1
        delay = self.backoff.next_delay()
        log.warning(
            "broker did not acknowledge; retrying",
            error=repr(error),
            failed_rounds=self.failed_rounds,
            retry_in_s=round(delay, 1),
        )
        if self.failed_rounds >= RECREATE_AFTER_FAILURES or _needs_new_producer(error):
            # An idempotent producer whose id the broker forgot (restart, expiry) fails
            # for good: UnknownProducerIdError, InitProducerId errors. A new one recovers.
            log.warning("recreating the Kafka producer")
            self.close_producer()
        self.stop.wait(delay)

    def _producer(self) -> KafkaProducer | None:
        if self.producer is None:
            try:
                self.producer = self.producer_factory()
                self.failed_rounds = 0
            except KafkaError as exc:
                delay = self.backoff.wait(self.stop)
                log.warning(
                    "kafka unreachable, retrying", error=repr(exc), retry_in_s=round(delay, 1)
                )
                return None
        return self.producer

    def _record(
        self, row: OutboxRow
    ) -> tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]:
        payload = row.payload
        if row.stream == "dlq":
            origin = RecordOrigin.from_json(payload["origin"])
            key, value, headers = dlq_record(
                origin, payload["error_class"], payload["error_message"]
            )
            if row.seq in self.refused or _size(key, value, headers) > self.max_record_bytes:
                # Over what the producer may send, or refused by the broker (a DLQ topic
                # created smaller than `gocluster run --create-topics` makes it): the row
                # would block the outbox for good. Keep key and headers, drop the value,
                # and say so.
                omitted = str(len(value or b"")).encode()
                headers = [*headers, ("error.value_omitted_bytes", omitted)]
                value = None
                self.without_value.add(row.seq)
            return self.topics["dlq"], key, value, headers
        if "dataschema" not in payload:  # stored by a version before dataschema: add it now
            payload = {**payload, "dataschema": dataschema(self.schema_base, payload["type"])}
        key = (row.cluster_id or "").encode("utf-8")
        return self.topics[row.stream], key, structured_value(payload), output_headers(payload)

    def close(self) -> None:
        """Close the producer and hand the lease over (used at shutdown and by tick)."""
        self.close_producer()
        self.leadership.release()

    def close_producer(self) -> None:
        if self.producer is not None:
            with contextlib.suppress(KafkaError):
                self.producer.close(timeout=5)
            self.producer = None


def _log_published(rows: Sequence[OutboxRow], topics: dict[str, str]) -> None:
    """One line per published batch: how many rows, to which topics, which seqs."""
    per_topic: dict[str, int] = {}
    for row in rows:
        per_topic[topics[row.stream]] = per_topic.get(topics[row.stream], 0) + 1
    log.info(
        "outbox batch published",
        rows=len(rows),
        topics=per_topic,
        seq_from=rows[0].seq,
        seq_to=rows[-1].seq,
    )


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)


def _needs_new_producer(error: Any) -> bool:
    name = type(error).__name__ if error is not None else ""
    return name in {
        "UnknownProducerIdError",
        "OutOfOrderSequenceNumberError",
        "InvalidProducerEpochError",
        "ProducerFencedError",
        "InvalidPidMappingError",
    }


class _Refused:
    """A send the producer refused before it was queued, shaped like its futures."""

    is_done = True

    def __init__(self, exception: KafkaError) -> None:
        self.exception = exception

    def failed(self) -> bool:
        return True
