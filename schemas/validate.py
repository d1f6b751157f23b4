"""Validate CloudEvents against the contract's JSON Schemas and decode them to typed messages.

This runs once per Kafka record: a record costs one `json.loads`, one pass over
the decoded value (is it storable JSON?), one call of the event type's compiled
schema (schemas.decode) and the dataclass construction.

Whatever the input, the only exception that leaves this module is `Rejected`:
a record that cannot be read must go to the DLQ with a class and a reason, it
must never crash the consumer into a redelivery loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

import fastjsonschema

from schemas.decode import (
    Validator,
    build_input_event,
    check_output_values,
    completed_by_kind,
    envelope_validator,
    load_schema,
    validators,
)
from schemas.errors import ErrorClass, Rejected, describe, show
from schemas.messages import EventType, InputEvent, OutputType
from schemas.uri import is_uri_reference

__all__ = [
    "MAX_DEPTH",
    "ErrorClass",
    "Rejected",
    "load_schema",
    "parse_event",
    "parse_json",
    "validate_output",
]

MAX_DEPTH = 64
"""Deepest nesting of objects/arrays accepted anywhere in an event (extensions included).

The contract needs 5 levels; the cap keeps a hostile record from reaching the
recursion limit later, in json.dumps of the stored raw event or in logging.
"""

_MAX_INT_BITS = 256  # beyond this an int is no interoperable JSON number (RFC 7493)


# --- decoding --------------------------------------------------------------------------------


class _NotJson(ValueError):
    """NaN/Infinity literals or a duplicate key: accepted by Python's json, not by RFC 8259."""


def _reject_constant(name: str) -> NoReturn:
    raise _NotJson(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _NotJson(f"duplicate key {show(key)} in an object: which value is meant?")
            seen.add(key)
    return obj


def parse_json(raw: bytes | str) -> InputEvent:
    """Structured-mode record value (`application/cloudevents+json`) -> validated InputEvent."""
    try:
        if isinstance(raw, bytes | bytearray | memoryview):
            text = bytes(raw).decode("utf-8")
        elif isinstance(raw, str):
            text = raw
        else:
            raise Rejected(ErrorClass.DECODE, f"expected bytes or str, got {type(raw).__name__}")
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except Rejected:
        raise
    except UnicodeDecodeError as exc:
        raise Rejected(
            ErrorClass.DECODE, f"value is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    except _NotJson as exc:
        raise Rejected(ErrorClass.DECODE, f"value is not valid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise Rejected(ErrorClass.DECODE, f"value is not valid JSON: {exc}") from None
    except RecursionError:
        raise Rejected(ErrorClass.DECODE, f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer literal beyond the int-to-str digit limit
        raise Rejected(ErrorClass.DECODE, f"value is not usable JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Rejected(
            ErrorClass.DECODE, f"value must be a JSON object (a CloudEvent), got {show(obj)}"
        )
    return parse_event(obj)


def parse_event(obj: Mapping[str, Any]) -> InputEvent:
    """A decoded structured CloudEvent -> validated InputEvent (raw = `obj` itself)."""
    try:
        return _parse_event(obj)
    except Rejected:
        raise
    except RecursionError:
        raise Rejected(ErrorClass.DECODE, f"nested deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:  # the contract: nothing but Rejected leaves
        raise Rejected(
            ErrorClass.SCHEMA, f"event could not be validated ({type(exc).__name__})"
        ) from exc


def _parse_event(obj: Mapping[str, Any]) -> InputEvent:
    event = _as_json_object(obj)
    validator = _lookup(event, validators(EventType), "input", OutputType)
    if event["type"] == EventType.INTERVIEW_COMPLETED:
        data = event.get("data")
        kind = data.get("kind") if isinstance(data, dict) else None
        if isinstance(kind, str):
            validator = completed_by_kind().get(kind, validator)
    _check_envelope(validator, event)
    data = event["data"]
    if data["cluster_id"] != event["subject"]:
        raise Rejected(
            ErrorClass.CONFLICT,
            f"data.cluster_id {show(data['cluster_id'])} differs from subject "
            f"{show(event['subject'])}; both must be the cluster id",
        )
    return build_input_event(event)


def validate_output(event: Mapping[str, Any]) -> None:
    """Check a structured output CloudEvent we are about to publish (or a test received)."""
    try:
        doc = _as_json_object(event)
        validator = _lookup(doc, validators(OutputType), "output", EventType)
        _check_envelope(validator, doc)
        data = doc["data"]
        if data["cluster_id"] != doc["subject"]:
            raise Rejected(ErrorClass.CONFLICT, "data.cluster_id differs from subject")
        check_output_values(doc)
    except Rejected:
        raise
    except Exception as exc:  # same promise as parse_event
        raise Rejected(
            ErrorClass.SCHEMA, f"event could not be validated ({type(exc).__name__})"
        ) from exc


def _lookup(
    event: dict[str, Any],
    by_type: dict[str, Validator],
    direction: str,
    other: type[EventType] | type[OutputType],
) -> Validator:
    """The compiled schema for the event's type, or the reason there is none."""
    event_type = event.get("type")
    validator = by_type.get(event_type) if isinstance(event_type, str) else None
    if validator is not None:
        return validator
    _check_envelope(envelope_validator(), event)  # a broken envelope is a schema error first
    known = ", ".join(by_type)
    if event_type in {member.value for member in other}:
        why = f"{show(event_type)} is not an {direction} event type"
    else:
        why = f"unknown event type {show(event_type)}"
    raise Rejected(ErrorClass.UNKNOWN_TYPE, f"{why}; known {direction} types: {known}")


def _check(validator: Validator, event: dict[str, Any]) -> None:
    try:
        validator(event)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise Rejected(ErrorClass.SCHEMA, describe(exc)) from None


def _check_envelope(validator: Validator, event: dict[str, Any]) -> None:
    """The event's schema (envelope included), then what a pattern cannot say well:
    `source` is a URI-reference. One check for structured mode, binary mode and replay."""
    _check(validator, event)
    if not is_uri_reference(event["source"]):
        raise Rejected(
            ErrorClass.SCHEMA,
            f"source: must be a URI-reference (RFC 3986: no spaces or control characters, "
            f"% followed by two hex digits, one #), got {show(event['source'])}",
        )


def _as_json_object(obj: Any) -> dict[str, Any]:
    """The event as a plain dict whose every value is plain, storable JSON.

    Python's json accepts more than JSON (lone surrogates, 4000-digit ints)
    and a caller of parse_event may hand us any Python objects; the raw event
    is stored and re-serialised later, so this is the place to refuse them.
    """
    if not isinstance(obj, Mapping):
        raise Rejected(ErrorClass.SCHEMA, f"event must be a JSON object, got {show(obj)}")
    event = obj if isinstance(obj, dict) else dict(obj)
    try:
        _scan(event, 1)
    except _Unfit as exc:
        path = ".".join(reversed(exc.path)) or "event"
        raise Rejected(exc.error_class, f"{path.replace('.[', '[')}: {exc}") from None
    return event


class _Unfit(Exception):
    """A value that is no storable JSON; `path` is filled in (leaf first) on the way up."""

    def __init__(self, error_class: ErrorClass, problem: str) -> None:
        super().__init__(problem)
        self.error_class = error_class
        self.path: list[str] = []
        self.key: str | None = None  # set while the offending key itself is the path leaf


def _scan(container: dict[Any, Any] | list[Any] | tuple[Any, ...], depth: int) -> None:
    """Recursive (bounded by MAX_DEPTH) and type-dispatched: this runs on every record."""
    if depth > MAX_DEPTH:
        raise _Unfit(ErrorClass.DECODE, f"nested deeper than {MAX_DEPTH} levels")
    is_object = type(container) is dict
    items = container.items() if type(container) is dict else enumerate(container)
    for key, value in items:
        try:
            if is_object and (
                type(key) is not str or "\x00" in key or not (key.isascii() or _encodable(key))
            ):
                _bad_key(key)
            kind = type(value)
            if kind is str:
                if "\x00" in value or not (value.isascii() or _encodable(value)):
                    raise _Unfit(ErrorClass.DECODE, _BAD_TEXT)
            elif kind is dict or kind is list or kind is tuple:
                _scan(value, depth + 1)
            elif kind is bool or value is None:
                pass
            elif isinstance(value, int):
                if value.bit_length() > _MAX_INT_BITS:
                    raise _Unfit(ErrorClass.DECODE, "integer too large to be a JSON number")
            elif isinstance(value, float):
                if not math.isfinite(value):
                    raise _Unfit(ErrorClass.DECODE, f"{value} is not a JSON number")
            elif isinstance(value, str):  # a str subclass such as a StrEnum member
                if "\x00" in value or not _encodable(value):
                    raise _Unfit(ErrorClass.DECODE, _BAD_TEXT)
            else:
                raise _Unfit(ErrorClass.SCHEMA, f"a Python {kind.__name__} is not a JSON value")
        except _Unfit as exc:
            # Keys on the path were checked before we went deeper, so they are
            # clean text; only the offending key itself is shown escaped.
            exc.path.append(f"[{key}]" if not is_object else exc.key or str(key))
            exc.key = None
            raise


def _bad_key(key: Any) -> NoReturn:
    if not isinstance(key, str):
        unfit = _Unfit(ErrorClass.SCHEMA, f"object key {show(key)} is not a string")
    else:
        unfit = _Unfit(ErrorClass.DECODE, f"this key: {_BAD_TEXT}")
    unfit.key = show(key)
    raise unfit


_BAD_TEXT = (
    "text contains a NUL character or a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff"
    " escape); neither can be stored or forwarded as UTF-8"
)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
