"""One envelope validation for both Kafka content modes and `replay` (CONTRACT.md section 1):
attribute names `[a-z0-9]`, `source` a URI-reference, extension values of CloudEvents types."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from consumers.event_consumer import decode
from consumers.records import STRUCTURED_CONTENT_TYPE
from schemas.errors import ErrorClass, Rejected
from schemas.validate import parse_json
from tests import builders as b

EVENT = b.withdrawn(date(2025, 3, 3), cluster_id="cluster-a")


def record(value: bytes | None, headers: list[tuple[str, bytes]]) -> ConsumerRecord:
    return ConsumerRecord(
        "gocluster.applications", 0, None, 7, 0, 0, b"cluster-a", value, headers, None, -1, -1, -1
    )


def structured(event: dict[str, Any]) -> ConsumerRecord:
    value = json.dumps(event).encode()
    return record(value, [("content-type", STRUCTURED_CONTENT_TYPE.encode())])


def binary(event: dict[str, Any]) -> ConsumerRecord:
    headers = [
        ("content-type" if name == "datacontenttype" else f"ce_{name}", str(value).encode())
        for name, value in event.items()
        if name != "data"
    ]
    return record(json.dumps(event["data"]).encode(), headers)


def verdict(item: Any) -> tuple[ErrorClass, str] | None:
    return None if item.rejected is None else (item.rejected.error_class, item.rejected.message)


def replayed(event: dict[str, Any]) -> tuple[ErrorClass, str] | None:
    try:
        parse_json(json.dumps(event))
    except Rejected as exc:
        return exc.error_class, exc.message
    return None


INVALID_IN_BOTH_MODES = [
    pytest.param({"Traceparent": "00-abc-01"}, "Traceparent", id="upper-case name"),
    pytest.param({"my-ext": "x"}, "my-ext", id="hyphen in name"),
    pytest.param({"trace_id": "x"}, "trace_id", id="underscore in name"),
    pytest.param({"source": "/go cluster/portal"}, "source", id="space in source"),
    pytest.param({"source": "/portal\x1fx"}, "source", id="control character in source"),
    pytest.param({"source": "/portal/%zz"}, "source", id="bad percent-encoding in source"),
    pytest.param({"source": "/a#b#c"}, "source", id="two fragments in source"),
]


@pytest.mark.parametrize(("change", "named"), INVALID_IN_BOTH_MODES)
def test_structured_binary_and_replay_refuse_the_same_envelope_the_same_way(
    change: dict[str, str], named: str
) -> None:
    event = {**EVENT, **change}

    in_structured = verdict(decode(structured(event), 1_048_576))
    in_binary = verdict(decode(binary(event), 1_048_576))

    assert in_structured is not None
    assert in_structured[0] is ErrorClass.SCHEMA, in_structured
    assert in_structured == in_binary == replayed(event)
    assert named in in_structured[1]


@pytest.mark.parametrize(
    "value",
    [{"a": 1}, [1, 2], 1.5, 2**31, -(2**31) - 1],
    ids=["object", "array", "fraction", "int over 32 bits", "int under 32 bits"],
)
def test_an_extension_value_outside_the_cloudevents_types_is_refused(value: Any) -> None:
    event = {**EVENT, "portalref": value}

    found = verdict(decode(structured(event), 1_048_576))

    assert found is not None
    assert found[0] is ErrorClass.SCHEMA, found
    assert found[1].startswith("portalref: ")
    assert found == replayed(event)


@pytest.mark.parametrize(
    "value",
    ["text", True, 0, 2**31 - 1, -(2**31), None],
    ids=["string", "boolean", "zero", "int max", "int min", "null (absent)"],
)
def test_extension_values_of_cloudevents_types_are_accepted_and_kept(value: Any) -> None:
    event = {**EVENT, "portalref": value}
    item = decode(structured(event), 1_048_576)
    assert item.event is not None, item.rejected
    assert item.event.raw["portalref"] == value


@pytest.mark.parametrize(
    "source",
    [
        "/go-cluster/portal",
        "https://portal.example/go-cluster?x=1#top",
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "mailto:ops@example.org",
        "//portal.example:8080/a%20b",
        "http://[::1]/events",
        "portal",
    ],
)
def test_sources_that_are_uri_references_are_accepted_in_both_modes(source: str) -> None:
    event = {**EVENT, "source": source}
    for mode in (structured, binary):
        item = decode(mode(event), 1_048_576)
        assert item.event is not None, (mode.__name__, item.rejected)
        assert item.event.source == source
