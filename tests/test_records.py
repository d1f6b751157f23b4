"""Kafka record <-> CloudEvent: both binding modes, the DLQ record, and robustness to any bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as sdk_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord

from consumers.records import (
    STRUCTURED_HEADERS,
    DecodeFailure,
    RecordOrigin,
    dlq_record,
    record_to_event_dict,
    structured_value,
)

LIMIT = 1_048_576
EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "/portal",
    "type": "gocluster.application.submitted",
    "subject": "cl-1",
    "time": "2024-03-01T10:00:00Z",
    "datacontenttype": "application/json",
    "data": {"cluster_id": "cl-1", "cluster_name": "Kühlkette Süd", "federal_state": "DE-BY"},
}


def origin(
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None = None,
    key: bytes | None = b"cl-1",
) -> RecordOrigin:
    return RecordOrigin("gocluster.applications", 2, 41, key, value, tuple(headers or []))


def binary_origin(event: dict[str, Any]) -> RecordOrigin:
    headers = [
        (f"ce_{k}", str(v).encode())
        for k, v in event.items()
        if k not in ("data", "datacontenttype")
    ]
    headers.append(("content-type", event["datacontenttype"].encode()))
    return origin(json.dumps(event["data"]).encode(), headers)


def test_structured_and_binary_modes_decode_to_the_same_dict() -> None:
    structured = origin(structured_value(EVENT), STRUCTURED_HEADERS)
    assert record_to_event_dict(structured, LIMIT) == EVENT
    assert record_to_event_dict(binary_origin(EVENT), LIMIT) == EVENT


def test_records_written_by_the_cloudevents_sdk_decode_to_the_event() -> None:
    attributes = {k: v for k, v in EVENT.items() if k != "data"}
    attributes["time"] = datetime(2024, 3, 1, 10, tzinfo=UTC)
    event = CloudEvent(attributes, EVENT["data"])
    for message in (
        sdk_kafka.to_binary(event, JSONFormat()),
        sdk_kafka.to_structured(event, JSONFormat()),
    ):
        record = origin(message.value, list(message.headers.items()))
        assert record_to_event_dict(record, LIMIT) == EVENT


def test_structured_json_without_content_type_header_is_accepted_when_it_has_specversion() -> None:
    assert record_to_event_dict(origin(json.dumps(EVENT).encode()), LIMIT) == EVENT


def test_the_header_prefixes_are_case_insensitive_and_foreign_headers_are_ignored() -> None:
    """`CE_` and `Content-Type` as well; the attribute name itself is taken as written
    and checked with the envelope, as in structured mode (tests/test_envelope.py)."""
    record = origin(
        b'{"a": 1}',
        [
            ("CE_specversion", b"1.0"),
            ("ce_id", b"x"),
            ("Content-Type", b"application/json; charset=utf-8"),
            ("traceparent", b"00-abc-def-01"),
            ("opaque", b"\xff\xfe binary"),
        ],
    )
    assert record_to_event_dict(record, LIMIT) == {
        "specversion": "1.0",
        "id": "x",
        "datacontenttype": "application/json; charset=utf-8",
        "data": {"a": 1},
    }


def test_binary_mode_without_value_has_no_data_and_without_content_type_assumes_json() -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"x")]
    assert record_to_event_dict(origin(None, headers), LIMIT) == {"specversion": "1.0", "id": "x"}
    assert record_to_event_dict(origin(b"[1]", headers), LIMIT)["data"] == [1]


def test_a_key_that_differs_from_the_subject_is_left_to_the_caller() -> None:
    record = origin(structured_value(EVENT), STRUCTURED_HEADERS, key=b"another-cluster")
    assert record_to_event_dict(record, LIMIT)["subject"] == "cl-1"


UNDECODABLE: list[tuple[bytes | None, list[tuple[str, bytes]], str]] = [
    (b"x" * 101, STRUCTURED_HEADERS, "over the 100 limit"),
    (b'{"id": "\xff"}', STRUCTURED_HEADERS, "not UTF-8"),
    (b"{not json", STRUCTURED_HEADERS, "not JSON"),
    (b'["specversion"]', STRUCTURED_HEADERS, "JSON list, not an object"),
    (b"", STRUCTURED_HEADERS, "empty record value"),
    (None, STRUCTURED_HEADERS, "empty record value"),
    (b"{}", [("content-type", b"application/cloudevents+avro")], "unsupported"),
    (b'{"a": NaN}', STRUCTURED_HEADERS, "not usable JSON"),
    (b'{"a": 1e999}', STRUCTURED_HEADERS, "not usable JSON"),
    (b'{"a": "\\ud800"}', STRUCTURED_HEADERS, "unpaired UTF-16 surrogate"),
    (b"[" * 100_000 + b"]" * 100_000, [], "nested too deeply"),
    (b"hello", [("ce_id", b"x"), ("content-type", b"text/plain")], "only JSON"),
    (b"{}", [("ce_id", b"x"), ("ce_id", b"y")], "conflicting"),
    (b"{}", [("ce_id", b"\xc3")], "not valid UTF-8"),
    (b"{}", [("ce_data", b"x")], "not a CloudEvents attribute"),
    (b"{}", [("ce_datacontenttype", b"application/json")], "not a CloudEvents attribute"),
    (b'{"id": "x"}', [], "no specversion"),
    (b"<xml/>", [("content-type", b"application/xml")], "not a CloudEvent"),
]


@pytest.mark.parametrize(
    ("value", "headers", "reason"), UNDECODABLE, ids=[c[2] for c in UNDECODABLE]
)
def test_undecodable_records_raise_decode_failure_with_a_reason(
    value: bytes | None, headers: list[tuple[str, bytes]], reason: str
) -> None:
    limit = 100 if reason.startswith("over") else LIMIT
    with pytest.raises(DecodeFailure) as failure:
        record_to_event_dict(origin(value, headers), limit)
    assert reason in failure.value.message
    assert failure.value.error_class == "decode"


HEADER_NAMES = st.sampled_from(
    ["content-type", "Content-Type", "ce_specversion", "ce_id", "CE_TYPE", "ce_", "ce_data", "x"]
) | st.text(max_size=12)
HEADER_VALUES = st.sampled_from(
    [b"application/cloudevents+json", b"application/json", b"text/plain", b"1.0", b"\xff"]
) | st.binary(max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
VALUES = (
    st.none()
    | st.binary(max_size=300)
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(st.sampled_from(["specversion", "id", "data"]), JSON_VALUES).map(
        lambda v: json.dumps(v).encode()
    )
)


@settings(max_examples=600, deadline=None)
@given(
    value=VALUES,
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5),
    max_bytes=st.integers(min_value=1, max_value=400),
)
def test_any_bytes_either_decode_to_a_dict_or_raise_decode_failure(
    value: bytes | None, headers: list[tuple[str, bytes]], max_bytes: int
) -> None:
    event: dict[str, Any] | None = None
    try:
        event = record_to_event_dict(origin(value, headers), max_bytes)
    except DecodeFailure as failure:
        message = failure.message
    if event is None:
        assert message
    else:
        # Whatever decodes can be stored and re-emitted as UTF-8 JSON.
        assert json.dumps(event, ensure_ascii=False).encode("utf-8")


def test_dlq_record_keeps_the_original_record_and_adds_the_five_error_headers() -> None:
    headers = [("ce_id", b"x"), ("trace", b"\x00\xff"), ("trace", b"dup")]
    record = origin(b"\xff not json", headers, key=b"cl-9")
    key, value, out_headers = dlq_record(record, "decode", "record value is not UTF-8")
    assert (key, value) == (b"cl-9", b"\xff not json")
    assert out_headers[:3] == headers
    assert out_headers[3:] == [
        ("error.class", b"decode"),
        ("error.message", b"record value is not UTF-8"),
        ("original.topic", b"gocluster.applications"),
        ("original.partition", b"2"),
        ("original.offset", b"41"),
    ]


def test_dlq_error_message_is_truncated_and_never_fails_to_encode() -> None:
    _, _, headers = dlq_record(origin(None), "schema", "\ud800" + "x" * 5000)
    message = dict(headers)["error.message"].decode("utf-8")
    assert len(message) == 1000
    assert message.endswith("…")


def test_dlq_record_rejects_an_error_class_outside_the_contract() -> None:
    with pytest.raises(ValueError, match="unknown DLQ error class"):
        dlq_record(origin(None), "oops", "x")


@given(
    key=st.none() | st.binary(max_size=20),
    value=st.none() | st.binary(max_size=50),
    headers=st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=10)), max_size=4),
    offset=st.integers(min_value=0, max_value=2**62),
)
def test_record_origin_survives_a_json_column_unchanged(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], offset: int
) -> None:
    record = RecordOrigin("t", 5, offset, key, value, tuple(headers))
    stored = json.loads(json.dumps(record.to_json()))
    assert RecordOrigin.from_json(stored) == record


@pytest.mark.parametrize(
    "stored",
    [{}, {"topic": "t", "partition": 0, "offset": 0, "key": "!!", "value": None, "headers": []}],
)
def test_record_origin_from_json_rejects_what_it_did_not_write(stored: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not a stored RecordOrigin"):
        RecordOrigin.from_json(stored)


def test_record_origin_from_a_kafka_python_consumer_record() -> None:
    record = ConsumerRecord(
        "t", 1, 0, 7, 0, 0, b"k", b"v", [("a", b"1"), ("b", None)], None, 1, 1, 2
    )
    assert RecordOrigin.from_consumer_record(record) == RecordOrigin(
        "t", 1, 7, b"k", b"v", (("a", b"1"), ("b", b""))
    )


def test_structured_value_is_compact_sorted_utf8_json() -> None:
    assert structured_value({"b": "ü", "a": 1}) == '{"a":1,"b":"ü"}'.encode()
    assert STRUCTURED_HEADERS == [("content-type", b"application/cloudevents+json")]
    with pytest.raises(ValueError, match="JSON compliant"):
        structured_value({"a": float("nan")})
