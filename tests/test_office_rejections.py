"""`/api/rejections` shows what the running service sent to the DLQ from Apache Kafka input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests import stories
from tests.kafka_fixtures import KafkaTopics, produce
from tests.office_support import SAMPLES, get_json, office_env, office_server
from tests.service_process import ServiceProcess, db_scalar, migrate, service_env, wait_until
from workflows.store.tables import outbox

pytestmark = pytest.mark.kafka


def test_rejections_show_class_message_event_and_origin(
    kafka_topics: KafkaTopics, sqlite_url: str, tmp_path: Path
) -> None:
    lines = (SAMPLES / "cluster_automotive.jsonl").read_text("utf-8").splitlines()
    submitted = json.loads(lines[0])
    wrong = json.loads(lines[1])  # the assessment, with a criterion that is not a boolean
    wrong["data"]["criteria"]["visibility_and_impact"] = "yes"
    produce(
        kafka_topics.bootstrap,
        kafka_topics.applications,
        [
            stories.structured_record(submitted),
            (b"cluster-automotive", b"{not json", [("content-type", b"application/json")]),
            stories.binary_record(wrong),
        ],
    )
    env = service_env(kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": sqlite_url})
    migrate(sqlite_url)  # so the probe below can count before the service has started
    dlq_rows = select(func.count()).select_from(outbox).where(outbox.c.stream == "dlq")
    with ServiceProcess(env, ["run", "--clock", "event"], name="service", log_dir=tmp_path):
        wait_until(lambda: db_scalar(sqlite_url, dlq_rows) == 2, 90, "two DLQ rows")

    with office_server(sqlite_url, office_env(sqlite_url)) as base:
        found = get_json(base, "/api/rejections")
        overview = get_json(base, "/api/overview")
        page = get_json(base, "/api/rejections", limit=1)

    assert overview["rejections"] == 2
    assert [r["seq"] for r in found] == sorted((r["seq"] for r in found), reverse=True)
    assert page == found[:1]
    by_class = {r["error_class"]: r for r in found}
    assert set(by_class) == {"decode", "schema"}
    schema = by_class["schema"]
    assert "criteria.visibility_and_impact" in schema["error_message"]
    assert (schema["event_id"], schema["event_type"], schema["cluster_id"]) == (
        wrong["id"],
        "gocluster.application.assessed",
        "cluster-automotive",
    )
    for rejection in found:
        assert rejection["topic"] == kafka_topics.applications
        assert isinstance(rejection["partition"], int)
        assert isinstance(rejection["offset"], int)
        assert rejection["error_message"]
    assert by_class["decode"]["event_id"] is None  # the record never was an event
