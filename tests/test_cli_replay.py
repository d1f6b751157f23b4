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
    db_url: str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOCLUSTER_")} | (env or {})
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
            "cause_source": "/ecei/benchmarking",
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
            "cause_source": "/gocluster/membership",
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


def submission_line(cluster_id: str, event_id: str, source: str = "/go-cluster/portal") -> str:
    event = json.loads(SAMPLE.read_text("utf-8").splitlines()[0])
    event |= {"id": event_id, "source": source, "subject": cluster_id}
    event["data"] = event["data"] | {"cluster_id": cluster_id}
    return json.dumps(event)


def test_two_records_whose_source_and_id_share_a_separator_do_not_stop_the_replay(
    sqlite_url: str, tmp_path: Path
) -> None:
    """(`/portal\\x1fx`, `1`) and (`/portal`, `x\\x1f1`) are two events; neither may stop
    the 21 innocent records behind them."""
    lines = [
        submission_line("cluster-a", "1", "/portal\x1fx"),
        submission_line("cluster-b", "x\x1f1", "/portal"),
        *(submission_line(f"innocent-{n:02d}", f"app-{n}") for n in range(21)),
    ]
    dlq = tmp_path / "dlq.jsonl"

    done = gocluster(sqlite_url, "replay", "-", "--dlq", str(dlq), stdin="\n".join(lines) + "\n")

    assert done.returncode == 0, done.stderr[-2000:]
    outputs = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(o["subject"] for o in outputs) == sorted(
        ["cluster-b", *(f"innocent-{n:02d}" for n in range(21))]
    )
    assert len({o["id"] for o in outputs}) == len(outputs) == 22
    (rejected,) = [json.loads(line) for line in dlq.read_text("utf-8").splitlines()]
    assert (rejected["line"], rejected["error_class"]) == (1, "schema")
    assert rejected["error_message"].startswith("source: ")


def test_a_line_that_is_not_utf8_goes_to_the_dlq_as_decode_with_its_line_number(
    sqlite_url: str, tmp_path: Path
) -> None:
    lines = SAMPLE.read_bytes().splitlines()
    data = b"\n".join([lines[0], b'{"id": "caf\xe9"}', *lines[1:]]) + b"\n"
    source = tmp_path / "latin1.jsonl"
    source.write_bytes(data)
    dlq = tmp_path / "dlq.jsonl"

    done = gocluster(sqlite_url, "replay", str(source), "--dlq", str(dlq))

    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert len(done.stdout.splitlines()) == 3, "the four good lines still apply"
    (rejected,) = [json.loads(line) for line in dlq.read_text("utf-8").splitlines()]
    assert (rejected["line"], rejected["error_class"]) == (2, "decode")
    assert "UTF-8" in rejected["error_message"]
    assert rejected["text"] == '{"id": "caf\\xe9"}'


def test_replay_refuses_a_line_over_max_record_bytes_as_kafka_input_does(
    sqlite_url: str, tmp_path: Path
) -> None:
    lines = SAMPLE.read_text("utf-8").splitlines()
    padded = json.loads(lines[0]) | {"id": "padded", "padding": "x" * 5000}
    source = tmp_path / "big.jsonl"
    source.write_text("\n".join([json.dumps(padded), *lines]) + "\n", "utf-8")
    dlq = tmp_path / "dlq.jsonl"
    limit = {"GOCLUSTER_MAX_RECORD_BYTES": "4096"}

    done = gocluster(sqlite_url, "replay", str(source), "--dlq", str(dlq), env=limit)

    assert done.returncode == 0, done.stderr[-2000:]
    (rejected,) = [json.loads(line) for line in dlq.read_text("utf-8").splitlines()]
    assert (rejected["line"], rejected["error_class"]) == (1, "decode")
    assert "over the 4096 limit" in rejected["error_message"]
    assert len(done.stdout.splitlines()) == 3


def future_line() -> str:
    """An interview planned by a producer whose clock says 2031."""
    event = json.loads(SAMPLE.read_text("utf-8").splitlines()[2])
    return json.dumps(event | {"id": "bm-from-2031", "time": "2031-03-01T11:00:00+01:00"})


def test_replay_now_is_the_service_clock_so_a_far_future_event_fires_nothing(
    sqlite_url: str,
) -> None:
    text = SAMPLE.read_text("utf-8") + future_line() + "\n"

    done = gocluster(sqlite_url, "replay", "-", "--now", "2027-09-10T00:00:00Z", stdin=text)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == GOLDEN.read_text("utf-8"), "the 2031 event fired nothing"
    assert '"parked": 1' in done.stderr


def test_replay_without_now_measures_the_future_on_the_wall_clock(sqlite_url: str) -> None:
    text = SAMPLE.read_text("utf-8") + future_line() + "\n"

    done = gocluster(sqlite_url, "replay", "-", stdin=text)

    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout.splitlines()) == 3, "the sample story's outputs, nothing from 2031"
    assert '"parked": 1' in done.stderr


def test_tick_applies_a_parked_future_event_before_the_timers_it_precedes(
    sqlite_url: str,
) -> None:
    """Parked by replay (2031 is beyond the wall clock); `tick --now` past its date applies
    it at its own time: the Silver reminders of 2027 fire first, the label expiry of
    2027-11-21 and the breach too, all before the 2031 event, in time order."""
    text = SAMPLE.read_text("utf-8") + future_line() + "\n"
    replayed = gocluster(sqlite_url, "replay", "-", stdin=text)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert len(replayed.stdout.splitlines()) == 3, "parked: nothing of 2031 yet"

    ticked = gocluster(sqlite_url, "tick", "--now", "2031-03-02T00:00:00Z", "--no-publish")
    shown = gocluster(sqlite_url, "show", "cluster-automotive", "--json")

    assert ticked.returncode == 0, ticked.stderr[-2000:]
    history = json.loads(shown.stdout)["history"]
    causes = [h["cause_id"] for h in history]
    assert "bm-from-2031" in causes
    times = [h["at"] for h in history]
    assert times == sorted(times), "the 2031 event took its place after every earlier timer"


def test_replay_and_show_start_without_kafka_the_http_server_or_metrics(sqlite_url: str) -> None:
    """The offline commands load only what they use: start-up is part of a replay's time."""
    heavy = {"kafka", "fastapi", "uvicorn", "prometheus_client"}
    for command in (["replay", str(SAMPLE)], ["show", "cluster-automotive"]):
        # Python lists every module it imports on stderr: "import time: ... | name".
        done = gocluster(sqlite_url, *command, env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {
            line.rsplit("|", 1)[1].strip().split(".")[0]
            for line in done.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "sqlalchemy" in imported  # the listing is there
        assert not heavy & imported, command
