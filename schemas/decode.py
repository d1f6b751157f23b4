"""The contract's schema files compiled once, and what a schema-valid event decodes to.

Each event type's schema (envelope and `data` inlined into one) is compiled by
fastjsonschema on first use and cached: compiling costs milliseconds, a call
microseconds. The builders run only after the compiled schema accepted the
event, so shapes and types are known there; what a JSON Schema pattern cannot
say they check: that a date matching YYYY-MM-DD is a real calendar date (no
2025-02-30), which the domain's calendar arithmetic relies on.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from datetime import date, datetime
from functools import cache
from importlib.resources import files
from typing import Any

import fastjsonschema

from schemas.errors import ErrorClass, Rejected, show
from schemas.messages import (
    ApplicationAssessed,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    BenchmarkingResult,
    Criteria,
    EventType,
    ExistingLabel,
    GoldAssessmentResult,
    GoldIndicator,
    ImprovementArea,
    InputEvent,
    InterviewCancelled,
    InterviewCompleted,
    InterviewKind,
    InterviewResult,
    InterviewScheduled,
    Level,
    OutputType,
    Payload,
    SilverAuditResult,
)

Data = Mapping[str, Any]
Validator = Callable[..., Any]

# --- the schema files, compiled -------------------------------------------------------------------


@cache
def _read(file_name: str) -> dict[str, Any]:
    """A schema file as stored (shared and cached: never mutated, _inline builds new dicts)."""
    text = (files("schemas") / "data" / file_name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _inline(node: Any, file_name: str) -> Any:
    """Replace every `$ref` ("file.json#/pointer" or "#/pointer") by the schema it points to.

    fastjsonschema would need a URI handler to find our sibling files, and it
    compiles each $ref into a separate function; inlined, each type compiles to
    one function and a failure reports the definition (with its errorMessage)
    that was violated. Draft-07 ignores siblings of $ref, and so do we.
    """
    if isinstance(node, list):
        return [_inline(item, file_name) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        target_file, _, pointer = ref.partition("#")
        target_file = target_file or file_name
        target: Any = _read(target_file)
        for part in pointer.strip("/").split("/") if pointer.strip("/") else ():
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return _inline(target, target_file)
    return {key: _inline(value, file_name) for key, value in node.items()}


def load_schema(name: str) -> dict[str, Any]:
    """The self-contained schema of `envelope` or of an event type's `data` ($refs inlined).

    A copy: for documentation, tooling and tests; the validators use their own.
    """
    return copy.deepcopy(_load_schema(name))


@cache
def _load_schema(name: str) -> dict[str, Any]:
    file_name = f"{name}.json"
    root = {
        key: value
        for key, value in _read(file_name).items()
        if key not in ("$id", "$schema", "definitions")  # meaningless once embedded
    }
    schema: dict[str, Any] = _inline(root, file_name)
    return schema


def event_schema(event_type: str) -> dict[str, Any]:
    """The envelope with `type` fixed and `data` replaced by the type's data schema."""
    # fastjsonschema writes schema values into generated code with repr(): a
    # StrEnum member would come out as `<EventType...>`, so only plain str here.
    event_type = str.__str__(event_type)
    envelope = _load_schema("envelope")
    properties = dict(envelope["properties"], type={"const": event_type})
    properties["data"] = _load_schema(event_type)
    return {
        **envelope,
        "$schema": "http://json-schema.org/draft-07/schema#",
        "properties": properties,
    }


def _compile(schema: dict[str, Any]) -> Validator:
    # use_default=False: fastjsonschema would otherwise write `default` values
    # into the validated dict, i.e. into the raw event we promise to keep as received.
    validator: Validator = fastjsonschema.compile(schema, use_default=False, use_formats=False)
    return validator


@cache
def envelope_validator() -> Validator:
    return _compile(
        {**_load_schema("envelope"), "$schema": "http://json-schema.org/draft-07/schema#"}
    )


@cache
def validators(kind: type[EventType] | type[OutputType]) -> dict[str, Validator]:
    return {member.value: _compile(event_schema(member.value)) for member in kind}


@cache
def completed_by_kind() -> dict[str, Validator]:
    """interview.completed, specialised per `kind`.

    The file states "result depends on kind" as draft-07 if/then; fastjsonschema
    tries each `if` by raising on a mismatch, about 3 us per branch not taken.
    Picking the branch by `kind` in Python and compiling it as plain properties
    gives the same verdicts and messages at a third of the cost; an absent or
    unknown kind still goes through the generic schema and its enum message.
    """
    schema = event_schema(EventType.INTERVIEW_COMPLETED.value)
    data = schema["properties"]["data"]
    plain = {key: value for key, value in data.items() if key != "allOf"}
    specialised: dict[str, Validator] = {}
    for branch in data["allOf"]:
        kind = branch["if"]["properties"]["kind"]["const"]
        properties = {**data["properties"], **branch["then"]["properties"]}
        kind_data = {**plain, "properties": properties}
        specialised[kind] = _compile(
            {**schema, "properties": {**schema["properties"], "data": kind_data}}
        )
    return specialised


# --- typed messages ---------------------------------------------------------------------------


def to_date(value: str, path: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Rejected(
            ErrorClass.SCHEMA, f"{path}: must be a real calendar date YYYY-MM-DD, got {show(value)}"
        ) from None


def to_datetime(value: str, path: str) -> datetime:
    """ISO date-time; lower-case t/z are RFC 3339 but datetime.fromisoformat rejects them."""
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError:
        raise Rejected(
            ErrorClass.SCHEMA, f"{path}: must be a real date and time, got {show(value)}"
        ) from None


def _submitted(data: Data) -> ApplicationSubmitted:
    label = data.get("existing_label")
    existing = (
        None
        if label is None
        else ExistingLabel(
            level=Level(label["level"]),
            valid_until=to_date(label["valid_until"], "data.existing_label.valid_until"),
        )
    )
    return ApplicationSubmitted(
        cluster_id=data["cluster_id"],
        cluster_name=data["cluster_name"],
        organisation=data["organisation"],
        federal_state=data["federal_state"],
        existing_label=existing,
    )


def _assessed(data: Data) -> ApplicationAssessed:
    criteria = data["criteria"]
    return ApplicationAssessed(
        cluster_id=data["cluster_id"],
        assessed_on=to_date(data["assessed_on"], "data.assessed_on"),
        criteria=Criteria(
            structure_and_composition=criteria["structure_and_composition"],
            management_and_governance=criteria["management_and_governance"],
            activities_and_cooperation=criteria["activities_and_cooperation"],
            visibility_and_impact=criteria["visibility_and_impact"],
        ),
    )


def _withdrawn(data: Data) -> ApplicationWithdrawn:
    return ApplicationWithdrawn(cluster_id=data["cluster_id"], reason=data.get("reason"))


def _scheduled(data: Data) -> InterviewScheduled:
    return InterviewScheduled(
        cluster_id=data["cluster_id"],
        interview_id=data["interview_id"],
        kind=InterviewKind(data["kind"]),
        scheduled_for=to_datetime(data["scheduled_for"], "data.scheduled_for"),
    )


def _result(kind: InterviewKind, result: Data) -> InterviewResult:
    if kind is InterviewKind.BENCHMARKING:
        return BenchmarkingResult(
            # JSON Schema (and fastjsonschema) count 3.0 as an integer; the domain gets an int.
            indicators_benchmarked=int(result["indicators_benchmarked"]),
            eligibility_met=result["eligibility_met"],
        )
    if kind is InterviewKind.SILVER_AUDIT:
        return SilverAuditResult(
            improvement_areas=tuple(
                ImprovementArea(indicator=area["indicator"], validated=area["validated"])
                for area in result["improvement_areas"]
            ),
            minimum_requirements_met=result["minimum_requirements_met"],
        )
    return GoldAssessmentResult(
        indicators={
            name: GoldIndicator(
                score=float(values["score"]),
                threshold=float(values["threshold"]),
                max=float(values["max"]),
            )
            for name, values in result["indicators"].items()
        }
    )


def _completed(data: Data) -> InterviewCompleted:
    kind = InterviewKind(data["kind"])
    return InterviewCompleted(
        cluster_id=data["cluster_id"],
        interview_id=data["interview_id"],
        kind=kind,
        held_on=to_date(data["held_on"], "data.held_on"),
        result=_result(kind, data["result"]),
    )


def _cancelled(data: Data) -> InterviewCancelled:
    return InterviewCancelled(
        cluster_id=data["cluster_id"], interview_id=data["interview_id"], reason=data.get("reason")
    )


_BUILDERS: dict[str, Callable[[Data], Payload]] = {
    EventType.APPLICATION_SUBMITTED: _submitted,
    EventType.APPLICATION_ASSESSED: _assessed,
    EventType.APPLICATION_WITHDRAWN: _withdrawn,
    EventType.INTERVIEW_SCHEDULED: _scheduled,
    EventType.INTERVIEW_COMPLETED: _completed,
    EventType.INTERVIEW_CANCELLED: _cancelled,
}


def build_input_event(event: dict[str, Any]) -> InputEvent:
    """The typed event; `event` itself becomes `raw`, unknown attributes and fields included."""
    event_type = EventType(event["type"])
    return InputEvent(
        id=event["id"],
        source=event["source"],
        type=event_type,
        subject=event["subject"],
        time=to_datetime(event["time"], "time"),
        data=_BUILDERS[event_type](event["data"]),
        raw=event,
    )


_OUTPUT_DATES: dict[str, tuple[str, ...]] = {
    OutputType.LABEL_AWARDED: ("awarded_on", "valid_until"),
    OutputType.LABEL_EXPIRED: ("expired_on",),
    OutputType.DEADLINE_BREACHED: ("due_on",),
    OutputType.DEADLINE_APPROACHING: ("due_on",),
    OutputType.MEMBERSHIP_CHANGED: (),
}


def check_output_values(event: Mapping[str, Any]) -> None:
    """What the output schemas cannot say: real calendar dates, ints written as ints, and
    exactly the documented fields.

    JSON Schema accepts 30.0 as an integer; a consumer in a typed language may
    not, and we write the output, so `days_left` must be a Python int. The
    published output schemas are open (a later version may add fields that
    consumers ignore), but the producer writes exactly the fields of its version.
    """
    to_datetime(event["time"], "time")
    data = event["data"]
    if extra := sorted(set(data) - set(_load_schema(event["type"])["properties"])):
        raise Rejected(ErrorClass.SCHEMA, f"data: unexpected field(s): {', '.join(extra)}")
    for name in _OUTPUT_DATES[event["type"]]:
        to_date(data[name], f"data.{name}")
    if "days_left" in data and type(data["days_left"]) is not int:
        raise Rejected(
            ErrorClass.SCHEMA,
            f"data.days_left: must be written as an integer, got {show(data['days_left'])}",
        )
