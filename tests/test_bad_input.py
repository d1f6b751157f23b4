"""Bad input through the whole per-record path the service runs: `decode`, then the Workflow.

Whatever a producer writes (any bytes, broken or deeply nested JSON, wrong
types, odd Unicode, absurd dates, oversized records), `decode` returns an
`Inbound` that is either an event or a classified rejection, and the DLQ
record built from it is the original record plus the error headers. The
decoder's own pieces are fuzzed in test_records.py and test_schemas.py; here
the records are whole Kafka records in both binding modes, and the last test
runs a burst of them through a real broker and `gocluster run`.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord
from sqlalchemy import Engine

from consumers.config import Settings
from consumers.event_consumer import decode
from consumers.records import (
    DLQ_ERROR_CLASSES,
    STRUCTURED_CONTENT_TYPE,
    RecordOrigin,
    dlq_record,
    structured_value,
)
from schemas.errors import ErrorClass
from tests import builders as b
from tests.kafka_fixtures import KafkaTopics, produce
from tests.service_process import ServiceProcess, header, inbox_outcomes, read_topics, service_env
from workflows.dates import FixedClock
from workflows.engine import Inbound, Workflow
from workflows.policy import Policy
from workflows.store import messages
from workflows.store.database import create_db_engine, upgrade

LIMIT = 1_048_576
TOPIC = "gocluster.applications"
STRUCTURED = [("content-type", STRUCTURED_CONTENT_TYPE.encode())]
# What `decode` itself can conclude; invalid_transition and expired_park need the state.
DECODER_CLASSES = {
    ErrorClass.DECODE,
    ErrorClass.SCHEMA,
    ErrorClass.UNKNOWN_TYPE,
    ErrorClass.CONFLICT,
}
INTERNAL_ERROR = "could not be validated"  # schemas.validate's catch-all: a bug if it shows up
DAY = date(2025, 3, 3)

VALID_EVENTS: list[dict[str, Any]] = [
    b.submitted(DAY, existing=("gold", date(2026, 1, 31))),
    b.submitted(DAY),
    b.assessed(DAY),
    b.withdrawn(DAY),
    b.scheduled(DAY, "iv-1"),
    b.bronze(DAY, interview_id="iv-1"),
    b.silver(DAY),
    b.gold(DAY),
    b.cancelled(DAY, "iv-1"),
]

ODD_TEXT = [
    "",
    " ",
    "\x00",
    "cluster\x00id",
    "\ud800",  # a lone surrogate: Python text, not UTF-8
    "x\udfffy",
    "\u202eevil\u202c",  # right-to-left override
    "\u200f\u200e",  # RTL / LTR marks
    "\u2066iso\u2069",
    "\ufeffbom",
    "😀",
    "👩‍👩‍👧‍👦",  # zero-width joiners
    "cafe\u0301",  # combining accent
    "İstanbul",  # lower() makes it longer
    "１２３",  # fullwidth digits
    "٢٠٢٥",  # Arabic-Indic digits
    "\u3000",  # ideographic space: not "\\S"
    "\x1b[31mred",
    "a" * 3000,
]
ABSURD_DATES = [
    "0000-01-01",
    "0001-01-01",
    "9999-12-31",
    "1989-12-31",
    "2200-01-01",
    "2025-02-29",
    "2025-02-30",
    "2025-04-31",
    "2025-13-01",
    "2025-00-10",
    "2025-01-00",
    "+2025-01-01",
    "-2025-01-01",
    "2025-1-1",
    "20250101",
    "2025-W01-1",
    "2025-001",
    "2025-01-01 ",
    "２０２５-０１-０１",
    "٢٠٢٥-٠١-٠١",
    "2025-01-01T00:00:00Z",
]
ABSURD_DATETIMES = [
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2025-02-30T10:00:00Z",
    "2025-01-01T24:00:00Z",
    "2025-01-01T23:59:60Z",
    "2025-01-01T10:00:00+24:00",
    "2025-01-01T10:00:00.1234567890Z",
    "2025-01-01T10:00:00",
    "2025-01-01",
    "1970-01-01T00:00:00Z",
    "2025-01-01T10:00:00 Z",
    "Tue, 01 Jan 2025 10:00:00 GMT",
]
DEEP = "__deep_{}__"  # a marker replaced by that many nested arrays after serialising
DEEP_MARKER = re.compile(r'"__deep_(\d+)__"')


def consumer_record(
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None = None,
    key: bytes | None = b"cluster-automotive",
    offset: int = 7,
) -> ConsumerRecord:
    return ConsumerRecord(
        TOPIC, 1, None, offset, 0, 0, key, value, list(headers or []), None, -1, -1, -1
    )


def assert_classified(item: Inbound, record: ConsumerRecord) -> None:
    """The promise of `decode`: an event XOR a rejection the DLQ can carry, origin intact."""
    assert isinstance(item, Inbound)
    assert (item.event is None) != (item.rejected is None)
    origin = RecordOrigin.from_consumer_record(record)
    assert item.origin == {"kind": "kafka", **origin.to_json()}
    json.dumps(item.origin)  # it is stored in a JSON column
    if item.rejected is not None:
        error = item.rejected
        assert error.error_class in DECODER_CLASSES
        assert error.error_class.value in DLQ_ERROR_CLASSES
        assert error.message.strip()
        assert INTERNAL_ERROR not in error.message
        key, value, headers = dlq_record(origin, error.error_class.value, error.message)
        assert (key, value) == (record.key, record.value)
        assert headers[: len(origin.headers)] == list(origin.headers)
        added = dict(headers[len(origin.headers) :])
        assert added["error.class"] == error.error_class.value.encode()
        assert added["original.offset"] == str(record.offset).encode()
    else:
        assert item.event is not None
        # Stored as received (parked, inbox digest) and re-serialised later.
        json.dumps(item.event.raw, ensure_ascii=False, allow_nan=False).encode("utf-8")
        if record.key is not None:
            assert record.key == item.event.subject.encode("utf-8")


def decoded(record: ConsumerRecord, max_bytes: int = LIMIT) -> Inbound:
    item = decode(record, max_bytes)
    assert_classified(item, record)
    return item


def rejected_class(record: ConsumerRecord, max_bytes: int = LIMIT) -> ErrorClass | None:
    item = decoded(record, max_bytes)
    return None if item.rejected is None else item.rejected.error_class


# -- encoding an event dict as a Kafka record, in either binding mode --------------------


def to_bytes(value: Any, ascii_only: bool = True) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    text = DEEP_MARKER.sub(lambda m: "[" * int(m[1]) + "]" * int(m[1]), text)
    # A lone surrogate becomes the invalid UTF-8 a sloppy producer would write.
    return text.encode("utf-8", "surrogatepass")


def header_text(value: Any) -> bytes:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode("utf-8", "surrogatepass")


def as_structured(event: Any, *, content_type: bool, ascii_only: bool) -> tuple[Any, Any]:
    return to_bytes(event, ascii_only), (list(STRUCTURED) if content_type else [])


def as_binary(event: dict[str, Any], *, ascii_only: bool) -> tuple[Any, Any]:
    headers: list[tuple[str, bytes]] = []
    for name, value in event.items():
        if name == "data":
            continue
        header_name = "content-type" if name == "datacontenttype" else f"ce_{name}"
        headers.append((header_name, header_text(value)))
    value = to_bytes(event["data"], ascii_only) if "data" in event else None
    return value, headers


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for name, item in value.items():
            yield from paths(item, (*prefix, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
bad_values = st.one_of(
    json_values,
    st.sampled_from(ODD_TEXT),
    st.sampled_from(ABSURD_DATES + ABSURD_DATETIMES),
    st.sampled_from([63, 64, 65, 300, 10_000]).map(DEEP.format),
    st.sampled_from([2**64, -(2**63), 10**400 // 10**100, 1e308, -0.0, 0.1 + 0.2]),
)


@st.composite
def mutated_records(draw: st.DrawFn) -> tuple[ConsumerRecord, bool]:
    """A valid event with 0-3 values replaced, removed or added, in either mode; key varied."""
    event = copy.deepcopy(draw(st.sampled_from(VALID_EVENTS)))
    changes = draw(st.integers(min_value=0, max_value=3))
    for _ in range(changes):
        path = draw(st.sampled_from(list(paths(event))))
        parent: Any = event
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "remove":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8) | st.sampled_from(ODD_TEXT))] = draw(bad_values)
        else:
            parent[path[-1]] = draw(bad_values)
    ascii_only = draw(st.booleans())
    if draw(st.booleans()):
        value, headers = as_structured(
            event, content_type=draw(st.booleans()), ascii_only=ascii_only
        )
    else:
        value, headers = as_binary(event, ascii_only=ascii_only)
    truncated = bool(value) and draw(st.integers(0, 9)) == 0
    if value and truncated:  # cut off in transit
        value = value[: draw(st.integers(0, len(value) - 1))]
    subject = event.get("subject")
    own_key = subject.encode("utf-8", "surrogatepass") if isinstance(subject, str) else None
    key = draw(st.sampled_from([own_key, None, b"another-cluster", b"\xff\x00"]) | st.binary())
    note(f"changes={changes} value={value[:300] if value else value!r} headers={headers}")
    intact = changes == 0 and not truncated and key in (own_key, None)
    return consumer_record(value, headers, key), intact


# -- properties ---------------------------------------------------------------------------

header_names = st.sampled_from(
    ["content-type", "Content-Type", "ce_specversion", "ce_id", "ce_type", "ce_subject", "ce_"]
) | st.text(st.characters(codec="utf-8"), max_size=12)  # kafka-python decodes names strictly


@settings(max_examples=300, deadline=None)
@given(
    key=st.none() | st.binary(max_size=40),
    value=st.none() | st.binary(max_size=600),
    headers=st.lists(st.tuples(header_names, st.binary(max_size=40)), max_size=6),
)
def test_any_key_value_and_headers_decode_to_an_event_or_a_classified_rejection(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    decoded(consumer_record(value, headers, key))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_records())
def test_valid_events_with_wrong_types_odd_text_absurd_dates_and_deep_nesting_are_classified(
    case: tuple[ConsumerRecord, bool],
) -> None:
    record, untouched = case
    item = decoded(record)
    if untouched:  # the generator starts from valid events: they must still pass
        assert item.event is not None, item.rejected


@pytest.fixture(scope="module")
def module_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('bad-input')}/db.sqlite")
    upgrade(engine)
    yield engine
    engine.dispose()


OFFSETS = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_records(), min_size=1, max_size=12))
def test_a_batch_of_bad_and_good_records_is_applied_and_every_record_is_accounted_for(
    module_engine: Engine, policy: Policy, cases: list[tuple[ConsumerRecord, bool]]
) -> None:
    """What the consumer does with a polled batch: no exception, one result per record."""
    workflow = Workflow(module_engine, policy, FixedClock(datetime(2025, 6, 1, tzinfo=UTC)), "/t")
    # Each example reads on along one partition: an offset read before is applied already.
    records = [consumer_record(r.value, r.headers, r.key, offset=next(OFFSETS)) for r, _ in cases]
    items = [decoded(r) for r in records]
    result = workflow.apply_batch(items)
    # Parked events of earlier examples may be applied too (with their own offsets).
    accounted = {r.origin["offset"] for r in result.rejections}
    accounted |= {o.origin["offset"] for o in result.outcomes}
    assert {r.offset for r in records} <= accounted
    for rejection in result.rejections:
        assert rejection.error_class.value in DLQ_ERROR_CLASSES


# -- classification of each kind of bad input ---------------------------------------------


def replaced(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    parent = changed
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return changed


def structured(event: Any, key: bytes | None = b"cluster-automotive") -> ConsumerRecord:
    return consumer_record(to_bytes(event), STRUCTURED, key)


def binary(event: dict[str, Any], key: bytes | None = b"cluster-automotive") -> ConsumerRecord:
    value, headers = as_binary(event, ascii_only=False)
    return consumer_record(value, headers, key)


DATE_FIELDS = [
    (b.assessed(DAY), ("data", "assessed_on")),
    (b.bronze(DAY), ("data", "held_on")),
    (VALID_EVENTS[0], ("data", "existing_label", "valid_until")),
]
DATETIME_FIELDS = [
    (VALID_EVENTS[1], ("time",)),
    (b.scheduled(DAY, "iv-2"), ("data", "scheduled_for")),
]


@pytest.mark.parametrize("absurd", ABSURD_DATES)
@pytest.mark.parametrize(
    ("event", "path"), DATE_FIELDS, ids=lambda v: "/".join(v) if isinstance(v, tuple) else ""
)
def test_an_absurd_business_date_is_a_schema_error(
    event: dict[str, Any], path: tuple[str, ...], absurd: str
) -> None:
    assert rejected_class(structured(replaced(event, path, absurd))) is ErrorClass.SCHEMA


@pytest.mark.parametrize("absurd", [t for t in ABSURD_DATETIMES if t != "2025-01-01T10:00:00"])
@pytest.mark.parametrize(
    ("event", "path"), DATETIME_FIELDS, ids=lambda v: "/".join(v) if isinstance(v, tuple) else ""
)
def test_an_absurd_time_is_a_schema_error_in_either_mode(
    event: dict[str, Any], path: tuple[str, ...], absurd: str
) -> None:
    changed = replaced(event, path, absurd)
    assert rejected_class(structured(changed)) is ErrorClass.SCHEMA
    assert rejected_class(binary(changed)) is ErrorClass.SCHEMA


@pytest.mark.parametrize("edge", ["1990-01-01", "2024-02-29", "2199-12-31"])
def test_real_dates_at_the_edges_of_the_range_are_accepted(edge: str) -> None:
    for event, path in DATE_FIELDS:
        assert rejected_class(structured(replaced(event, path, edge))) is None


@pytest.mark.parametrize(
    "text",
    ["😀 Cluster", "\u202eevil\u202c", "\u200fשלום\u200e", "👩‍👩‍👧‍👦", "cafe\u0301", "\x1b[31m"],
)
@pytest.mark.parametrize("field", [("id",), ("data", "interview_id")])
def test_odd_unicode_in_ids_is_accepted_and_kept_exactly(text: str, field: tuple[str, ...]) -> None:
    event = replaced(b.cancelled(DAY, "iv-1"), field, text)
    for record in (structured(event), binary(event)):
        item = decoded(record)
        assert item.event is not None, item.rejected
        assert item.event.raw == event


@pytest.mark.parametrize(
    "text",
    ["😀 Cluster", "\u202eevil\u202c", "\u200fשלום\u200e", "👩‍👩‍👧‍👦", "cafe\u0301", "\x1b[31m"],
)
def test_odd_unicode_in_the_source_is_refused_in_either_mode(text: str) -> None:
    """`source` is a URI-reference: non-ASCII text must come percent-encoded."""
    event = replaced(b.cancelled(DAY, "iv-1"), ("source",), text)
    assert rejected_class(structured(event)) is ErrorClass.SCHEMA
    assert rejected_class(binary(event)) is ErrorClass.SCHEMA


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cluster\x00", ErrorClass.DECODE),
        ("\ud800", ErrorClass.DECODE),
        ("😀", ErrorClass.SCHEMA),
        ("\u202ecluster", ErrorClass.SCHEMA),
        ("ｃｌｕｓｔｅｒ", ErrorClass.SCHEMA),
        ("x" * 65, ErrorClass.SCHEMA),
    ],
)
def test_odd_unicode_in_the_cluster_id_is_refused(text: str, expected: ErrorClass) -> None:
    event = replaced(replaced(b.withdrawn(DAY), ("subject",), text), ("data", "cluster_id"), text)
    assert rejected_class(structured(event, key=None)) is expected
    # Binary mode carries the text in a header: a lone surrogate is no UTF-8 there.
    assert rejected_class(binary(event, key=None)) in {expected, ErrorClass.DECODE}


@pytest.mark.parametrize("depth", [65, 300, 10_000, 100_000])
def test_deep_nesting_anywhere_is_a_decode_error(depth: int) -> None:
    nested = DEEP.format(depth)
    for event in (
        {**b.withdrawn(DAY), "ext": nested},
        replaced(b.withdrawn(DAY), ("data", "reason"), nested),
        replaced(b.gold(DAY), ("data", "result", "indicators", "ind-0", "score"), nested),
    ):
        assert rejected_class(structured(event)) is ErrorClass.DECODE
    assert rejected_class(consumer_record(to_bytes(nested), STRUCTURED)) is ErrorClass.DECODE


def test_nesting_within_the_limit_is_accepted_and_kept() -> None:
    event = replaced(
        b.withdrawn(DAY), ("data", "portal_ref"), json.loads(to_bytes(DEEP.format(50)))
    )
    item = decoded(structured(event))
    assert item.event is not None
    assert item.event.raw == event


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"", "empty"),
        (b"{", "truncated"),
        (b'{"specversion": "1.0", "id": "x', "truncated string"),
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b"\x00" * 64, "NULs"),
        (b"\xff\xfe{\x00}\x00", "UTF-16"),
        (b"null", "null"),
        (b"[]", "array"),
        (b'"event"', "string"),
        (b"1e999", "infinite number"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b"9" * 5000, "huge integer"),
    ],
)
def test_bytes_that_are_not_a_json_object_are_a_decode_error(value: bytes, why: str) -> None:
    assert rejected_class(consumer_record(value, STRUCTURED)) is ErrorClass.DECODE, why


@pytest.mark.parametrize(
    "event_type",
    [
        "gocluster.application.resubmitted",
        "gocluster.label.awarded",
        "GOCLUSTER.APPLICATION.SUBMITTED",
        "😀",
    ],
)
def test_an_unknown_type_is_classified_unknown_type(event_type: str) -> None:
    event = {**b.withdrawn(DAY), "type": event_type}
    assert rejected_class(structured(event)) is ErrorClass.UNKNOWN_TYPE
    assert rejected_class(binary(event)) is ErrorClass.UNKNOWN_TYPE


@pytest.mark.parametrize(
    ("subject", "cluster_id", "key"),
    [
        ("cluster-a", "cluster-b", b"cluster-a"),  # subject vs data.cluster_id
        ("cluster-a", "cluster-a", b"cluster-b"),  # key vs subject
        ("cluster-a", "cluster-a", b"cluster-a "),
        ("cluster-a", "cluster-a", b"CLUSTER-A"),
        ("cluster-a", "cluster-a", b"\xffcluster-a"),
    ],
)
def test_a_cluster_id_that_differs_between_key_subject_and_data_is_a_conflict(
    subject: str, cluster_id: str, key: bytes
) -> None:
    event = replaced(
        replaced(b.withdrawn(DAY), ("subject",), subject), ("data", "cluster_id"), cluster_id
    )
    assert rejected_class(structured(event, key=key)) is ErrorClass.CONFLICT
    assert rejected_class(binary(event, key=key)) is ErrorClass.CONFLICT


def test_a_record_without_a_key_is_accepted_by_its_subject() -> None:
    assert rejected_class(structured(b.withdrawn(DAY), key=None)) is None


# -- the size limit -----------------------------------------------------------------------


def test_the_record_size_limit_comes_from_gocluster_max_record_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOCLUSTER_MAX_RECORD_BYTES", "4096")
    limit = Settings().max_record_bytes
    event = {**b.withdrawn(DAY), "padding": "x" * 5000}
    item = decoded(structured(event), limit)
    assert item.rejected is not None
    assert item.rejected.error_class is ErrorClass.DECODE
    assert "over the 4096 limit" in item.rejected.message
    assert decoded(structured(event), Settings(max_record_bytes=LIMIT).max_record_bytes).event


@settings(max_examples=150, deadline=None)
@given(
    padding=st.integers(min_value=0, max_value=3000),
    limit=st.integers(min_value=1, max_value=4000),
    mode=st.sampled_from(["structured", "binary"]),
    where=st.sampled_from(["data", "extension"]),
)
def test_a_record_is_refused_as_decode_exactly_when_it_is_over_the_limit(
    padding: int, limit: int, mode: str, where: str
) -> None:
    """Key, value and headers count: binary mode cannot smuggle a huge attribute past it."""
    event = b.withdrawn(DAY)
    if where == "data":
        event = replaced(event, ("data", "portal_note"), "r" * padding)
    else:
        event = {**event, "padding": "p" * padding}
    record = structured(event) if mode == "structured" else binary(event)
    size = len(record.key) + len(record.value) + sum(len(n) + len(v) for n, v in record.headers)
    item = decoded(record, limit)
    if size > limit:
        assert item.rejected is not None
        assert item.rejected.error_class is ErrorClass.DECODE
        assert f"record is {size} bytes" in item.rejected.message
    else:
        assert item.event is not None, item.rejected


def test_a_huge_json_record_over_the_limit_is_refused_before_it_is_parsed() -> None:
    deep_and_huge = b"[" * 2_000_000 + b"]" * 2_000_000
    item = decoded(consumer_record(deep_and_huge, STRUCTURED), LIMIT)
    assert item.rejected is not None
    assert item.rejected.error_class is ErrorClass.DECODE
    assert "over the 1048576 limit" in item.rejected.message


# -- unknown extra fields are accepted and kept --------------------------------------------

EXTRAS = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "portalversion": "7.3",
}
DATA_EXTRAS = {"portal_ref": {"ticket": 17, "tags": ["a", None, 1.5, "😀"]}, "note": "\u202e"}


def with_extras(event: dict[str, Any]) -> dict[str, Any]:
    changed = {**copy.deepcopy(event), **EXTRAS}
    changed["data"].update(copy.deepcopy(DATA_EXTRAS))
    changed["data"]["result"] = {**changed["data"].get("result", {}), "auditor": "Dr. X"}
    return changed


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_unknown_attributes_and_data_fields_are_accepted_and_kept_in_either_mode(mode: str) -> None:
    event = with_extras(b.bronze(DAY))
    record = structured(event) if mode == "structured" else binary(event)
    item = decoded(record)
    assert item.event is not None, item.rejected
    assert item.event.raw == event


def kafka_inbound(event: dict[str, Any], offset: int) -> tuple[Inbound, ConsumerRecord]:
    record = consumer_record(structured_value(event), STRUCTURED, event["subject"].encode(), offset)
    return decoded(record), record


def test_a_parked_event_keeps_its_extras_until_it_is_applied_and_its_bytes_in_the_dlq(
    workflow: Workflow, policy: Policy
) -> None:
    cluster = f"cl-{uuid.uuid4().hex[:8]}"
    early = with_extras(b.bronze(DAY, cluster_id=cluster))
    stale = with_extras(b.cancelled(DAY, "iv-9", cluster_id=f"{cluster}-never"))
    parked_item, _ = kafka_inbound(early, 1)
    stale_item, stale_record = kafka_inbound(stale, 2)

    first = workflow.apply_batch([parked_item, stale_item])
    assert [o.outcome for o in first.outcomes] == ["parked", "parked"]
    with workflow.db.connect() as conn:
        stored = messages.parked_for(conn, [cluster])[cluster]
    assert [p.event for p in stored] == [early]  # extension attributes and data extras kept

    admitted = [kafka_inbound(b.submitted(DAY, cluster_id=cluster), 3)[0]]
    admitted.append(kafka_inbound(b.assessed(DAY, cluster_id=cluster), 4)[0])
    second = workflow.apply_batch(admitted)
    assert [(o.event_id, o.outcome) for o in second.outcomes][-1] == (early["id"], "applied")
    awarded = [o for o in second.outputs if o["type"] == "gocluster.label.awarded"]
    assert [o["data"]["interview_id"] for o in awarded] == [early["data"]["interview_id"]]

    # Same (source, id) with one extra changed: the extras are part of the event.
    changed = copy.deepcopy(early)
    changed["data"]["portal_ref"]["ticket"] = 18
    conflict = workflow.apply_batch([kafka_inbound(changed, 5)[0]])
    assert [r.error_class for r in conflict.rejections] == [ErrorClass.CONFLICT]

    expired = workflow.expire_parked(now=workflow.clock.now() + policy.park_ttl + timedelta(days=1))
    (rejection,) = expired.rejections
    assert rejection.error_class is ErrorClass.EXPIRED_PARK
    origin = RecordOrigin.from_json(rejection.origin)
    key, value, _ = dlq_record(origin, rejection.error_class.value, rejection.message)
    assert (key, value) == (stale_record.key, stale_record.value)
    assert json.loads(value or b"") == stale


# -- the real thing: a burst through the broker and `gocluster run` ------------------------


def bad_records() -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """(expected error.class, key, value, headers) for ~50 records of every kind of bad."""
    base = b.withdrawn(DAY, cluster_id="bad-cluster")
    key = b"bad-cluster"
    cases: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def add(expected: str, event: Any, record_key: bytes | None = key, mode: str = "s") -> None:
        if mode == "s":
            cases.append((expected, record_key, to_bytes(event, False), list(STRUCTURED)))
        else:
            value, headers = as_binary(event, ascii_only=False)
            cases.append((expected, record_key, value, headers))

    for raw in (b"\xff\xfe\x00garbage", b"{", b'{"specversion":"1.0","id":', b"null", b"[1,2]"):
        cases.append(("decode", key, raw, list(STRUCTURED)))
    cases.append(("decode", key, None, list(STRUCTURED)))  # a tombstone
    cases.append(("decode", key, b"<xml/>", [("content-type", b"application/xml")]))
    cases.append(("decode", key, b"{}", [("ce_id", b"\xc3\x28")]))
    add("decode", {**base, "ext": DEEP.format(10_000)})
    add("decode", {**base, "ext": DEEP.format(100)})
    add("decode", {**base, "padding": "x" * 20_000})  # over GOCLUSTER_MAX_RECORD_BYTES below
    add("decode", {**base, "padding": "y" * 20_000}, mode="b")
    add("decode", replaced(base, ("data", "reason"), "nul\x00inside"))
    add("decode", replaced(base, ("data", "reason"), "lone \ud800"))
    for field, value in [
        (("data",), []),
        (("data", "cluster_id"), 42),
        (("data", "reason"), {"text": "merged"}),
        (("id",), None),
        (("id",), ""),
        (("source",), 3.5),
        (("specversion",), "0.3"),
        (("subject",), "😀"),
        (("subject",), "\u202ecluster"),
        (("time",), "0000-01-01T00:00:00Z"),
        (("time",), "9999-12-31T23:59:59Z"),
        (("time",), "2025-02-30T10:00:00Z"),
        (("time",), "yesterday"),
        (("datacontenttype",), "text/plain"),
    ]:
        add("schema", replaced(base, field, value))
    add(
        "schema",
        replaced(b.assessed(DAY, cluster_id="bad-cluster"), ("data", "assessed_on"), "2025-02-30"),
    )
    add(
        "schema",
        replaced(b.bronze(DAY, cluster_id="bad-cluster"), ("data", "held_on"), "0000-01-01"),
    )
    add("schema", replaced(b.bronze(DAY, cluster_id="bad-cluster"), ("data", "kind"), "platinum"))
    add("schema", replaced(b.bronze(DAY, cluster_id="bad-cluster"), ("data", "result"), "passed"))
    add("schema", replaced(base, ("time",), "2025-13-01T00:00:00Z"), mode="b")
    add("schema", replaced(base, ("subject",), "👩‍👩‍👧‍👦"), mode="b")
    add("schema", {k: v for k, v in base.items() if k != "data"}, mode="b")
    submitted = b.submitted(DAY, cluster_id="bad-cluster", existing=("gold", DAY))
    add("schema", replaced(submitted, ("data", "existing_label", "level"), "platinum"))
    add("schema", replaced(submitted, ("data", "existing_label", "valid_until"), "9999-12-31"))
    add("schema", replaced(submitted, ("data", "federal_state"), "DE-XX"))
    add("schema", replaced(submitted, ("data", "cluster_name"), "\u3000"))
    assessed = b.assessed(DAY, cluster_id="bad-cluster")
    add("schema", replaced(assessed, ("data", "criteria", "visibility_and_impact"), "yes"))
    scheduled = b.scheduled(DAY, "iv-1", cluster_id="bad-cluster")
    add("schema", replaced(scheduled, ("data", "scheduled_for"), "2025-02-30T10:00"))
    cases.append(("decode", key, b"{}", [("ce_source", b"/\xed\xa0\x80")]))  # a lone surrogate
    cases.append(("decode", key, b"{}", [("content-type", b"application/cloudevents+avro")]))
    cases.append(("decode", key, b"{}", [("ce_id", b"1"), ("ce_data", b"{}")]))
    for event_type in ("gocluster.application.resubmitted", "gocluster.label.awarded", "x"):
        add("unknown_type", {**base, "type": event_type})
    add("unknown_type", {**base, "type": "gocluster.interview.rescheduled"}, mode="b")
    add("conflict", replaced(base, ("data", "cluster_id"), "other-cluster"))
    add("conflict", base, record_key=b"other-cluster")
    add("conflict", base, record_key=b"\xff\xfe")
    add("conflict", base, record_key=b"other-cluster", mode="b")
    return cases


@pytest.mark.kafka
def test_a_burst_of_bad_records_goes_to_the_dlq_and_the_service_keeps_applying(
    kafka_topics: KafkaTopics, tmp_path: Path
) -> None:
    bad = bad_records()
    clusters = [f"good-{n}" for n in range(4)]
    good = [b.submitted(DAY, cluster_id=c) for c in clusters]
    good += [b.assessed(DAY, cluster_id=c) for c in clusters]
    applied_events = list(good)
    # Refused by the workflow, not the decoder: a second application while applied.
    again = b.submitted(DAY + timedelta(days=1), cluster_id=clusters[0])
    duplicate_id = replaced(good[1], ("data", "cluster_name"), "Changed Name")
    expected = {str(n): (cls, k, v, h) for n, (cls, k, v, h) in enumerate(bad)}
    records = []
    for n, (_, key, value, headers) in enumerate(bad):
        records.append((key, value, [*headers, ("x-case", str(n).encode())]))
        if n % 6 == 0 and good:
            event = good.pop(0)
            records.append((event["subject"].encode(), structured_value(event), list(STRUCTURED)))
    records += [(e["subject"].encode(), structured_value(e), list(STRUCTURED)) for e in good]
    for n, event, cls in [
        (len(bad), again, "invalid_transition"),
        (len(bad) + 1, duplicate_id, "conflict"),
    ]:
        value = structured_value(event)
        headers = [*STRUCTURED, ("x-case", str(n).encode())]
        records.append((event["subject"].encode(), value, headers))
        expected[str(n)] = (cls, event["subject"].encode(), value, list(STRUCTURED))
    assert len(expected) >= 50
    produce(kafka_topics.bootstrap, kafka_topics.applications, records)

    url = f"sqlite:///{tmp_path / 'service.db'}"
    env = service_env(
        kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": url, "GOCLUSTER_MAX_RECORD_BYTES": "8192"}
    )
    with ServiceProcess(env, log_dir=tmp_path) as service:
        dlq = read_topics(kafka_topics.bootstrap, [kafka_topics.dlq], len(expected), timeout_s=60)
        changes = read_topics(kafka_topics.bootstrap, [kafka_topics.membership], 8, timeout_s=30)
        assert service.alive, service.tail()
        assert service.terminate() == 0, service.tail()

    by_case = {header(r, "x-case"): r for r in dlq}
    assert len(dlq) == len(by_case) == len(expected), sorted(by_case, key=str)
    for case, (cls, key, value, headers) in expected.items():
        record = by_case[case]
        assert header(record, "error.class") == cls, (case, header(record, "error.message"))
        assert (record.key, record.value) == (key, value), case
        assert list(record.headers[: len(headers)]) == headers, case
        assert header(record, "original.topic") == kafka_topics.applications
        assert header(record, "error.message")
    outcomes = inbox_outcomes(url)
    applied = [(source, i) for (source, i), o in outcomes.items() if o == "applied"]
    assert sorted(applied) == sorted((b.PORTAL, e["id"]) for e in applied_events), outcomes
    assert (
        sorted(json.loads(r.value)["data"]["to"] for r in changes)
        == ["admitted"] * 4 + ["applied"] * 4
    )
