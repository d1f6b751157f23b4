"""Redrive end to end: a record DLQ'd by a bug, the fix, the redrive, the effect applied
once; a second redrive has no second effect, because the inbox recognises the event.

The bug is planted in a real `gocluster run` subprocess (tests/planted_bug.py); the fix
is the real `gocluster run`. Apache Kafka and SQLite.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import pytest

from tests import stories
from tests.builders import assessed, bronze, submitted
from tests.kafka_fixtures import KafkaTopics, produce, read_all
from tests.service_process import (
    ServiceProcess,
    decode_output,
    read_topics,
    run_cli,
    service_env,
)

pytestmark = pytest.mark.kafka

CLUSTER = "cluster-redrive"


def test_a_record_dlqd_by_a_bug_is_redriven_after_the_fix_and_applied_once(
    kafka_topics: KafkaTopics, sqlite_url: str, tmp_path: Path
) -> None:
    env = service_env(kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": sqlite_url})
    interview = bronze(date(2025, 11, 20), cluster_id=CLUSTER, event_id="bm-redrive-1")
    # The application first: applied on its own, so the interview meets an admitted cluster
    # (not parked, which would make its failure the admission's).
    produce(
        kafka_topics.bootstrap,
        kafka_topics.applications,
        [
            stories.structured_record(submitted(date(2025, 5, 12), cluster_id=CLUSTER)),
            stories.structured_record(assessed(date(2025, 9, 4), cluster_id=CLUSTER)),
        ],
    )

    # 1. The bug: the interview result makes the handler fail; it goes to the DLQ.
    buggy = ServiceProcess(
        env | {"PLANTED_BUG_EVENT_TYPE": "gocluster.interview.completed"},
        ["run", "--clock", "event"],
        name="buggy",
        log_dir=tmp_path,
        command=[sys.executable, "-m", "tests.planted_bug"],
    )
    with buggy:
        buggy.wait_for_log("event applied", timeout_s=120, count=2)
        produce(kafka_topics.bootstrap, kafka_topics.interviews, [stories.binary_record(interview)])
        line = buggy.wait_for_log("record rejected to DLQ", timeout_s=90)
        assert (line["event_id"], line["cluster_id"]) == ("bm-redrive-1", CLUSTER)
        assert "internal error KeyError" in line["error"]
        assert len(read_all(kafka_topics.bootstrap, kafka_topics.dlq, 1, timeout_s=60)) == 1
        assert buggy.terminate() == 0

    listed = [json.loads(x) for x in run_cli(["dlq", "list", "--json"], env).stdout.splitlines()]
    assert [(r["error_class"], r["event_id"], r["key"]) for r in listed] == [
        ("invalid_transition", "bm-redrive-1", CLUSTER)
    ]
    assert listed[0]["original"].startswith(f"{kafka_topics.interviews}/")

    dry = run_cli(["dlq", "redrive", "--dry-run"], env).stdout
    assert "new to the inbox" in dry
    assert "dry run: 1 of 1 records would be re-published" in dry
    assert len(read_all(kafka_topics.bootstrap, kafka_topics.interviews, 1, settle_s=1)) == 1

    # 2. The fix, 3. the redrive: the original record, as it was, on its original topic.
    with ServiceProcess(env, ["run", "--clock", "event"], name="fixed", log_dir=tmp_path) as svc:
        svc.wait_joined()
        done = run_cli(["dlq", "redrive", "--class", "invalid_transition"], env).stdout
        assert "re-published 1 of 1 records" in done
        applied = svc.wait_for_log("event applied", timeout_s=90)
        assert applied["event_id"] == "bm-redrive-1"
        assert any(o.startswith("gocluster.label.awarded ") for o in applied["outputs"])

        redriven = read_all(kafka_topics.bootstrap, kafka_topics.interviews, 2, settle_s=1)
        assert len(redriven) == 2
        first, again = redriven
        assert (again.key, again.value) == (first.key, first.value)
        assert sorted(again.headers) == sorted(first.headers)

        # 4. Redriven twice: the inbox knows the event; no second effect.
        assert "inbox has it (applied)" in run_cli(["dlq", "redrive", "--dry-run"], env).stdout
        run_cli(["dlq", "redrive"], env)
        svc.wait_for_log("event duplicate", timeout_s=90)
        labels = read_topics(kafka_topics.bootstrap, [kafka_topics.labels], 1, settle_s=3)
        awarded = [decode_output(r) for r in labels]
        assert [(e["type"], e["data"]["cause_id"]) for e in awarded] == [
            ("gocluster.label.awarded", "bm-redrive-1")
        ]
        assert svc.terminate() == 0
