"""Schemathesis against a live `gocluster serve`: the API keeps the promises of its OpenAPI.

Every check (status codes, content types, response schemas, bad input refused,
good input accepted, unsupported methods...) over every operation, with
examples, coverage, fuzzing and stateful phases, on the known story; the run's
JSON report must show no failure and every operation of the document tested
with requests the server accepted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.dbutil import sqlite_file_url
from tests.office_support import load_story, office_server

CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"


def test_schemathesis_finds_no_failure_in_any_operation(tmp_path: Path) -> None:
    url = sqlite_file_url(tmp_path)
    load_story(url)
    report = tmp_path / "schemathesis.json"
    with office_server(url) as base:
        operations = {
            f"{method.upper()} {path}"
            for path, methods in httpx.get(f"{base}/openapi.json", timeout=30)
            .json()["paths"]
            .items()
            for method in methods
        }
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "--config-file",
                str(CONFIG),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                "25",
                "--seed",
                "20261116",
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--report",
                "json",
                "--report-json-path",
                str(report),
            ],
            cwd=tmp_path,  # its cache folder goes there, not into the repository
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    result = json.loads(report.read_text("utf-8"))
    assert result["complete"]
    assert result["failures"] == []
    assert result["errors"] == []
    assert result["operations"]["tested"] == result["operations"]["total"] == len(operations) == 7
    assert set(result["valid_rates"]) == operations
    for operation, phases in result["valid_rates"].items():
        accepted = sum(phase["accepted"] for phase in phases.values())
        assert accepted > 0, f"{operation}: no request reached the server's logic"
    assert result["test_cases"]["generated"] > 100
