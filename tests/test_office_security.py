"""`gocluster serve` exposes nothing it should not: loopback or a token, read-only, escaped."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import httpx
import pytest

from consumers.config import Settings
from tests.dbutil import sqlite_file_url
from tests.office_support import load_story, office_env, office_server
from tests.service_process import run_cli

TOKEN = "office-test-token-0123456789"  # noqa: S105 (a test value)
GUARDED = (
    "/",
    "/clusters",
    "/clusters/cluster-automotive",
    "/deadlines",
    "/rejections",
    "/static/office.css",
    "/openapi.json",
    "/api/overview",
    "/api/clusters",
    "/api/clusters/cluster-automotive",
    "/api/deadlines",
    "/api/deadlines.ics",
    "/api/rejections",
)


@pytest.fixture(scope="module")
def story_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = sqlite_file_url(tmp_path_factory.mktemp("security"))
    load_story(url)
    return url


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "office.example.org"])  # noqa: S104
def test_serve_off_loopback_without_a_token_refuses_in_one_line(story_url: str, host: str) -> None:
    done = run_cli(["serve", "--host", host, "--port", "0"], office_env(story_url), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: serving on {host} needs GOCLUSTER_HTTP_TOKEN (clients then send it as a "
        "bearer token); without one, serve binds to loopback only"
    ]


def test_a_short_token_is_refused_naming_the_variable(story_url: str) -> None:
    env = office_env(story_url, GOCLUSTER_HTTP_TOKEN="tooshort")  # noqa: S106
    done = run_cli(["serve", "--port", "0"], env, check=False)
    assert done.returncode == 1
    assert "GOCLUSTER_HTTP_TOKEN" in done.stderr
    assert "tooshort" not in done.stderr
    assert "Traceback" not in done.stderr


def test_the_token_guards_every_route_but_healthz_and_the_published_schemas(
    story_url: str,
) -> None:
    env = office_env(story_url, GOCLUSTER_HTTP_TOKEN=TOKEN)
    basic = base64.b64encode(f"office:{TOKEN}".encode()).decode()
    with office_server(story_url, env) as base, httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/schemas/gocluster.label.awarded.json").status_code == 200
        for path in GUARDED:
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.headers.get_list("www-authenticate") == [
                'Bearer realm="gocluster"',
                'Basic realm="gocluster"',
            ]
            wrong = http.get(path, headers={"Authorization": "Bearer not-the-token-at-all"})
            assert wrong.status_code == 401, path
            bearer = http.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert bearer.status_code == 200, path
            assert http.get(path, headers={"Authorization": f"Basic {basic}"}).status_code == 200


def test_the_token_is_a_secret_in_the_settings() -> None:
    settings = Settings(http_token=TOKEN)
    assert settings.safe_summary()["http_token"] == "***"  # noqa: S105
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)


def test_every_route_is_read_only(story_url: str) -> None:
    with office_server(story_url) as base, httpx.Client(base_url=base, timeout=30) as http:
        for path in ("/", "/clusters", "/api/clusters", "/api/clusters/cluster-automotive"):
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                assert http.request(method, path).status_code == 405, (method, path)


def test_event_text_is_escaped_in_every_page(tmp_path: Path) -> None:
    url = sqlite_file_url(tmp_path)
    hostile = "<script>alert('x')</script>"
    story = tmp_path / "hostile.jsonl"
    event = {
        "specversion": "1.0",
        "id": "portal-hostile-1",
        "source": "/go-cluster/portal",
        "type": "gocluster.application.submitted",
        "subject": "hostile",
        "time": "2026-10-01T09:00:00+02:00",
        "data": {
            "cluster_id": "hostile",
            "cluster_name": hostile,
            "organisation": '"><img src=x onerror=alert(1)>',
            "federal_state": "DE-BY",
        },
    }
    story.write_text(json.dumps(event) + "\n", "utf-8")
    run_cli(["replay", str(story)], office_env(url))
    with office_server(url) as base, httpx.Client(base_url=base, timeout=30) as http:
        for path in ("/clusters", "/clusters/hostile", "/clusters?q=%3Cscript%3E"):
            page = http.get(path).text
            assert "&lt;script&gt;" in page, path
            assert "<script>" not in page, path
            assert "<img" not in page, path
        assert http.get("/api/clusters/hostile").json()["cluster_name"] == hostile


def test_a_taken_port_is_named_in_one_line(story_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(["serve", "--port", str(port)], office_env(story_url), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
