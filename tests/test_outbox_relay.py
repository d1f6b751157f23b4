"""The relay against an in-memory producer (a fake at the producer port only)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from consumers.outbox_relay import MAX_PUBLISH_BYTES, OutboxRelay
from consumers.records import RecordOrigin
from workflows.dates import FixedClock
from workflows.store import messages

TOPICS = {"labels": "l", "deadlines": "d", "membership": "m", "dlq": "q"}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class _Done:
    is_done: bool = True
    exception: Exception | None = None

    def failed(self) -> bool:
        return self.exception is not None


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = field(
        default_factory=list
    )

    def send(self, topic: str, *, key: Any, value: Any, headers: Any) -> _Done:
        self.sent.append((topic, key, value, headers))
        return _Done()

    def flush(self, timeout: float) -> None:
        return None

    def close(self, timeout: float) -> None:
        return None


def _dlq_row(value: bytes, offset: int) -> dict[str, Any]:
    origin = RecordOrigin("gocluster.applications", 0, offset, b"c-1", value, (("h", b"v"),))
    return {
        "event_id": None,
        "cluster_id": None,
        "stream": "dlq",
        "payload": {
            "origin": {"kind": "kafka", **origin.to_json()},
            "error_class": "decode",
            "error_message": "record value is not JSON",
        },
        "created_at": NOW,
        "sent_at": None,
    }


def _relay(db: Engine, producer: FakeProducer) -> OutboxRelay:
    return OutboxRelay(db, lambda: producer, TOPICS, FixedClock(NOW), threading.Event())  # type: ignore[arg-type,return-value]


def test_dlq_records_keep_the_original_bytes_and_add_error_headers(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        messages.enqueue(conn, [_dlq_row(b"{not json", 7)])
    producer = FakeProducer()

    assert _relay(db_engine, producer).drain() == 1

    topic, key, value, headers = producer.sent[0]
    assert (topic, key, value) == ("q", b"c-1", b"{not json")
    names = dict(headers)
    assert names["h"] == b"v"
    assert names["error.class"] == b"decode"
    assert names["original.offset"] == b"7"


def test_a_dlq_record_too_large_to_publish_keeps_its_headers_and_does_not_block_the_outbox(
    db_engine: Engine,
) -> None:
    huge = b"\xff" * (MAX_PUBLISH_BYTES - 100)  # under the input limit, over it with headers
    with db_engine.begin() as conn:
        messages.enqueue(conn, [_dlq_row(huge, 1), _dlq_row(b"small", 2)])
    producer = FakeProducer()

    assert _relay(db_engine, producer).drain() == 2

    first, second = producer.sent
    assert first[2] is None
    assert dict(first[3])["error.value_omitted_bytes"] == str(len(huge)).encode()
    assert dict(first[3])["original.offset"] == b"1"
    assert second[2] == b"small"
    with db_engine.connect() as conn:
        assert messages.unsent(conn, 10) == []
