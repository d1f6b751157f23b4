"""`gocluster run` end to end: real broker, real database, real subprocesses.

Input goes in through the input topics (both CloudEvents modes), outputs are
read back from the output topics and the database. Services run with
`--clock event` wherever outputs are compared with expectations: the wall
clock would fire deadlines between two batches of historical events
(CONTRACT.md section 6), making the output depend on processing speed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.validate import validate_output
from tests import stories
from tests.kafka_fixtures import KafkaTopics, produce
from tests.service_process import (
    ServiceProcess,
    decode_output,
    final_state,
    header,
    inbox_count,
    migrate,
    read_topics,
    replay,
    run_cli,
    service_env,
    unique_outputs,
    unsent_count,
    wait_until,
)
from workflows import ids

pytestmark = pytest.mark.kafka

SAMPLE = Path(__file__).resolve().parent.parent / "workflows/samples/cluster_automotive.jsonl"
CLUSTER = "cluster-automotive"
SERVICE = "/gocluster/membership"
PORTAL = "/go-cluster/portal"
ECEI = "/ecei/benchmarking"


# -- helpers ----------------------------------------------------------------------------


def sample_events() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAMPLE.read_text("utf-8").splitlines() if line.strip()]


def publish_story(topics: KafkaTopics, events: list[dict[str, Any]], seed: int | None) -> None:
    """Each event on its input topic; seed None: applications structured, interviews binary."""
    by_topic = {"applications": topics.applications, "interviews": topics.interviews}
    for name, topic in by_topic.items():
        on_topic = [e for e in events if stories.topic_of(e) == name]
        if seed is None:
            mode: stories.Mode = "structured" if name == "applications" else "binary"
            records = [stories.record(e, mode) for e in on_topic]
        else:
            records = list(stories.mixed_records(on_topic, seed))
        produce(topics.bootstrap, topic, records)


def output_records(topics: KafkaTopics, expected: int, settle_s: float = 1.0) -> list[Any]:
    """Every record on the three event output topics (not the DLQ), once `expected` are in."""
    outputs = (topics.labels, topics.deadlines, topics.membership)
    return read_topics(topics.bootstrap, outputs, expected, timeout_s=90, settle_s=settle_s)


def assert_structured_outputs(records: list[Any]) -> None:
    """The contract's output envelope: structured mode, key = cluster id, valid schema."""
    for record in records:
        event = decode_output(record)
        validate_output(event)
        assert header(record, "content-type") == "application/cloudevents+json"
        assert record.key == event["subject"].encode()
        assert event["source"] == SERVICE


# -- 1. the sample story ------------------------------------------------------------------


def test_sample_story_flows_from_input_topics_to_output_topics_and_tick_fires_deadlines(
    kafka_topics: KafkaTopics, db_url: str, tmp_path: Path
) -> None:
    env = service_env(kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": db_url})
    if db_url.startswith("postgresql"):
        run_cli(["db", "upgrade"], env)  # the operator's step; SQLite migrates itself
    publish_story(kafka_topics, sample_events(), seed=None)

    with ServiceProcess(env, name="service", log_dir=tmp_path) as service:
        records = output_records(kafka_topics, expected=3)
        events = {decode_output(r)["id"]: decode_output(r) for r in records}
        assert len(records) == len(events) == 3, [decode_output(r) for r in records]

        submitted = ids.event_key(PORTAL, "portal-2025-0412")
        assessed = ids.event_key(PORTAL, "portal-2025-0977")
        completed = ids.event_key(ECEI, "bm-2025-1342")
        expected: dict[str, tuple[str, str, dict[str, Any]]] = {
            ids.output_id(submitted, 0): (
                "gocluster.membership.changed",
                "2025-05-12T09:30:00+02:00",
                {
                    "from": None,
                    "to": "applied",
                    "cause_id": "portal-2025-0412",
                    "cause_source": PORTAL,
                },
            ),
            ids.output_id(assessed, 0): (
                "gocluster.membership.changed",
                "2025-09-04T00:00:00+02:00",
                {
                    "from": "applied",
                    "to": "admitted",
                    "cause_id": "portal-2025-0977",
                    "cause_source": PORTAL,
                },
            ),
            ids.output_id(completed, 0): (
                "gocluster.label.awarded",
                "2025-11-20T00:00:00+01:00",
                {
                    "level": "bronze",
                    "awarded_on": "2025-11-20",
                    "valid_until": "2027-11-20",
                    "interview_id": "ecei-bm-2025-117",
                    "renewal": False,
                    "cause_id": "bm-2025-1342",
                    "cause_source": ECEI,
                },
            ),
        }
        assert set(events) == set(expected)
        for event_id, (kind, time, data) in expected.items():
            event = events[event_id]
            assert (event["type"], event["subject"], event["time"]) == (kind, CLUSTER, time)
            assert event["data"] == {"cluster_id": CLUSTER, **data}
        by_topic = {r.topic: decode_output(r)["type"] for r in records}
        assert by_topic[kafka_topics.labels] == "gocluster.label.awarded"
        assert by_topic[kafka_topics.membership] == "gocluster.membership.changed"

        # The Silver deadline (admission + 24 months = 2027-09-04) passes unmet.
        run_cli(["tick", "--now", "2027-09-10T00:00:00Z"], env)
        records = output_records(kafka_topics, expected=7)
        assert service.alive
        code = service.terminate()

    assert code == 0
    # On SQLite the tick's relay and the service's may both send the fired events (the
    # advisory lock that elects one relay is PostgreSQL's): same ids, same bytes.
    events = unique_outputs(records)
    assert len(events) == 7
    fired = sorted(
        (e["type"], e["time"], e["data"].get("days_left"), e["data"].get("to"))
        for e in events.values()
        if e["time"] >= "2027"
    )
    assert fired == [
        ("gocluster.deadline.approaching", "2027-06-06T00:00:00+02:00", 90, None),
        ("gocluster.deadline.approaching", "2027-08-05T00:00:00+02:00", 30, None),
        ("gocluster.deadline.breached", "2027-09-05T00:00:00+02:00", None, None),
        ("gocluster.membership.changed", "2027-09-05T00:00:00+02:00", None, "in_breach"),
    ]
    for event in events.values():
        if event["type"].startswith("gocluster.deadline."):
            assert event["data"]["obligation"] == "silver_label"
            assert event["data"]["due_on"] == "2027-09-04"
    assert_structured_outputs(records)
    # The same input replayed offline gives the very same events, ids included.
    offline, _ = replay(sample_events(), tmp_path, now="2027-09-10T00:00:00Z")
    assert {e["id"]: e for e in offline} == events
    assert final_state(db_url)[CLUSTER]["state"] == "in_breach"
    assert inbox_count(db_url) == 4
    assert unsent_count(db_url) == 0


# -- 2. many clusters, both topics, both modes ------------------------------------------------


@pytest.mark.postgres
def test_multi_cluster_story_gives_the_outputs_and_states_of_an_offline_replay(
    kafka_topics: KafkaTopics, postgres_url: str, tmp_path: Path
) -> None:
    """The two input topics interleave in no fixed order, yet the result is fixed.

    `tests/stories.py` explains why: per cluster, the effective times of the
    interview events rise in topic order and no cluster leaves membership, so
    parking restores one sequence of causes per cluster whatever the
    interleaving. So not only the label.awarded set but every output (id and
    content) and every cluster's final state must equal those of an offline
    replay in plain time order, before and after a tick.
    """
    story = stories.generate(clusters=50, seed=11, prefix="mc")
    reference, reference_url = replay(list(story.events), tmp_path / "before")
    migrate(postgres_url)
    env = service_env(kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": postgres_url})
    interviews, applications = story.on("interviews"), story.on("applications")

    with ServiceProcess(env, name="service", log_dir=tmp_path) as service:
        # The worst interleaving: every interview before any application, so
        # every one of them is parked first and applied on admission.
        produce(
            kafka_topics.bootstrap, kafka_topics.interviews, stories.mixed_records(interviews, 3)
        )
        service.wait_for_log("event parked", timeout_s=90, count=len(interviews))
        produce(
            kafka_topics.bootstrap,
            kafka_topics.applications,
            stories.mixed_records(applications, 4),
        )
        wait_until(lambda: inbox_count(postgres_url) == len(story.events), 90, "all events")
        records = output_records(kafka_topics, expected=len(reference))
        assert_same_outputs(records, reference, kafka_topics)
        assert final_state(postgres_url) == final_state(reference_url)
        assert service.count("event applied") == len(story.events)
        assert service.count("record rejected to DLQ") == 0

        now = "2030-01-01T00:00:00Z"
        ticked, ticked_url = replay(list(story.events), tmp_path / "after", now=now)
        assert len(ticked) > len(reference)
        run_cli(["tick", "--now", now], env)
        records = output_records(kafka_topics, expected=len(ticked))
        assert service.terminate() == 0

    assert_same_outputs(records, ticked, kafka_topics)
    assert final_state(postgres_url) == final_state(ticked_url)
    awarded = {e["id"] for e in ticked if e["type"] == "gocluster.label.awarded"}
    assert awarded
    assert awarded <= {decode_output(r)["id"] for r in records}
    assert unsent_count(postgres_url) == 0
    assert_structured_outputs(records)


def assert_same_outputs(
    records: list[Any], reference: list[dict[str, Any]], topics: KafkaTopics
) -> None:
    """Exactly the reference events (no extras, no duplicates), each on its own topic."""
    received = [decode_output(r) for r in records]
    by_id = {e["id"]: e for e in received}
    assert len(by_id) == len(received), "duplicate output ids"
    assert by_id == {e["id"]: e for e in reference}
    topic_of = {"label": topics.labels, "deadline": topics.deadlines}
    for record, event in zip(records, received, strict=True):
        assert record.topic == topic_of.get(event["type"].split(".")[1], topics.membership)


# -- 4. the same event twice -----------------------------------------------------------------


def test_an_event_delivered_twice_in_either_mode_has_one_effect(
    kafka_topics: KafkaTopics, sqlite_url: str, tmp_path: Path
) -> None:
    events = sample_events()
    applications = [e for e in events if stories.topic_of(e) == "applications"]
    interviews = [e for e in events if stories.topic_of(e) == "interviews"]
    env = service_env(kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": sqlite_url})
    bootstrap = kafka_topics.bootstrap
    # Back to back (one batch): structured twice, and structured + binary.
    produce(
        bootstrap,
        kafka_topics.applications,
        [stories.structured_record(e) for e in applications for _ in range(2)],
    )
    produce(
        bootstrap,
        kafka_topics.interviews,
        [stories.record(e, m) for e in interviews for m in ("structured", "binary")],
    )

    with ServiceProcess(env, name="service", log_dir=tmp_path) as service:
        first = output_records(kafka_topics, expected=3)
        service.wait_for_log("event duplicate", count=len(events))
        # Much later (another batch, the inbox in the database): binary, then structured.
        produce(bootstrap, kafka_topics.applications, map(stories.binary_record, applications))
        produce(bootstrap, kafka_topics.interviews, map(stories.structured_record, interviews))
        service.wait_for_log("event duplicate", count=2 * len(events))
        records = output_records(kafka_topics, expected=3, settle_s=2.0)
        dlq = read_topics(bootstrap, [kafka_topics.dlq], 0, timeout_s=5, settle_s=0.5)
        assert service.terminate() == 0

    assert [decode_output(r) for r in records] == [decode_output(r) for r in first]
    assert sorted(decode_output(r)["type"] for r in records) == [
        "gocluster.label.awarded",
        "gocluster.membership.changed",
        "gocluster.membership.changed",
    ]
    assert dlq == []
    assert service.count("event applied") == len(events)
    assert inbox_count(sqlite_url) == len(events)


# -- 6. the dead-letter queue ----------------------------------------------------------------

STRUCTURED = [("content-type", b"application/cloudevents+json")]


def _event(cluster: str, kind: str, event_id: str, data: dict[str, Any]) -> dict[str, Any]:
    source = ECEI if kind.startswith("gocluster.interview.") else PORTAL
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": kind,
        "subject": cluster,
        "time": "2025-09-04T16:10:00+02:00",
        "datacontenttype": "application/json",
        "data": {"cluster_id": cluster, **data},
    }


def test_bad_records_go_to_the_dlq_unchanged_with_error_headers_and_good_ones_apply(
    kafka_topics: KafkaTopics, sqlite_url: str, tmp_path: Path
) -> None:
    submitted, assessed, scheduled, completed = sample_events()
    other = _event(
        "cluster-other",
        "gocluster.application.submitted",
        "portal-other-1",
        {"cluster_name": "Other", "organisation": "Other e.V.", "federal_state": "DE-HE"},
    )
    broken_schema = {**other, "id": "portal-bad-schema"}
    broken_schema["data"] = {**other["data"], "federal_state": "XX-YY"}
    unknown = {**other, "id": "portal-unknown", "type": "gocluster.application.teleported"}
    wrong_key = {**other, "id": "portal-wrong-key"}
    reassessed = {**assessed, "id": "portal-2025-0999"}  # already admitted: impossible
    bad = {
        "decode": (b"cluster-automotive", b"{not json at all", STRUCTURED),
        "unknown_type": stories.structured_record(unknown),
        "schema": stories.structured_record(broken_schema),
        "conflict": (b"cluster-automotive", stories.structured_record(wrong_key)[1], STRUCTURED),
        "invalid_transition": stories.binary_record(reassessed),
    }
    bad_binary = (
        b"cluster-automotive",
        b"\xff\xfe not utf-8",
        [
            ("ce_specversion", b"1.0"),
            ("traceparent", b"00-abc-01"),
            ("content-type", b"application/json"),
        ],
    )
    produce(
        kafka_topics.bootstrap,
        kafka_topics.applications,
        [
            stories.structured_record(submitted),
            bad["decode"],
            stories.structured_record(assessed),
            bad["unknown_type"],
            bad["schema"],
            bad["conflict"],
            bad["invalid_transition"],
            stories.structured_record(other),
        ],
    )
    produce(
        kafka_topics.bootstrap,
        kafka_topics.interviews,
        [stories.binary_record(scheduled), bad_binary, stories.binary_record(completed)],
    )
    env = service_env(kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": sqlite_url})

    with ServiceProcess(env, name="service", log_dir=tmp_path) as service:
        dlq = read_topics(kafka_topics.bootstrap, [kafka_topics.dlq], 6, timeout_s=90)
        outputs = output_records(kafka_topics, expected=4)
        assert service.terminate() == 0

    inputs = read_topics(kafka_topics.bootstrap, kafka_topics.inputs, 11, timeout_s=10, settle_s=0)
    by_value = {r.value: r for r in inputs}
    assert len(dlq) == 6
    classes = {}
    for record in dlq:
        original = by_value[record.value]
        assert record.key == original.key
        n = len(original.headers)
        assert record.headers[:n] == original.headers  # the original headers, unchanged
        assert [k for k, _ in record.headers[n:]] == [
            "error.class",
            "error.message",
            "original.topic",
            "original.partition",
            "original.offset",
        ]
        assert header(record, "original.topic") == original.topic
        assert header(record, "original.partition") == str(original.partition)
        assert header(record, "original.offset") == str(original.offset)
        assert header(record, "error.message")
        classes[record.value] = header(record, "error.class")
    expected = {value: error for error, (_, value, _) in bad.items()} | {bad_binary[1]: "decode"}
    assert classes == expected

    # The good records around the bad ones were applied.
    applied = sorted(
        (decode_output(r)["subject"], decode_output(r)["type"], decode_output(r)["data"].get("to"))
        for r in outputs
    )
    assert applied == [
        ("cluster-automotive", "gocluster.label.awarded", None),
        ("cluster-automotive", "gocluster.membership.changed", "admitted"),
        ("cluster-automotive", "gocluster.membership.changed", "applied"),
        ("cluster-other", "gocluster.membership.changed", "applied"),
    ]
    states = final_state(sqlite_url)
    assert states["cluster-automotive"]["state"] == "admitted"
    assert states["cluster-other"]["state"] == "applied"
