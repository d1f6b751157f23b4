"""The programme office's command line and HTTP API on the known story, SQLite and PostgreSQL.

One database and one `gocluster serve` per backend for the module: the CLI
and the server read the same rows, so their figures must agree exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from icalendar import Calendar

from tests.dbutil import sqlite_file_url
from tests.office_support import (
    BY_LABEL,
    BY_STATE,
    DEFAULT_DEADLINES,
    IN_BREACH,
    TODAY,
    get_json,
    load_story,
    office_env,
    office_server,
)
from tests.service_process import run_cli

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@pytest.fixture(scope="module")
def story_url(office_story_url: str) -> str:
    return office_story_url


@pytest.fixture(scope="module")
def base(story_url: str) -> Iterator[str]:
    with office_server(story_url) as url:
        yield url


def cli_json(url: str, *args: str) -> Any:
    done = run_cli([*args, "--json", "--today", TODAY], office_env(url))
    return json.loads(done.stdout)


def test_cli_and_api_agree_on_clusters_and_deadlines(story_url: str, base: str) -> None:
    pairs = [
        (("clusters",), "/api/clusters", {}),
        (("clusters", "--state", "in_breach"), "/api/clusters", {"state": "in_breach"}),
        (
            ("clusters", "--state", "admitted", "--state", "withdrawn", "--label", "bronze"),
            "/api/clusters",
            {"state": ["admitted", "withdrawn"], "label": "bronze"},
        ),
        (("clusters", "--label", "gold"), "/api/clusters", {"label": "gold"}),
        (("deadlines",), "/api/deadlines", {}),
        (
            ("deadlines", "--from", "2026-12-01", "--until", "2026-12-31"),
            "/api/deadlines",
            {"from": "2026-12-01", "until": "2026-12-31"},
        ),
    ]
    for args, path, params in pairs:
        from_cli = cli_json(story_url, *args)
        assert from_cli, f"{args} found nothing: the comparison would be empty"
        assert from_cli == get_json(base, path, **params), f"{args} vs {path} {params}"


def test_the_three_questions_have_the_known_answers(story_url: str, base: str) -> None:
    # Which clusters are in breach?
    breach = get_json(base, "/api/clusters", state="in_breach")
    assert {c["cluster_id"] for c in breach} == IN_BREACH
    assert all(c["next_deadline"]["status"] == "breached" for c in breach)
    # What falls due next month (December 2026)?
    december = get_json(base, "/api/deadlines", **{"from": "2026-12-01", "until": "2026-12-31"})
    assert [(d["cluster_id"], d["obligation"], d["due_on"]) for d in december] == [
        ("agrar-digital", "bronze_interview", "2026-12-01")
    ]
    # Which labels hold, and until when?
    held = {
        (c["cluster_id"], lb["level"], lb["valid_until"])
        for c in get_json(base, "/api/clusters")
        for lb in c["labels"]
        if lb["status"] == "valid"
    }
    assert ("kunststoff-sachsen", "gold", "2026-12-31") in held
    assert ("medtech-rhein", "bronze", "2028-08-01") in held
    assert sum(1 for _, level, _ in held if level == "bronze") == BY_LABEL["bronze"]


def test_default_window_is_90_days_and_includes_breached_obligations(base: str) -> None:
    found = get_json(base, "/api/deadlines")
    assert [
        (d["cluster_id"], d["obligation"], d["due_on"], d["status"], d["days_left"]) for d in found
    ] == DEFAULT_DEADLINES


def test_label_statuses_show_superseded_and_expired_labels(base: str) -> None:
    medtech = get_json(base, "/api/clusters/medtech-rhein")
    assert [(lb["level"], lb["status"], lb["renewal"]) for lb in medtech["labels"]] == [
        ("bronze", "superseded", False),
        ("silver", "valid", False),
        ("bronze", "valid", True),
    ]
    photonik = get_json(base, "/api/clusters/photonik-jena")
    assert {lb["level"]: lb["status"] for lb in photonik["labels"]} == {
        "bronze": "expired",
        "silver": "valid",
    }
    entry = get_json(base, "/api/clusters/kunststoff-sachsen")["labels"]
    assert entry == [
        {
            "level": "gold",
            "awarded_on": None,
            "valid_until": "2026-12-31",
            "status": "valid",
            "renewal": False,
            "interview_id": None,
        }
    ]


def test_cluster_detail_has_history_timers_and_parked_events(base: str) -> None:
    quanten = get_json(base, "/api/clusters/quanten-berlin")
    assert quanten["state"] == "applied"
    assert [(p["event_id"], p["type"]) for p in quanten["parked"]] == [
        ("bm-2026-2268", "gocluster.interview.scheduled")
    ]
    wasserstoff = get_json(base, "/api/clusters/wasserstoff-nord")
    moves = [(h["from_state"], h["to_state"]) for h in wasserstoff["history"]]
    assert ("admitted", "in_breach") in moves
    assert [t["kind"] for t in wasserstoff["timers"]] == ["label_expiry"]
    assert [(o["obligation"], o["status"]) for o in wasserstoff["obligations"]] == [
        ("bronze_interview", "met"),
        ("silver_label", "breached"),
    ]


def test_overview_figures_match_the_lists(base: str) -> None:
    overview = get_json(base, "/api/overview")
    assert overview["today"] == TODAY
    assert overview["clusters"] == len(get_json(base, "/api/clusters")) == 11
    assert overview["by_state"] == BY_STATE | {"excluded": 0}
    assert overview["by_label"] == BY_LABEL
    assert {d["cluster_id"] for d in overview["breaches"]} == IN_BREACH
    assert [d["cluster_id"] for d in overview["due_30_days"]] == ["agrar-digital"]
    assert [d["cluster_id"] for d in overview["due_90_days"]] == [
        "agrar-digital",
        "kreislauf-hessen",
    ]
    assert [(e["cluster_id"], e["level"]) for e in overview["expiring_labels"]] == [
        ("wasserstoff-nord", "bronze"),
        ("kunststoff-sachsen", "gold"),
    ]


def test_every_timestamp_in_the_json_is_rfc3339(story_url: str, base: str) -> None:
    documents = [
        cli_json(story_url, "clusters"),
        cli_json(story_url, "deadlines"),
        *(get_json(base, f"/api/clusters/{cid}") for cid in ("wasserstoff-nord", "quanten-berlin")),
        get_json(base, "/api/overview"),
    ]
    instants, days = 0, 0
    for key, value in (kv for doc in documents for kv in _walk(doc)):
        if key in {"at", "updated_at", "due_at", "effective_at", "parked_at"}:
            assert isinstance(value, str), f"{key}: {value!r}"
            assert RFC3339.match(value), f"{key}: {value!r}"
            instants += 1
        elif key in {"due_on", "valid_until", "admitted_on", "today"} and value is not None:
            assert FULL_DATE.match(value), f"{key}: {value!r}"
            assert date.fromisoformat(value), f"{key}: {value!r}"
            days += 1
    assert instants > 20
    assert days > 20


def test_ics_feed_parses_and_keeps_its_uids(story_url: str, base: str) -> None:
    deadlines = get_json(base, "/api/deadlines")
    response = httpx.get(f"{base}/api/deadlines.ics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/calendar")
    events = Calendar.from_ical(response.content).walk("VEVENT")
    assert [str(e["uid"]) for e in events] == [f"{d['uid']}@gocluster" for d in deadlines]
    assert [e.decoded("dtstart").isoformat() for e in events] == [d["due_on"] for d in deadlines]
    assert "Fristverstoß" in str(events[0]["summary"])  # German by default, like the dashboard
    again = Calendar.from_ical(httpx.get(f"{base}/api/deadlines.ics", timeout=30).content)
    from_cli = run_cli(["deadlines", "--ics", "--today", TODAY], office_env(story_url))
    for other in (again, Calendar.from_ical(from_cli.stdout.encode())):
        assert [str(e["uid"]) for e in other.walk("VEVENT")] == [str(e["uid"]) for e in events]


def test_ics_uids_are_the_same_after_a_replay_into_a_new_database(
    tmp_path: Path, base: str
) -> None:
    url = sqlite_file_url(tmp_path)
    load_story(url)
    done = run_cli(["deadlines", "--ics", "--today", TODAY], office_env(url))
    fresh = [str(e["uid"]) for e in Calendar.from_ical(done.stdout.encode()).walk("VEVENT")]
    served = Calendar.from_ical(httpx.get(f"{base}/api/deadlines.ics", timeout=30).content)
    assert fresh == [str(e["uid"]) for e in served.walk("VEVENT")]
    assert len(fresh) == len(DEFAULT_DEADLINES)


def test_bad_requests_get_clear_answers(base: str) -> None:
    missing = httpx.get(f"{base}/api/clusters/no-such-cluster", timeout=30)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no cluster 'no-such-cluster'"}
    backwards = httpx.get(
        f"{base}/api/deadlines", params={"from": "2026-12-31", "until": "2026-12-01"}, timeout=30
    )
    assert backwards.status_code == 422
    assert "ends (2026-12-01) before it starts (2026-12-31)" in backwards.text
    assert httpx.get(f"{base}/api/clusters?state=dormant", timeout=30).status_code == 422
    assert httpx.post(f"{base}/api/clusters", timeout=30).status_code == 405  # read-only


def test_healthz_and_openapi_answer(base: str) -> None:
    assert get_json(base, "/healthz") == {"status": "ok", "database": "ok"}
    paths = set(get_json(base, "/openapi.json")["paths"])
    assert paths == {
        "/healthz",
        "/api/overview",
        "/api/clusters",
        "/api/clusters/{cluster_id}",
        "/api/deadlines",
        "/api/deadlines.ics",
        "/api/rejections",
    }


def test_cli_tables_are_readable(story_url: str) -> None:
    env = office_env(story_url)
    clusters = run_cli(["clusters", "--today", TODAY], env).stdout.splitlines()
    assert clusters[0].split() == [
        "CLUSTER",
        "NAME",
        "STATE",
        "VALID",
        "LABELS",
        "NEXT",
        "DEADLINE",
    ]
    row = next(line for line in clusters if line.startswith("kunststoff-sachsen"))
    assert "admitted" in row
    assert "gold until 2026-12-31" in row
    assert clusters[-1] == "11 clusters"
    deadlines = run_cli(["deadlines", "--today", TODAY], env).stdout.splitlines()
    assert deadlines[2].split()[:4] == ["2026-08-16", "-92", "breached", "luftfahrt-bremen"]
    assert deadlines[-1] == "4 open deadlines"


def test_cli_refuses_a_backwards_window_in_one_line(story_url: str) -> None:
    done = run_cli(
        ["deadlines", "--from", "2026-12-31", "--until", "2026-12-01"],
        office_env(story_url),
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: the window ends (2026-12-01) before it starts (2026-12-31)"
    )
    assert "Traceback" not in done.stderr


def _walk(doc: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(doc, list):
        for item in doc:
            yield from _walk(item)
