"""The programme office's known story and a live `gocluster serve` for its tests.

The story is the two sample files (Cluster Automotive and the programme
office's ten clusters) replayed by the real CLI and ticked to 2026-11-16;
every view is taken "as of" that day, so the figures do not depend on the
date the tests run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.service_process import ServiceProcess, migrate, run_cli, service_env

SAMPLES = Path(__file__).resolve().parent.parent / "workflows" / "samples"
STORY_FILES = (SAMPLES / "cluster_automotive.jsonl", SAMPLES / "programme_office.jsonl")
STORY_NOW = "2026-11-16T00:00:00Z"
TODAY = "2026-11-16"

# What the story holds on TODAY, worked out by hand from the sample files.
IN_BREACH = {"luftfahrt-bremen", "wasserstoff-nord"}
BY_STATE = {"applied": 1, "admitted": 6, "in_breach": 2, "rejected": 1, "withdrawn": 1}
BY_LABEL = {"bronze": 5, "silver": 2, "gold": 1}
DEFAULT_DEADLINES = [  # the 90 days from TODAY, overdue ones first
    ("luftfahrt-bremen", "bronze_interview", "2026-08-16", "breached", -92),
    ("wasserstoff-nord", "silver_label", "2026-09-02", "breached", -75),
    ("agrar-digital", "bronze_interview", "2026-12-01", "open", 15),
    ("kreislauf-hessen", "silver_label", "2027-01-27", "open", 72),
]


def load_story(url: str) -> None:
    """Replay the sample files with `gocluster replay`, as a programme officer's admin would."""
    if not url.startswith("sqlite"):
        migrate(url)
    env = service_env({"GOCLUSTER_DATABASE_URL": url})
    for number, path in enumerate(STORY_FILES, start=1):
        last = number == len(STORY_FILES)
        run_cli(["replay", str(path), *(["--now", STORY_NOW] if last else [])], env)


def office_env(url: str, **extra: str) -> dict[str, str]:
    return service_env({"GOCLUSTER_DATABASE_URL": url}, extra)


@contextlib.contextmanager
def office_server(
    url: str, env: Mapping[str, str] | None = None, today: str = TODAY
) -> Iterator[str]:
    """`gocluster serve` on a free loopback port; yields its base URL (no trailing slash)."""
    process = ServiceProcess(
        dict(env or office_env(url)),
        ["serve", "--host", "127.0.0.1", "--port", "0", "--today", today],
        name="serve",
    )
    with process:
        started = process.wait_for_log("office serving", timeout_s=60)
        try:
            yield str(started["url"]).rstrip("/")
        finally:
            assert process.terminate() == 0, process.tail()


def get_json(base: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{base}{path}", params=params, timeout=30)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:500]}"
    return response.json()
