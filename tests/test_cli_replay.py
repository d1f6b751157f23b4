"""`gocluster replay`, `tick`, `show` and `db upgrade` as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.validate import validate_output

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "workflows" / "samples" / "cluster_automotive.jsonl"
GOLDEN = ROOT / "tests" / "golden" / "cluster_automotive.jsonl"
GOCLUSTER = [sys.executable, "-m", "consumers.cli"]


def gocluster(
    db_url: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOCLUSTER_")}
    env["GOCLUSTER_DATABASE_URL"] = db_url
    return subprocess.run(
        [*GOCLUSTER, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def test_replay_of_the_sample_story_prints_exactly_the_expected_events(sqlite_url: str) -> None:
    done = gocluster(sqlite_url, "replay", str(SAMPLE), "--now", "2027-09-10T00:00:00Z")

    assert done.returncode == 0, done.stderr
    assert done.stdout == GOLDEN.read_text("utf-8")
    events = [json.loads(line) for line in done.stdout.splitlines()]
    summary = [(e["type"].removeprefix("gocluster."), e["data"]) for e in events]
    assert summary[2] == (
        "label.awarded",
        {
            "cluster_id": "cluster-automotive",
            "level": "bronze",
            "awarded_on": "2025-11-20",
            "valid_until": "2027-11-20",
            "interview_id": "ecei-bm-2025-117",
            "renewal": False,
            "cause_id": "bm-2025-1342",
        },
    )
    assert [(t, d.get("days_left")) for t, d in summary[3:5]] == [
        ("deadline.approaching", 90),
        ("deadline.approaching", 30),
    ]
    assert summary[5][0] == "deadline.breached"
    assert summary[5][1]["obligation"] == "silver_label"
    assert summary[5][1]["due_on"] == "2027-09-04"
    assert summary[6] == (
        "membership.changed",
        {
            "cluster_id": "cluster-automotive",
            "from": "admitted",
            "to": "in_breach",
            "cause_id": summary[5][1]["cause_id"],
        },
    )
    for event in events:
        validate_output(event)


def test_replaying_the_same_file_again_changes_nothing(sqlite_url: str) -> None:
    first = gocluster(sqlite_url, "replay", str(SAMPLE))
    again = gocluster(sqlite_url, "replay", str(SAMPLE))

    assert first.returncode == again.returncode == 0
    assert len(first.stdout.splitlines()) == 3
    assert again.stdout == ""
    assert '"duplicates": 4' in again.stderr


def test_bad_lines_go_to_the_dlq_file_with_their_class_and_processing_goes_on(
    sqlite_url: str, tmp_path: Path
) -> None:
    lines = SAMPLE.read_text("utf-8").splitlines()
    admitted = json.loads(lines[1])
    unknown = json.loads(lines[0]) | {"id": "x-1", "type": "gocluster.application.teleported"}
    invalid = json.loads(lines[0]) | {"id": "x-2"}
    invalid["data"] = invalid["data"] | {"federal_state": "Bavaria"}
    again = admitted | {"id": "x-3"}  # a second assessment of an admitted cluster
    text = (
        "\n".join(
            [
                lines[0],
                "{this is not json",
                lines[1],
                json.dumps(unknown),
                json.dumps(invalid),
                json.dumps(again),
                *lines[2:],
            ]
        )
        + "\n"
    )
    dlq = tmp_path / "dlq.jsonl"

    done = gocluster(sqlite_url, "replay", "-", "--dlq", str(dlq), stdin=text)

    assert done.returncode == 0, done.stderr
    rejected = [json.loads(line) for line in dlq.read_text("utf-8").splitlines()]
    assert [(r["line"], r["error_class"]) for r in rejected] == [
        (2, "decode"),
        (4, "unknown_type"),
        (5, "schema"),
        (6, "invalid_transition"),
    ]
    assert "federal_state" in rejected[2]["error_message"]
    assert rejected[0]["text"] == "{this is not json"
    types = [json.loads(line)["type"] for line in done.stdout.splitlines()]
    assert types.count("gocluster.label.awarded") == 1


def test_tick_fires_due_timers_once_and_show_reports_the_breach(sqlite_url: str) -> None:
    assert gocluster(sqlite_url, "replay", str(SAMPLE)).returncode == 0

    first = gocluster(sqlite_url, "tick", "--now", "2027-09-10T00:00:00Z", "--no-publish")
    second = gocluster(sqlite_url, "tick", "--now", "2027-09-10T00:00:00Z", "--no-publish")
    shown = gocluster(sqlite_url, "show", "cluster-automotive")

    assert first.returncode == second.returncode == shown.returncode == 0
    assert '"timers_fired": 3' in first.stderr
    assert '"timers_fired": 0' in second.stderr
    assert "in_breach" in shown.stdout
    assert "silver_label      due 2027-09-04  [breached]" in shown.stdout
    assert "bronze  awarded 2025-11-20, valid until 2027-11-20" in shown.stdout


def test_show_names_an_unknown_cluster_clearly(sqlite_url: str) -> None:
    done = gocluster(sqlite_url, "show", "no-such-cluster")

    assert done.returncode == 1
    assert "no cluster 'no-such-cluster'" in done.stderr


def test_a_bad_policy_file_stops_the_command_naming_the_key(
    sqlite_url: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        (ROOT / "workflows" / "policy.yaml")
        .read_text()
        .replace("min_indicators: 36", "min_indicators: lots")
    )
    env_db = sqlite_url
    done = subprocess.run(
        [*GOCLUSTER, "replay", str(SAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GOCLUSTER_DATABASE_URL": env_db, "GOCLUSTER_POLICY": str(policy)},
        check=False,
        cwd=ROOT,
    )

    assert done.returncode == 1
    assert "labels.bronze.min_indicators" in done.stderr


@pytest.mark.postgres
def test_postgres_needs_db_upgrade_then_replays_the_story(postgres_url: str) -> None:
    before = gocluster(postgres_url, "replay", str(SAMPLE))
    upgraded = gocluster(postgres_url, "db", "upgrade")
    after = gocluster(postgres_url, "replay", str(SAMPLE), "--now", "2027-09-10T00:00:00Z")

    assert before.returncode == 1
    assert "gocluster db upgrade" in before.stderr
    assert upgraded.returncode == 0, upgraded.stderr
    assert after.returncode == 0, after.stderr
    assert after.stdout == GOLDEN.read_text("utf-8")
