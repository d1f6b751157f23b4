"""Why an input was refused, in words a producer can act on.

Every refusal becomes a DLQ header (`error.class`, `error.message`) or a line of
`gocluster replay --dlq`, read by the people who own the producing system. So
the message names the field by its path in the event, says what was expected,
and shows (a short rendering of) what was received; it never shows a regex or
a Python type name when a sentence will do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from fastjsonschema import JsonSchemaValueException

_MAX_SHOWN = 80  # characters of a received value shown in a message
_MAX_MESSAGE = 600  # a Kafka header, not a dump of the payload


class ErrorClass(StrEnum):
    """The DLQ `error.class` values of CONTRACT.md section 5."""

    DECODE = "decode"
    SCHEMA = "schema"
    UNKNOWN_TYPE = "unknown_type"
    CONFLICT = "conflict"
    INVALID_TRANSITION = "invalid_transition"
    EXPIRED_PARK = "expired_park"


class Rejected(Exception):
    """An event that cannot be applied, with its DLQ class and a message for a person."""

    def __init__(self, error_class: ErrorClass, message: str) -> None:
        message = message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."
        super().__init__(message)
        self.error_class = error_class
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[Rejected], tuple[ErrorClass, str]]:
        # Exceptions pickle as cls(*args); ours has two arguments, not one.
        return (Rejected, (self.error_class, self.message))


def show(value: Any) -> str:
    """Render a received value as JSON text, short, ASCII, and never failing."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, str) and len(value) > _MAX_SHOWN:
        value = value[:_MAX_SHOWN] + "..."
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        # Not JSON (a Python object handed to parse_event) or an int beyond
        # the int-to-str digit limit.
        return f"a value of Python type {type(value).__name__}"
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def field_path(name: str | None) -> str:
    """fastjsonschema names the root `data`; our root is the event, so `data.data.x` is `data.x`."""
    if not name or name == "data":
        return "event"
    return name[5:] if name.startswith("data.") else name


_JSON_TYPE_WORDS = {
    "object": "a JSON object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _expected(definition: Mapping[str, Any], rule: str | None) -> str:
    """What the failed keyword asked for, as a phrase after 'must be' / 'must'."""
    rule_value = definition.get(rule) if rule else None
    match rule:
        case "type":
            types = rule_value if isinstance(rule_value, list) else [rule_value]
            return "must be " + " or ".join(_JSON_TYPE_WORDS.get(str(t), str(t)) for t in types)
        case "enum":
            return "must be one of " + ", ".join(_plain(v) for v in rule_value or ())
        case "const":
            return f"must be {json.dumps(rule_value)}"
        case "minLength":
            return f"must be at least {rule_value} characters long"
        case "maxLength":
            return f"must be at most {rule_value} characters long"
        case "minimum":
            return f"must be >= {rule_value}"
        case "maximum":
            return f"must be <= {rule_value}"
        case "exclusiveMinimum":
            return f"must be > {rule_value}"
        case "exclusiveMaximum":
            return f"must be < {rule_value}"
        case "minItems":
            return f"must have at least {rule_value} items"
        case "maxItems":
            return f"must have at most {rule_value} items"
        case "minProperties":
            return f"must have at least {rule_value} entries"
        case "maxProperties":
            return f"must have at most {rule_value} entries"
        case "pattern":
            return f"must match the pattern {rule_value}"
        case _:
            return f"violates '{rule}'"


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def describe(exc: JsonSchemaValueException) -> str:
    """Turn fastjsonschema's first violation into `path: what was expected, got what`."""
    path = field_path(exc.name)
    definition = exc.definition if isinstance(exc.definition, Mapping) else {}
    value = exc.value
    if exc.rule == "required" and isinstance(value, Mapping):
        missing = [key for key in definition.get("required", ()) if key not in value]
        noun = "attribute" if path == "event" else "field"
        return f"{path}: missing required {noun}(s): {', '.join(missing)}"
    if exc.rule == "additionalProperties" and isinstance(value, Mapping):
        known = definition.get("properties", {})
        extra = sorted(str(key) for key in value if key not in known)
        return f"{path}: unexpected field(s): {', '.join(extra)}"
    if exc.rule == "propertyNames":
        # fastjsonschema reports the object and the names rule; point at the keys.
        names = definition.get("propertyNames", {})
        custom = names.get("errorMessage") if isinstance(names, Mapping) else None
        pattern = names.get("pattern") if isinstance(names, Mapping) else None
        message = f"{path}: {custom or 'has an invalid key'}"
        if isinstance(pattern, str) and isinstance(value, Mapping):
            bad = [show(k) for k in value if isinstance(k, str) and not re.search(pattern, k)]
            if bad:
                message += f", got {', '.join(bad[:5])}"
        return message
    custom = definition.get("errorMessage")
    expected = custom if isinstance(custom, str) else _expected(definition, exc.rule)
    return f"{path}: {expected}, got {show(value)}"
