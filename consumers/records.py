"""Kafka record <-> CloudEvent, per the CloudEvents 1.0 Kafka protocol binding.

Why not the SDK's decoder: cloudevents 2.2 ships two Kafka bindings and both
change the event on the way in. ``cloudevents.core.bindings.kafka`` invents a
random ``id`` and the current ``time`` when they are missing (breaking
deduplication on (source, id) and deterministic replay), re-renders ``time``
through ``datetime``, returns undecodable JSON data as a plain string, and
adds the record key as a ``partitionkey`` attribute. ``cloudevents.v1.kafka``
copies every Kafka header into the attributes, overwriting ``datacontenttype``
with the structured-mode header. The rules themselves are small, so they are
implemented here and the SDK's *encoders* serve as the interoperability oracle
in the tests. Speed is not the reason: the SDK decodes ~60-160k records/s.

The decoder only turns bytes into the structured-form dict; whether the dict
is a valid contract event (required attributes, data fields) is the schema
layer's question, so a record that fails here goes to the DLQ as ``decode``
and one that fails there as ``schema``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "DLQ_ERROR_CLASSES",
    "STRUCTURED_CONTENT_TYPE",
    "STRUCTURED_HEADERS",
    "DecodeFailure",
    "RecordOrigin",
    "dlq_record",
    "output_headers",
    "record_to_event_dict",
    "structured_value",
]

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
STRUCTURED_HEADERS: list[tuple[str, bytes]] = [
    ("content-type", STRUCTURED_CONTENT_TYPE.encode("ascii")),
]
DLQ_ERROR_CLASSES = frozenset(
    {"decode", "schema", "unknown_type", "conflict", "invalid_transition", "expired_park"}
)
MAX_ERROR_MESSAGE_CHARS = 1000

_CE_PREFIX = "ce_"
# A \uD800-\uDFFF escape may be a lone surrogate, which Python accepts but
# UTF-8 cannot encode: it would crash the database write or the DLQ later.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class DecodeFailure(Exception):
    """The record cannot be read as a CloudEvent; it belongs in the DLQ with class ``decode``."""

    error_class = "decode"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _ConsumerRecordLike(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class RecordOrigin:
    """A consumed record exactly as it was, so it can be parked, stored and sent to the DLQ."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_consumer_record(cls, record: _ConsumerRecordLike) -> RecordOrigin:
        """From a kafka-python ``ConsumerRecord``; a null header value becomes ``b""``."""
        headers = tuple((name, value or b"") for name, value in (record.headers or ()))
        return cls(record.topic, record.partition, record.offset, record.key, record.value, headers)

    def to_json(self) -> dict[str, Any]:
        """Lossless JSON form (bytes as base64) for a database JSON column."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": _b64(self.key),
            "value": _b64(self.value),
            "headers": [[name, _b64(value)] for name, value in self.headers],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecordOrigin:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on anything it did not write."""
        try:
            headers = tuple((str(name), _unb64_required(value)) for name, value in data["headers"])
            return cls(
                topic=str(data["topic"]),
                partition=int(data["partition"]),
                offset=int(data["offset"]),
                key=_unb64(data["key"]),
                value=_unb64(data["value"]),
                headers=headers,
            )
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ValueError(f"not a stored RecordOrigin: {exc!r}") from exc


def record_to_event_dict(origin: RecordOrigin, max_bytes: int) -> dict[str, Any]:
    """The event in structured form (attributes plus ``data``), whichever mode it came in.

    Raises only :class:`DecodeFailure`, whatever the bytes.
    """
    value = origin.value
    size = _record_size(origin)
    if size > max_bytes:
        # Key, value and headers all count: binary mode carries attribute text in
        # ce_ headers.
        raise DecodeFailure(
            f"record is {size} bytes (key, value and headers), over the {max_bytes} limit"
        )
    content_type, attributes = _read_headers(origin.headers)
    media_type = _media_type(content_type) if content_type is not None else None

    if media_type is not None and media_type.startswith("application/cloudevents"):
        if media_type != STRUCTURED_CONTENT_TYPE:
            raise DecodeFailure(f"unsupported CloudEvents format {media_type[:100]!r}; only JSON")
        return _structured(value)
    if attributes:
        return _binary(attributes, content_type, media_type, value)
    if media_type is not None and not _is_json(media_type):
        raise DecodeFailure(f"not a CloudEvent: content-type {media_type[:100]!r}, no ce_ headers")
    # Some producers send structured JSON without the content-type header.
    event = _structured(value)
    if "specversion" not in event:
        raise DecodeFailure("not a CloudEvent: no ce_ headers and no specversion in the value")
    return event


def dlq_record(
    origin: RecordOrigin, error_class: str, error_message: str
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, headers) for the DLQ: the original record plus the five error headers."""
    if error_class not in DLQ_ERROR_CLASSES:
        raise ValueError(f"unknown DLQ error class {error_class!r}")
    if len(error_message) > MAX_ERROR_MESSAGE_CHARS:
        error_message = error_message[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
    extra = [
        ("error.class", error_class),
        ("error.message", error_message),
        ("original.topic", origin.topic),
        ("original.partition", str(origin.partition)),
        ("original.offset", str(origin.offset)),
    ]
    # "replace": a message quoting undecodable input must not make the DLQ write fail.
    headers = list(origin.headers) + [(k, v.encode("utf-8", "replace")) for k, v in extra]
    return origin.key, origin.value, headers


ROUTING_ATTRIBUTES = ("id", "type", "source", "subject")


def output_headers(event: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """Headers of a structured-mode output record: the content type, and `ce_id`,
    `ce_type`, `ce_source`, `ce_subject` repeating those attributes, so a consumer can
    route and filter without parsing the value (the value stays the whole event)."""
    return [
        *STRUCTURED_HEADERS,
        *((f"{_CE_PREFIX}{name}", str(event[name]).encode("utf-8")) for name in ROUTING_ATTRIBUTES),
    ]


def structured_value(event: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON for a structured-mode record.

    Keys are sorted so the bytes do not depend on how the event was built or
    stored (PostgreSQL JSONB reorders keys; SQLite does not): a re-published
    outbox row is then byte-identical to the first publication.
    """
    return json.dumps(
        event, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    ).encode("utf-8")


# -- decoding helpers ---------------------------------------------------------


def _record_size(origin: RecordOrigin) -> int:
    """Bytes of key, value and header names and values, as GOCLUSTER_MAX_RECORD_BYTES counts."""
    headers = sum(
        len(name.encode("utf-8", "surrogatepass")) + len(value) for name, value in origin.headers
    )
    return len(origin.key or b"") + len(origin.value or b"") + headers


def _read_headers(headers: tuple[tuple[str, bytes], ...]) -> tuple[str | None, dict[str, str]]:
    """The content-type and the ce_ attributes; other headers (tracing etc.) are not ours."""
    content_type: str | None = None
    attributes: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.lower()
        if name == "content-type":
            text = _header_text(raw_name, raw_value)
            if content_type is not None and text != content_type:
                raise DecodeFailure("conflicting content-type headers")
            content_type = text
        elif name.startswith(_CE_PREFIX):
            # The name is checked with the rest of the envelope (schemas.validate), the
            # same way as in structured mode; what is left here is the binding's own rule:
            # datacontenttype travels as content-type, and data is not an attribute.
            attribute = raw_name[len(_CE_PREFIX) :]
            if attribute.lower() in {"data", "datacontenttype"}:
                raise DecodeFailure(f"header {raw_name[:100]!r} is not a CloudEvents attribute")
            text = _header_text(raw_name, raw_value)
            if attributes.setdefault(attribute, text) != text:
                raise DecodeFailure(f"conflicting values for header {raw_name[:100]!r}")
    return content_type, attributes


def _header_text(name: str, value: bytes | None) -> str:
    try:
        return (value or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeFailure(f"header {name[:100]!r} is not valid UTF-8") from None


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type in {"application/json", "text/json"} or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _structured(value: bytes | None) -> dict[str, Any]:
    if not value:
        raise DecodeFailure("empty record value where a structured CloudEvent was expected")
    event = _parse_json(value, "record value")
    if not isinstance(event, dict):
        raise DecodeFailure(f"record value is a JSON {type(event).__name__}, not an object")
    return event


def _binary(
    attributes: dict[str, str],
    content_type: str | None,
    media_type: str | None,
    value: bytes | None,
) -> dict[str, Any]:
    event: dict[str, Any] = dict(attributes)
    if content_type is not None:
        if media_type is None or not _is_json(media_type):
            raise DecodeFailure(f"binary-mode data of type {content_type[:100]!r}; only JSON")
        event["datacontenttype"] = content_type
    if value:
        event["data"] = _parse_json(value, "binary-mode data")
    return event


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:20]} is out of range")
    return number


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object with two equal keys is refused, as `gocluster replay`
    (schemas.validate.parse_json) refuses the same bytes: which value is meant?"""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:40]!r} in a JSON object")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    parse_float=_finite_float, parse_constant=_reject_constant, object_pairs_hook=_unique_keys
)


def _parse_json(raw: bytes, what: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeFailure(f"{what} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        parsed = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise DecodeFailure(f"{what} is not JSON: {exc.msg} at char {exc.pos}") from None
    except ValueError as exc:  # NaN, 1e999, integers over Python's digit limit
        raise DecodeFailure(f"{what} is not usable JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise DecodeFailure(f"{what} is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeFailure(f"{what} contains an unpaired UTF-16 surrogate") from None
        except RecursionError:
            raise DecodeFailure(f"{what} is nested too deeply") from None
    return parsed


# -- base64 for RecordOrigin.to_json ------------------------------------------


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def _unb64_required(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError("header value must be a base64 string")
    return base64.b64decode(text, validate=True)
