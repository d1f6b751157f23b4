"""What a measurement ran on: the benchmarks and the reliability campaign both put it in
their results, because a figure means little without the machine and the code behind it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["code_digest", "machine"]

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """Python, platform, CPUs, the load average (the noise from neighbours), the code."""
    versions = {}
    for package in ("kafka-python", "SQLAlchemy", "psycopg", "python-statemachine", "structlog"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "code_digest": code_digest(),
        "packages": versions,
    }


def code_digest() -> str:
    """A fingerprint of the measured source (workflows, consumers, schemas): the tree is
    not always committed when a measurement runs, so a commit id alone would not say."""
    digest = hashlib.sha256()
    for package in ("workflows", "consumers", "schemas"):
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
