"""External tools the artifact tests run (node, promtool, hadolint, kubectl).

A missing tool is a skip on a laptop and a failure in CI, where
scripts/ensure-test-machine.sh and the dev extra must have installed it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from tests.dbutil import in_ci

REPO = Path(__file__).resolve().parent.parent


def unavailable(message: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"CI is set, so this is an error, not a skip: {message}")
    pytest.skip(message)


def command(name: str, how: str) -> str:
    """The path of `name`: on PATH or beside this interpreter (a dev-extra script)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        unavailable(f"{name} not found ({how})")
    return found


def run(
    argv: list[str], cwd: Path = REPO, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
