"""The contract's input and output schemas, and the decoder the consumers rely on."""

from __future__ import annotations

import copy
import json
import pickle
from datetime import UTC, date, datetime, timedelta, timezone
from importlib.resources import files
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.messages import (
    ApplicationAssessed,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    BenchmarkingResult,
    EventType,
    ExistingLabel,
    GoldAssessmentResult,
    GoldIndicator,
    ImprovementArea,
    InputEvent,
    InterviewCancelled,
    InterviewCompleted,
    InterviewKind,
    InterviewScheduled,
    Level,
    OutputType,
    SilverAuditResult,
)
from schemas.validate import (
    ErrorClass,
    Rejected,
    load_schema,
    parse_event,
    parse_json,
    validate_output,
)

CLUSTER = "cluster-42.a_b"

DATA: dict[str, dict[str, Any]] = {
    EventType.APPLICATION_SUBMITTED: {
        "cluster_id": CLUSTER,
        "cluster_name": "Cluster Nord",
        "organisation": "Nord e.V.",
        "federal_state": "DE-HH",
    },
    EventType.APPLICATION_ASSESSED: {
        "cluster_id": CLUSTER,
        "assessed_on": "2025-02-28",
        "criteria": {
            "structure_and_composition": True,
            "management_and_governance": True,
            "activities_and_cooperation": False,
            "visibility_and_impact": True,
        },
    },
    EventType.APPLICATION_WITHDRAWN: {"cluster_id": CLUSTER, "reason": "merged"},
    EventType.INTERVIEW_SCHEDULED: {
        "cluster_id": CLUSTER,
        "interview_id": "iv-1",
        "kind": "benchmarking",
        "scheduled_for": "2025-04-01T09:30:00+02:00",
    },
    EventType.INTERVIEW_COMPLETED: {
        "cluster_id": CLUSTER,
        "interview_id": "iv-1",
        "kind": "benchmarking",
        "held_on": "2025-04-01",
        "result": {"indicators_benchmarked": 31, "eligibility_met": True},
    },
    EventType.INTERVIEW_CANCELLED: {"cluster_id": CLUSTER, "interview_id": "iv-1"},
}

SILVER_RESULT = {
    "improvement_areas": [
        {"indicator": "I-3", "validated": True},
        {"indicator": "I-7", "validated": False},
    ],
    "minimum_requirements_met": True,
}
GOLD_RESULT = {
    "indicators": {
        "G1": {"score": 4, "threshold": 3, "max": 5},
        "G2": {"score": 2.5, "threshold": 2.0, "max": 4.0},
    }
}

OUTPUT_DATA: dict[str, dict[str, Any]] = {
    OutputType.LABEL_AWARDED: {
        "cluster_id": CLUSTER,
        "level": "bronze",
        "awarded_on": "2025-04-01",
        "valid_until": "2027-04-01",
        "interview_id": "iv-1",
        "renewal": False,
        "cause_id": "evt-9",
        "cause_source": "/go-cluster/portal",
    },
    OutputType.LABEL_EXPIRED: {
        "cluster_id": CLUSTER,
        "level": "silver",
        "expired_on": "2027-04-01",
        "cause_id": "timer:label-expiry:cluster-42.a_b:silver",
        "cause_source": "/gocluster/membership",
    },
    OutputType.DEADLINE_BREACHED: {
        "cluster_id": CLUSTER,
        "obligation": "bronze_interview",
        "due_on": "2025-08-28",
        "cause_id": "timer-1",
        "cause_source": "/gocluster/membership",
    },
    OutputType.DEADLINE_APPROACHING: {
        "cluster_id": CLUSTER,
        "obligation": "label_renewal",
        "due_on": "2027-04-01",
        "days_left": 30,
        "cause_id": "timer-2",
        "cause_source": "/gocluster/membership",
    },
    OutputType.MEMBERSHIP_CHANGED: {
        "cluster_id": CLUSTER,
        "from": None,
        "to": "applied",
        "cause_id": "evt-1",
        "cause_source": "/go-cluster/portal",
    },
}


def event(event_type: str, data: dict[str, Any] | None = None, **attrs: Any) -> dict[str, Any]:
    """A structured CloudEvent; `data` defaults to the valid example of its type."""
    body = copy.deepcopy(DATA.get(event_type) or OUTPUT_DATA.get(event_type) or {})
    return {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/portal",
        "type": event_type,
        "subject": CLUSTER,
        "time": "2025-03-01T10:00:00Z",
        "datacontenttype": "application/json",
        "data": body if data is None else data,
        **attrs,
    }


def completed(kind: str, result: Any) -> dict[str, Any]:
    data = dict(DATA[EventType.INTERVIEW_COMPLETED], kind=kind, result=result)
    return event(EventType.INTERVIEW_COMPLETED, data)


def with_data(event_type: str, **changes: Any) -> dict[str, Any]:
    return event(event_type, {**DATA.get(event_type, OUTPUT_DATA.get(event_type, {})), **changes})


def rejected(obj: dict[str, Any]) -> Rejected:
    with pytest.raises(Rejected) as info:
        parse_event(obj)
    return info.value


# --- the schema files -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["envelope", *EventType, *OutputType])
def test_every_contract_type_has_a_draft07_schema_file_that_resolves_completely(name: str) -> None:
    stored = json.loads((files("schemas") / "data" / f"{name}.json").read_text("utf-8"))
    assert stored["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert stored["$id"].endswith(f"/{name}.json")
    resolved = load_schema(name)
    assert "$ref" not in json.dumps(resolved)
    assert resolved["type"] == "object"


def test_load_schema_hands_out_copies_that_cannot_change_validation() -> None:
    load_schema("envelope")["properties"]["subject"]["pattern"] = ".*"
    assert load_schema("envelope")["properties"]["subject"]["pattern"] != ".*"


# --- accepted input ---------------------------------------------------------------------------


def test_every_input_type_is_accepted_and_decoded_to_its_dataclass() -> None:
    expected = {
        EventType.APPLICATION_SUBMITTED: ApplicationSubmitted(
            CLUSTER, "Cluster Nord", "Nord e.V.", "DE-HH", None
        ),
        EventType.APPLICATION_WITHDRAWN: ApplicationWithdrawn(CLUSTER, "merged"),
        EventType.INTERVIEW_SCHEDULED: InterviewScheduled(
            CLUSTER,
            "iv-1",
            InterviewKind.BENCHMARKING,
            datetime(2025, 4, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))),
        ),
        EventType.INTERVIEW_COMPLETED: InterviewCompleted(
            CLUSTER,
            "iv-1",
            InterviewKind.BENCHMARKING,
            date(2025, 4, 1),
            BenchmarkingResult(indicators_benchmarked=31, eligibility_met=True),
        ),
        EventType.INTERVIEW_CANCELLED: InterviewCancelled(CLUSTER, "iv-1", None),
    }
    for event_type in EventType:
        parsed = parse_json(json.dumps(event(event_type)).encode())
        assert parsed.type is event_type
        assert (parsed.id, parsed.source, parsed.subject) == ("evt-1", "/portal", CLUSTER)
        assert parsed.time == datetime(2025, 3, 1, 10, tzinfo=UTC)
        if event_type in expected:
            assert parsed.data == expected[event_type]


def test_assessed_decodes_its_date_and_criteria() -> None:
    data = parse_event(event(EventType.APPLICATION_ASSESSED)).data
    assert isinstance(data, ApplicationAssessed)
    assert data.assessed_on == date(2025, 2, 28)
    assert not data.criteria.all_met
    assert data.criteria.failed() == ["activities_and_cooperation"]


def test_submitted_with_existing_label_decodes_level_and_date() -> None:
    label = {"level": "silver", "valid_until": "2026-06-30"}
    data = parse_event(with_data(EventType.APPLICATION_SUBMITTED, existing_label=label)).data
    assert isinstance(data, ApplicationSubmitted)
    assert data.existing_label == ExistingLabel(Level.SILVER, date(2026, 6, 30))


def test_optional_fields_given_as_null_mean_absent() -> None:
    submitted = with_data(EventType.APPLICATION_SUBMITTED, existing_label=None)
    assert parse_event(submitted).data == ApplicationSubmitted(
        CLUSTER, "Cluster Nord", "Nord e.V.", "DE-HH"
    )
    withdrawn = with_data(EventType.APPLICATION_WITHDRAWN, reason=None)
    assert parse_event(withdrawn).data == ApplicationWithdrawn(CLUSTER, None)


def test_silver_audit_result_decodes_to_a_tuple_of_improvement_areas() -> None:
    data = parse_event(completed("silver_audit", SILVER_RESULT)).data
    assert isinstance(data, InterviewCompleted)
    assert data.result == SilverAuditResult(
        (ImprovementArea("I-3", True), ImprovementArea("I-7", False)), True
    )


def test_gold_assessment_result_decodes_to_float_indicators() -> None:
    data = parse_event(completed("gold_assessment", GOLD_RESULT)).data
    assert isinstance(data, InterviewCompleted)
    assert isinstance(data.result, GoldAssessmentResult)
    assert dict(data.result.indicators) == {
        "G1": GoldIndicator(4.0, 3.0, 5.0),
        "G2": GoldIndicator(2.5, 2.0, 4.0),
    }
    assert all(type(i.score) is float for i in data.result.indicators.values())


def test_an_integral_float_count_is_accepted_and_decoded_as_int() -> None:
    result = {"indicators_benchmarked": 31.0, "eligibility_met": False}
    data = parse_event(completed("benchmarking", result)).data
    assert isinstance(data, InterviewCompleted)
    assert data.result == BenchmarkingResult(31, False)
    assert isinstance(data.result, BenchmarkingResult)
    assert type(data.result.indicators_benchmarked) is int


def test_unknown_attributes_and_fields_are_accepted_and_kept_in_raw() -> None:
    obj = event(EventType.APPLICATION_WITHDRAWN, traceparent="00-abc-01", partitionkey=CLUSTER)
    obj["data"]["portal_ref"] = {"ticket": 17, "tags": ["a", None, 1.5]}
    parsed = parse_json(json.dumps(obj))
    assert parsed.raw == obj
    assert parsed.raw["traceparent"] == "00-abc-01"
    assert parsed.raw["data"]["portal_ref"]["tags"] == ["a", None, 1.5]


def test_parse_event_keeps_the_given_dict_as_raw_and_does_not_change_it() -> None:
    obj = event(EventType.INTERVIEW_COMPLETED)
    before = copy.deepcopy(obj)
    parsed = parse_event(obj)
    assert parsed.raw is obj
    assert obj == before


def test_a_read_only_mapping_is_accepted_and_raw_is_a_plain_dict() -> None:
    parsed = parse_event(MappingProxyType(event(EventType.APPLICATION_WITHDRAWN)))
    assert type(parsed.raw) is dict


@pytest.mark.parametrize(
    ("scheduled_for", "expected"),
    [
        ("2025-04-01T09:30:00Z", datetime(2025, 4, 1, 9, 30, tzinfo=UTC)),
        ("2025-04-01t09:30:00.123456789z", datetime(2025, 4, 1, 9, 30, 0, 123456, tzinfo=UTC)),
        ("2025-04-01T09:30", datetime(2025, 4, 1, 9, 30)),
        ("2025-04-01T09:30:15", datetime(2025, 4, 1, 9, 30, 15)),
    ],
)
def test_scheduled_for_is_accepted_with_or_without_offset(
    scheduled_for: str, expected: datetime
) -> None:
    data = parse_event(with_data(EventType.INTERVIEW_SCHEDULED, scheduled_for=scheduled_for)).data
    assert isinstance(data, InterviewScheduled)
    assert data.scheduled_for == expected
    assert data.scheduled_for.tzinfo == expected.tzinfo


@pytest.mark.parametrize(
    "time", ["2025-03-01T10:00:00+01:00", "2025-03-01t10:00:00z", "2025-03-01T10:00:00.5-05:30"]
)
def test_event_time_with_any_rfc3339_offset_is_accepted_and_aware(time: str) -> None:
    parsed = parse_event(event(EventType.APPLICATION_WITHDRAWN, time=time))
    assert parsed.time.utcoffset() is not None


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "text/json"],
)
def test_json_data_content_types_are_accepted(content_type: str) -> None:
    parse_event(event(EventType.APPLICATION_WITHDRAWN, datacontenttype=content_type))


def test_data_content_type_and_dataschema_may_be_absent() -> None:
    obj = event(EventType.APPLICATION_WITHDRAWN)
    del obj["datacontenttype"]
    assert parse_event(obj).type is EventType.APPLICATION_WITHDRAWN


# --- rejected input: decode -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"specversion": "1.0",', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),  # a UTF-8 byte order mark
        (b"[1, 2]", "must be a JSON object"),
        (b'"an event"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b'{"data": {"x": NaN}}', "NaN is not a JSON number"),
        (b'{"data": {"x": -Infinity}}', "-Infinity is not a JSON number"),
        (b'{"data": {"x": 1e999}}', "inf is not a JSON number"),
        (b'{"subject": "a", "subject": "b"}', 'duplicate key "subject"'),
        (b'{"x": ' + b"9" * 5000 + b"}", "not usable JSON"),
        (b'{"x": ' + b"9" * 100 + b"}", "integer too large"),
        (b'{"x": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"x\\udfff": 1}', "lone UTF-16 surrogate"),
        (b'{"x": "a\\u0000b"}', "NUL character"),
        (b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than 64"),
        (b'{"x": ' + b"[" * 70 + b"]" * 70 + b"}", "nested deeper than 64"),
    ],
)
def test_unreadable_values_are_rejected_as_decode(raw: bytes, says: str) -> None:
    with pytest.raises(Rejected) as info:
        parse_json(raw)
    assert info.value.error_class is ErrorClass.DECODE
    assert says in info.value.message


def test_a_decode_message_names_where_the_bad_text_is() -> None:
    obj = event(EventType.APPLICATION_SUBMITTED)
    obj["data"]["cluster_name"] = "Nord\ud83d"
    error = rejected(obj)
    assert error.error_class is ErrorClass.DECODE
    assert error.message.startswith("data.cluster_name: ")
    error.message.encode("utf-8")  # fit for a Kafka header


def test_parse_json_accepts_str_and_properly_paired_surrogate_escapes() -> None:
    obj = event(EventType.APPLICATION_SUBMITTED)
    obj["data"]["cluster_name"] = "Cluster 😀 Süd"
    parsed = parse_json(json.dumps(obj))  # ensure_ascii: the emoji is a \\ud83d\\ude00 pair
    assert isinstance(parsed.data, ApplicationSubmitted)
    assert parsed.data.cluster_name == "Cluster 😀 Süd"


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", datetime(2025, 1, 1)])
def test_python_values_that_are_not_json_are_rejected_as_schema(value: Any) -> None:
    obj = event(EventType.APPLICATION_WITHDRAWN)
    obj["data"]["extra"] = value
    error = rejected(obj)
    assert error.error_class is ErrorClass.SCHEMA
    assert error.message.startswith("data.extra: ")


@pytest.mark.parametrize("value", [None, [], "event", 3])
def test_parse_event_rejects_what_is_not_a_mapping(value: Any) -> None:
    with pytest.raises(Rejected) as info:
        parse_event(value)
    assert info.value.error_class is ErrorClass.SCHEMA


# --- rejected input: schema -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"specversion": "0.3"}, 'specversion: must be "1.0", got "0.3"'),
        ({"id": ""}, "id: must be a non-empty string of at most 256 characters"),
        ({"id": "x" * 257}, "id: must be a non-empty string"),
        ({"source": 7}, "source: must be a non-empty URI-reference"),
        (
            {"subject": "bad id"},
            'subject: must be a cluster id of 1-64 characters [A-Za-z0-9._-], got "bad id"',
        ),
        ({"subject": "a" * 65}, "subject: must be a cluster id"),
        ({"subject": "abc\n"}, "subject: must be a cluster id"),
        ({"time": "2025-03-01T10:00:00"}, "time: must be an RFC 3339 date-time with offset"),
        ({"time": "2025-03-01 10:00:00Z"}, "time: must be an RFC 3339 date-time"),
        ({"time": "1900-03-01T10:00:00Z"}, "time: must be an RFC 3339 date-time"),
        (
            {"time": "2025-02-30T10:00:00Z"},
            'time: must be a real date and time, got "2025-02-30T10:00:00Z"',
        ),
        ({"time": "2025-03-01T10:00:60Z"}, "time: must be an RFC 3339 date-time"),
        ({"datacontenttype": "text/plain"}, "datacontenttype: must be a JSON media type"),
        ({"datacontenttype": "application/jsonx"}, "datacontenttype: must be a JSON media type"),
        ({"dataschema": ""}, "dataschema: must be a non-empty URI"),
        ({"data": "{}"}, 'data: must be a JSON object, got "{}"'),
        ({"data": None}, "data: must be a JSON object, got null"),
    ],
)
def test_envelope_violations_are_rejected_as_schema_with_path_and_value(
    change: dict[str, Any], message: str
) -> None:
    error = rejected({**event(EventType.APPLICATION_WITHDRAWN), **change})
    assert error.error_class is ErrorClass.SCHEMA
    assert error.message.startswith(message)
    assert str(error) == error.message


@pytest.mark.parametrize(
    "attribute", ["specversion", "id", "source", "type", "subject", "time", "data"]
)
def test_a_missing_required_attribute_is_named(attribute: str) -> None:
    obj = event(EventType.APPLICATION_WITHDRAWN)
    del obj[attribute]
    error = rejected(obj)
    assert error.error_class is ErrorClass.SCHEMA
    assert error.message == f"event: missing required attribute(s): {attribute}"


@pytest.mark.parametrize(
    ("event_type", "change", "message"),
    [
        (
            EventType.APPLICATION_SUBMITTED,
            {"cluster_id": "x y"},
            "data.cluster_id: must be a cluster id",
        ),
        (
            EventType.APPLICATION_SUBMITTED,
            {"cluster_name": ""},
            "data.cluster_name: must be a non-blank text",
        ),
        (
            EventType.APPLICATION_SUBMITTED,
            {"cluster_name": "   "},
            "data.cluster_name: must be a non-blank text",
        ),
        (
            EventType.APPLICATION_SUBMITTED,
            {"organisation": "o" * 501},
            "data.organisation: must be a non-blank text of at most 500",
        ),
        (
            EventType.APPLICATION_SUBMITTED,
            {"federal_state": "DE-XX"},
            'data.federal_state: must be an ISO 3166-2:DE code of a Land, e.g. DE-BY, got "DE-XX"',
        ),
        (
            EventType.APPLICATION_SUBMITTED,
            {"federal_state": "de-by"},
            "data.federal_state: must be an ISO 3166-2:DE code",
        ),
        (
            EventType.APPLICATION_SUBMITTED,
            {"existing_label": {"level": "platinum", "valid_until": "2026-01-01"}},
            'data.existing_label.level: must be one of bronze, silver, gold, got "platinum"',
        ),
        (
            EventType.APPLICATION_SUBMITTED,
            {"existing_label": {"level": "gold"}},
            "data.existing_label: missing required field(s): valid_until",
        ),
        (
            EventType.APPLICATION_SUBMITTED,
            {"existing_label": {"level": "gold", "valid_until": "2026-02-29"}},
            'data.existing_label.valid_until: must be a real calendar date YYYY-MM-DD, got "2026',
        ),
        (
            EventType.APPLICATION_ASSESSED,
            {"assessed_on": "2025-13-01"},
            'data.assessed_on: must be a date YYYY-MM-DD (year 1990-2199), got "2025-13-01"',
        ),
        (
            EventType.APPLICATION_ASSESSED,
            {"assessed_on": "9999-01-01"},
            "data.assessed_on: must be a date YYYY-MM-DD (year 1990-2199)",
        ),
        (
            EventType.APPLICATION_ASSESSED,
            {"assessed_on": "1989-12-31"},
            "data.assessed_on: must be a date YYYY-MM-DD",
        ),
        (
            EventType.APPLICATION_ASSESSED,
            {"assessed_on": "2025-1-1"},
            "data.assessed_on: must be a date YYYY-MM-DD",
        ),
        (
            EventType.APPLICATION_ASSESSED,
            {"assessed_on": "2025-03-01T00:00:00Z"},
            "data.assessed_on: must be a date YYYY-MM-DD",
        ),
        (
            EventType.APPLICATION_ASSESSED,
            {"assessed_on": "٢٠٢٥-٠٣-٠١"},
            "data.assessed_on: must be a date YYYY-MM-DD",
        ),
        (
            EventType.APPLICATION_ASSESSED,
            {"assessed_on": 20250301},
            "data.assessed_on: must be a date YYYY-MM-DD",
        ),
        (
            EventType.APPLICATION_ASSESSED,
            {"criteria": {"structure_and_composition": True}},
            "data.criteria: missing required field(s): management_and_governance, activities_",
        ),
        (
            EventType.APPLICATION_ASSESSED,
            {
                "criteria": {
                    **DATA[EventType.APPLICATION_ASSESSED]["criteria"],
                    "visibility_and_impact": 1,
                }
            },
            "data.criteria.visibility_and_impact: must be true or false, got 1",
        ),
        (
            EventType.APPLICATION_WITHDRAWN,
            {"reason": "r" * 2001},
            "data.reason: must be a text of at most 2000 characters",
        ),
        (
            EventType.INTERVIEW_SCHEDULED,
            {"kind": "coffee"},
            'data.kind: must be one of benchmarking, silver_audit, gold_assessment, got "coffee"',
        ),
        (
            EventType.INTERVIEW_SCHEDULED,
            {"scheduled_for": "2025-04-01"},
            "data.scheduled_for: must be a date-time YYYY-MM-DDTHH:MM[:SS]",
        ),
        (
            EventType.INTERVIEW_SCHEDULED,
            {"scheduled_for": "2025-04-31T10:00"},
            "data.scheduled_for: must be a real date and time",
        ),
        (
            EventType.INTERVIEW_CANCELLED,
            {"interview_id": ""},
            "data.interview_id: must be a non-blank id of 1-128 characters",
        ),
        (
            EventType.INTERVIEW_CANCELLED,
            {"interview_id": "i" * 129},
            "data.interview_id: must be a non-blank id",
        ),
        (
            EventType.INTERVIEW_COMPLETED,
            {"held_on": "2025-02-29"},
            "data.held_on: must be a real calendar date",
        ),
    ],
)
def test_data_violations_are_rejected_as_schema_with_an_actionable_message(
    event_type: EventType, change: dict[str, Any], message: str
) -> None:
    error = rejected(with_data(event_type, **change))
    assert error.error_class is ErrorClass.SCHEMA
    assert error.message.startswith(message), error.message


@pytest.mark.parametrize("event_type", list(EventType))
def test_cluster_id_is_required_in_every_input_type(event_type: EventType) -> None:
    data = dict(DATA[event_type])
    del data["cluster_id"]
    error = rejected(event(event_type, data))
    assert error.error_class is ErrorClass.SCHEMA
    assert error.message == "data: missing required field(s): cluster_id"


@pytest.mark.parametrize(
    ("kind", "result", "message"),
    [
        (
            "benchmarking",
            {"indicators_benchmarked": True, "eligibility_met": True},
            "data.result.indicators_benchmarked: must be an integer, got true",
        ),
        (
            "benchmarking",
            {"indicators_benchmarked": 3.5, "eligibility_met": True},
            "data.result.indicators_benchmarked: must be an integer, got 3.5",
        ),
        (
            "benchmarking",
            {"indicators_benchmarked": -1, "eligibility_met": True},
            "data.result.indicators_benchmarked: must be >= 0, got -1",
        ),
        (
            "benchmarking",
            {"indicators_benchmarked": 10**12, "eligibility_met": True},
            "data.result.indicators_benchmarked: must be <= 100000",
        ),
        (
            "benchmarking",
            {"indicators_benchmarked": 3, "eligibility_met": "yes"},
            "data.result.eligibility_met: must be true or false",
        ),
        (
            "benchmarking",
            GOLD_RESULT,
            "data.result: missing required field(s): indicators_benchmarked, eligibility_met",
        ),
        (
            "silver_audit",
            {"improvement_areas": [{"indicator": "I-1"}], "minimum_requirements_met": True},
            "data.result.improvement_areas[0]: missing required field(s): validated",
        ),
        (
            "silver_audit",
            {
                "improvement_areas": [{"indicator": "I", "validated": True}] * 51,
                "minimum_requirements_met": True,
            },
            "data.result.improvement_areas: must have at most 50 items",
        ),
        (
            "silver_audit",
            {"improvement_areas": {}, "minimum_requirements_met": True},
            "data.result.improvement_areas: must be an array",
        ),
        (
            "gold_assessment",
            {"indicators": {}},
            "data.result.indicators: must have at least 1 entries",
        ),
        (
            "gold_assessment",
            {"indicators": {f"G{i}": {"score": 1, "threshold": 1, "max": 1} for i in range(501)}},
            "data.result.indicators: must have at most 500 entries",
        ),
        (
            "gold_assessment",
            {"indicators": {"G1": {"score": 1, "threshold": 1, "max": 0}}},
            "data.result.indicators.G1.max: must be > 0, got 0",
        ),
        (
            "gold_assessment",
            {"indicators": {"G1": {"score": "1", "threshold": 1, "max": 5}}},
            'data.result.indicators.G1.score: must be a number, got "1"',
        ),
        (
            "gold_assessment",
            {"indicators": {"G1": {"score": False, "threshold": 1, "max": 5}}},
            "data.result.indicators.G1.score: must be a number, got false",
        ),
        (
            "gold_assessment",
            {"indicators": {"G1": {"score": 1}}},
            "data.result.indicators.G1: missing required field(s): threshold, max",
        ),
        (
            "gold_assessment",
            {"indicators": {"": {"score": 1, "threshold": 1, "max": 1}}},
            "data.result.indicators: indicator ids must be non-blank",
        ),
        ("gold_assessment", "all good", 'data.result: must be a JSON object, got "all good"'),
    ],
)
def test_interview_results_are_checked_against_the_schema_of_their_kind(
    kind: str, result: Any, message: str
) -> None:
    error = rejected(completed(kind, result))
    assert error.error_class is ErrorClass.SCHEMA
    assert error.message.startswith(message), error.message


def test_an_unknown_interview_kind_is_rejected_before_its_result_is_looked_at() -> None:
    error = rejected(completed("tea_ceremony", {}))
    assert error.error_class is ErrorClass.SCHEMA
    assert error.message.startswith("data.kind: must be one of")


def test_long_values_are_shortened_in_messages() -> None:
    error = rejected(with_data(EventType.APPLICATION_SUBMITTED, organisation="o" * 100_000))
    assert len(error.message) < 300


# --- rejected input: unknown type, conflict ---------------------------------------------------


def test_an_unknown_type_is_rejected_and_the_known_types_are_listed() -> None:
    error = rejected(event("gocluster.application.approved", DATA[EventType.APPLICATION_WITHDRAWN]))
    assert error.error_class is ErrorClass.UNKNOWN_TYPE
    assert 'unknown event type "gocluster.application.approved"' in error.message
    assert all(event_type.value in error.message for event_type in EventType)


def test_an_output_type_sent_as_input_is_an_unknown_type() -> None:
    error = rejected(event(OutputType.LABEL_AWARDED))
    assert error.error_class is ErrorClass.UNKNOWN_TYPE
    assert "is not an input event type" in error.message


def test_an_unknown_type_with_a_broken_envelope_is_a_schema_error() -> None:
    error = rejected(event("something.else", {}, subject="bad subject"))
    assert error.error_class is ErrorClass.SCHEMA
    assert error.message.startswith("subject: ")


def test_a_cluster_id_different_from_subject_is_a_conflict() -> None:
    error = rejected(with_data(EventType.APPLICATION_WITHDRAWN, cluster_id="other-cluster"))
    assert error.error_class is ErrorClass.CONFLICT
    assert error.message == (
        f'data.cluster_id "other-cluster" differs from subject "{CLUSTER}"; '
        "both must be the cluster id"
    )


def test_rejected_survives_pickling_with_class_and_message() -> None:
    error = rejected(with_data(EventType.APPLICATION_WITHDRAWN, cluster_id="other"))
    copied = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (copied.error_class, copied.message) == (error.error_class, error.message)


# --- output -----------------------------------------------------------------------------------


def output(output_type: str, **changes: Any) -> dict[str, Any]:
    return event(
        output_type,
        {**OUTPUT_DATA[output_type], **changes},
        source="/gocluster/membership",
        time="2025-04-01T00:00:00+02:00",
    )


@pytest.mark.parametrize("output_type", list(OutputType))
def test_every_output_type_in_its_contract_shape_is_valid(output_type: OutputType) -> None:
    validate_output(output(output_type))


@pytest.mark.parametrize(
    "changes",
    [
        {"interview_id": None},  # a label the cluster brought along, not earned here
        {"renewal": True, "level": "gold"},
    ],
)
def test_label_awarded_accepts_a_missing_interview_and_renewals(changes: dict[str, Any]) -> None:
    validate_output(output(OutputType.LABEL_AWARDED, **changes))


@pytest.mark.parametrize(
    ("from_state", "to_state"),
    [
        (None, "applied"),
        ("applied", "admitted"),
        ("admitted", "in_breach"),
        ("in_breach", "excluded"),
        ("applied", "rejected"),
        ("admitted", "withdrawn"),
    ],
)
def test_membership_changed_accepts_every_state(from_state: str | None, to_state: str) -> None:
    validate_output(output(OutputType.MEMBERSHIP_CHANGED, **{"from": from_state, "to": to_state}))


@pytest.mark.parametrize(
    ("output_type", "changes", "message"),
    [
        (OutputType.LABEL_AWARDED, {"note": "x"}, "data: unexpected field(s): note"),
        (OutputType.LABEL_AWARDED, {"renewal": "no"}, "data.renewal: must be true or false"),
        (
            OutputType.LABEL_AWARDED,
            {"interview_id": ""},
            "data.interview_id: must be the interview id",
        ),
        (
            OutputType.LABEL_AWARDED,
            {"level": "platinum"},
            "data.level: must be one of bronze, silver, gold",
        ),
        (
            OutputType.LABEL_AWARDED,
            {"valid_until": "2027-02-29"},
            "data.valid_until: must be a real calendar date",
        ),
        (
            OutputType.LABEL_EXPIRED,
            {"expired_on": "01.04.2027"},
            "data.expired_on: must be a date YYYY-MM-DD",
        ),
        (
            OutputType.DEADLINE_BREACHED,
            {"obligation": "gold_label"},
            "data.obligation: must be one of bronze_interview, silver_label, label_renewal",
        ),
        (OutputType.DEADLINE_APPROACHING, {"days_left": -1}, "data.days_left: must be >= 0"),
        (
            OutputType.DEADLINE_APPROACHING,
            {"days_left": 30.0},
            "data.days_left: must be written as an integer, got 30.0",
        ),
        (
            OutputType.DEADLINE_APPROACHING,
            {"days_left": True},
            "data.days_left: must be an integer",
        ),
        (OutputType.MEMBERSHIP_CHANGED, {"to": None}, "data.to: must be one of applied, admitted"),
        (
            OutputType.MEMBERSHIP_CHANGED,
            {"from": "pending"},
            "data.from: must be a membership state or null",
        ),
        (
            OutputType.MEMBERSHIP_CHANGED,
            {"cause_id": ""},
            "data.cause_id: must be the non-empty id",
        ),
    ],
)
def test_output_violations_are_rejected_as_schema(
    output_type: OutputType, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(Rejected) as info:
        validate_output(output(output_type, **changes))
    assert info.value.error_class is ErrorClass.SCHEMA
    assert info.value.message.startswith(message), info.value.message


@pytest.mark.parametrize("output_type", list(OutputType))
def test_every_output_field_is_required(output_type: OutputType) -> None:
    for field in OUTPUT_DATA[output_type]:
        obj = output(output_type)
        del obj["data"][field]
        with pytest.raises(Rejected, match=f"missing required field\\(s\\): {field}$"):
            validate_output(obj)


def test_an_output_envelope_needs_an_offset_time_and_a_valid_subject() -> None:
    with pytest.raises(Rejected, match=r"^time: "):
        validate_output({**output(OutputType.LABEL_EXPIRED), "time": "2027-04-01"})
    with pytest.raises(Rejected, match=r"^subject: "):
        validate_output({**output(OutputType.LABEL_EXPIRED), "subject": ""})


def test_an_input_type_given_as_output_is_an_unknown_type() -> None:
    with pytest.raises(Rejected) as info:
        validate_output(event(EventType.APPLICATION_SUBMITTED))
    assert info.value.error_class is ErrorClass.UNKNOWN_TYPE
    assert "is not an output event type" in info.value.message


def test_an_output_whose_cluster_id_differs_from_subject_is_a_conflict() -> None:
    with pytest.raises(Rejected) as info:
        validate_output(output(OutputType.LABEL_EXPIRED, cluster_id="other"))
    assert info.value.error_class is ErrorClass.CONFLICT


# --- properties -------------------------------------------------------------------------------

INTERNAL_ERROR = "could not be validated"  # the catch-all's words: a bug if it ever shows up

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)


def assert_event_or_rejected(outcome: Any) -> None:
    if isinstance(outcome, Rejected):
        assert INTERNAL_ERROR not in outcome.message
        outcome.message.encode("utf-8")  # must fit a Kafka header
    else:
        assert isinstance(outcome, InputEvent)


def outcome_of(parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except Rejected as exc:
        return exc


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_json_on_arbitrary_bytes_returns_an_event_or_rejects(raw: bytes) -> None:
    assert_event_or_rejected(outcome_of(parse_json, raw))


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_parse_json_on_arbitrary_json_values_returns_an_event_or_rejects(value: Any) -> None:
    text = json.dumps(value)  # NaN, Infinity and lone surrogates come out as Python writes them
    assert_event_or_rejected(outcome_of(parse_json, text))
    assert_event_or_rejected(outcome_of(parse_event, value))


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


VALID_EVENTS = [event(event_type) for event_type in EventType] + [
    completed("silver_audit", SILVER_RESULT),
    completed("gold_assessment", GOLD_RESULT),
    with_data(
        EventType.APPLICATION_SUBMITTED,
        existing_label={"level": "gold", "valid_until": "2026-01-31"},
    ),
]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID_EVENTS), st.data(), json_values)
def test_a_valid_event_with_any_one_value_replaced_returns_an_event_or_rejects(
    valid: dict[str, Any], data: st.DataObject, replacement: Any
) -> None:
    obj = copy.deepcopy(valid)
    path = data.draw(st.sampled_from(paths(obj)[1:]))
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = replacement
    assert_event_or_rejected(outcome_of(parse_event, obj))
    assert_event_or_rejected(outcome_of(parse_json, json.dumps(obj).encode()))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=128).filter(str.strip),
        st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(1e-6, 1e6)),
        min_size=1,
        max_size=20,
    )
)
def test_any_well_formed_gold_assessment_is_accepted_with_its_numbers(
    indicators: dict[str, tuple[float, float, float]],
) -> None:
    result = {
        "indicators": {
            k: {"score": s, "threshold": t, "max": m} for k, (s, t, m) in indicators.items()
        }
    }
    outcome = outcome_of(parse_json, json.dumps(completed("gold_assessment", result)))
    if isinstance(outcome, Rejected):  # only text unfit for storage may be refused
        assert outcome.error_class is ErrorClass.DECODE, outcome.message
        return
    assert isinstance(outcome.data, InterviewCompleted)
    assert outcome.data.result == GoldAssessmentResult(
        {k: GoldIndicator(s, t, m) for k, (s, t, m) in indicators.items()}
    )
