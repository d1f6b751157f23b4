"""The uninterrupted run a phase is compared with: `gocluster replay` and `tick` of the
same input on a fresh SQLite, without Kafka and without faults."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reliability.context import Context
from reliability.snapshot import compare, snapshot
from reliability.stream import Stream
from tests import stories
from tests.service_process import run_cli, service_env

__all__ = ["FAR", "reference_check", "reference_snapshot_run"]

FAR = "2040-01-01T00:00:00+00:00"


def reference_snapshot_run(
    steps: Sequence[tuple[str, Any]], folder: Path, name: str
) -> tuple[str, dict[str, float]]:
    """An uninterrupted run without Kafka on a fresh SQLite: `("replay", events)` and
    `("tick", iso_time)` steps in order, the same CLI code paths as the service.
    Returns the database URL and the seconds each step took."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    env = service_env({"GOCLUSTER_DATABASE_URL": url})
    took: dict[str, float] = {}
    for n, (kind, arg) in enumerate(steps):
        began = time.monotonic()
        if kind == "replay":
            file = stories.write_jsonl(arg, folder / f"{name}-{n}.jsonl")
            run_cli(["replay", str(file)], env, timeout_s=900)
        else:
            run_cli(["tick", "--now", arg, "--no-publish"], env, timeout_s=900)
        took[f"{n}:{kind}"] = round(time.monotonic() - began, 2)
    return url, took


def reference_check(ctx: Context, stream: Stream) -> dict[str, Any]:
    """The uninterrupted run, and a second one with the two input topics interleaved
    differently: they must agree, or the comparison would measure the workload."""
    folder = ctx.work / "reference"
    url, took = reference_snapshot_run([("replay", stream.events), ("tick", FAR)], folder, "ref")
    shuffled = stories.interleave(_as_story(stream.events), ctx.cfg.seed)
    url2, _ = reference_snapshot_run([("replay", shuffled), ("tick", FAR)], folder, "ref2")
    first, second = snapshot(url), snapshot(url2)
    agreement = compare(first, second).to_json()
    if any(agreement[k] for k in ("lost", "duplicated", "mismatched", "unexpected")):
        raise RuntimeError(f"the reference depends on the topic interleaving: {agreement}")
    info = {
        "how": "gocluster replay of the same records in publication order, then "
        f"gocluster tick --now {FAR} --no-publish, on a fresh SQLite",
        "seconds": took,
        "second_interleaving_agrees": True,
        "items": {k: first.count(k) for k in first.items},
    }
    return {"snapshot": first, "info": info}


def _as_story(events: list[dict[str, Any]]) -> stories.Story:
    """Wrap a workload for tests.stories.interleave (which keeps each topic's own order)."""
    clusters = tuple(sorted({e["subject"] for e in events}))
    return stories.Story(tuple(events), clusters, frozenset())
