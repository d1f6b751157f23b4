"""`pip install` of the package without the dev extra, then `gocluster demo` in an empty folder.

The demo's broker is part of the product (the `embedded` extra); a plain install
must say exactly that when it is missing. Nothing here uses the repository's
virtualenv or working directory: a fresh one, as a user would have.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

# What a source distribution leaves out; a copy without them builds as a clone would.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "node_modules"
)


def _run(args: list[str], cwd: Path, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOCLUSTER_", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def test_a_plain_install_runs_the_demo_once_the_embedded_extra_is_added(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    empty = tmp_path / "empty"
    empty.mkdir()
    gocluster = str(venv / "bin" / "gocluster")
    # pip builds in the source folder (build/, *.egg-info): a copy keeps the checkout clean.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)

    plain = _run([*pip, str(source)], tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]
    # The programme office's templates and stylesheet are in the package.
    office = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.resources as r, office.pages; "
            "assert r.files('office').joinpath('static/office.css').is_file()",
        ],
        empty,
    )
    assert office.returncode == 0, office.stderr[-2000:]
    missing = _run([gocluster, "demo"], empty, timeout_s=120)
    assert missing.returncode == 1
    assert "pip install 'gocluster[embedded]'" in missing.stderr
    assert "Traceback" not in missing.stderr

    extra = _run([*pip, f"{source}[embedded]"], tmp_path)
    assert extra.returncode == 0, extra.stderr[-2000:]
    demo = _run([gocluster, "demo"], empty, timeout_s=300)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "label.awarded" in demo.stdout
    assert "bronze awarded 2025-11-20, valid until 2027-11-20" in demo.stdout
    assert "deadline.breached" in demo.stdout
    assert "Demo finished" in demo.stdout
    # It left nothing behind in the folder it ran in.
    assert list(empty.iterdir()) == []
