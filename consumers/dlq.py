"""`gocluster dlq list` and `gocluster dlq redrive`: read the DLQ topic, re-publish from it.

A DLQ record is the original record (key, value, headers) plus the error headers
(CONTRACT.md section 5). Redrive strips those and publishes the original to
`original.topic` with its original key, so it lands in the partition it came from,
after an upstream fix or a fix of the service. The inbox makes this safe: an event the
service already received (applied, parked or refused) is recognised by its
(`source`, `id`) and skipped as a duplicate, however often it is redriven; only what
never got that far (undecodable or invalid records, a record that made the handler
fail) can have its effect, once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from consumers.config import Settings
from consumers.records import DecodeFailure, RecordOrigin, record_to_event_dict

# Headers the DLQ adds to the original record; redrive removes them.
DLQ_HEADERS = frozenset(
    {
        "error.class",
        "error.message",
        "error.value_omitted_bytes",
        "original.topic",
        "original.partition",
        "original.offset",
    }
)


@dataclass(frozen=True)
class DlqRecord:
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def error_class(self) -> str:
        return self.header("error.class") or "?"

    @property
    def original(self) -> tuple[str | None, str | None, str | None]:
        return (
            self.header("original.topic"),
            self.header("original.partition"),
            self.header("original.offset"),
        )

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if k not in DLQ_HEADERS]

    def event_ids(self) -> tuple[str | None, str | None, str | None]:
        """(source, id, type) of the original event, where its bytes parse that far."""
        topic = self.original[0] or ""
        origin = RecordOrigin(topic, 0, 0, self.key, self.value, tuple(self.original_headers()))
        try:
            event = record_to_event_dict(origin, 1 << 62)
        except DecodeFailure:
            return None, None, None
        return tuple(  # type: ignore[return-value]
            v if isinstance(v, str) else None
            for v in (event.get("source"), event.get("id"), event.get("type"))
        )

    def redrivable(self) -> str | None:
        """None if it can be re-published as it was; else why not."""
        if self.header("error.value_omitted_bytes") is not None:
            return "its value was too large for the DLQ and is not there"
        if not self.original[0]:
            return "no original.topic header"
        return None

    def summary(self) -> dict[str, Any]:
        source, event_id, event_type = self.event_ids()
        topic, partition, offset = self.original
        return {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "time": self.timestamp.isoformat(),
            "error_class": self.error_class,
            "error_message": self.header("error.message"),
            "original": f"{topic}/{partition}@{offset}",
            "key": None if self.key is None else self.key.decode("utf-8", "replace"),
            "source": source,
            "event_id": event_id,
            "type": event_type,
        }


def read(
    settings: Settings,
    *,
    error_class: str | None = None,
    since: datetime | None = None,
    timeout_s: float = 30.0,
) -> Iterator[DlqRecord]:
    """Every DLQ record present now (up to the end offsets read at the start), filtered."""
    config = settings.admin_config() | {
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "bootstrap_timeout_ms": int(timeout_s * 1000),
    }
    consumer = KafkaConsumer(**config)
    try:
        partitions = consumer.partitions_for_topic(settings.topic_dlq)
        if not partitions:
            raise KafkaError(f"topic {settings.topic_dlq!r} does not exist")
        assigned = [TopicPartition(settings.topic_dlq, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        ends = consumer.end_offsets(assigned)
        if since is not None:
            found = consumer.offsets_for_times(
                {tp: int(since.timestamp() * 1000) for tp in assigned}
            )
            for tp in assigned:
                hit = found.get(tp)
                consumer.seek(tp, hit.offset if hit is not None else ends[tp])
        else:
            consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in assigned):
            if time.monotonic() > deadline:
                raise KafkaError(f"reading {settings.topic_dlq!r} took over {timeout_s:g} s")
            for batch in consumer.poll(timeout_ms=500).values():
                for r in batch:
                    if r.offset >= ends[TopicPartition(r.topic, r.partition)]:
                        continue
                    record = DlqRecord(
                        r.partition,
                        r.offset,
                        datetime.fromtimestamp(r.timestamp / 1000, UTC),
                        r.key,
                        r.value,
                        [(k, v or b"") for k, v in (r.headers or [])],
                    )
                    if error_class is None or record.error_class == error_class:
                        yield record
    finally:
        consumer.close()


def redrive(settings: Settings, records: list[DlqRecord], timeout_s: float = 60.0) -> int:
    """Publish each record's original to its original topic; returns how many were acked."""
    producer = KafkaProducer(**settings.producer_config())
    try:
        futures = [
            producer.send(
                r.original[0] or "", key=r.key, value=r.value, headers=r.original_headers()
            )
            for r in records
        ]
        producer.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)
        return len(futures)
    finally:
        producer.close(timeout=10)


def plan(
    records: list[DlqRecord], received: dict[tuple[str, str], str]
) -> Iterator[tuple[DlqRecord, str]]:
    """Each record with what a redrive does with it: skip it, or what the inbox will say."""
    for record in records:
        source, event_id, _ = record.event_ids()
        why_not = record.redrivable()
        seen = received.get((source or "", event_id or ""))
        if why_not is not None:
            yield record, f"skip: {why_not}"
        elif seen is not None:
            yield record, f"inbox has it ({seen}): will be a duplicate"
        else:
            yield record, "new to the inbox"


def inbox_outcomes(app: Any, records: list[DlqRecord]) -> dict[tuple[str, str], str]:
    """(source, id) -> the inbox outcome of those records' events the service received."""
    from sqlalchemy import and_, or_, select

    from workflows.store.tables import inbox

    keys = {(s, i) for s, i, _ in (r.event_ids() for r in records) if s and i}
    if not keys:
        return {}
    found: dict[tuple[str, str], str] = {}
    ordered = sorted(keys)
    with app.db.connect() as conn:
        for start in range(0, len(ordered), 200):
            chunk = ordered[start : start + 200]
            query = select(inbox.c.source, inbox.c.event_id, inbox.c.outcome).where(
                or_(*(and_(inbox.c.source == s, inbox.c.event_id == i) for s, i in chunk))
            )
            for source, event_id, outcome in conn.execute(query):
                found[(source, event_id)] = outcome
    return found
