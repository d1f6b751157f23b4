"""Prune old rows by the wall clock, every `GOCLUSTER_RETENTION_INTERVAL_S`.

Each round deletes, table by table, in batches of `GOCLUSTER_RETENTION_BATCH`
rows (one short transaction each) until nothing past its horizon is left
(workflows/store/retention.py says what is never deleted).
`gocluster prune` runs one round by hand.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import timedelta

import structlog
from pydantic import TypeAdapter
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from consumers.health import LoopState
from workflows.dates import Clock
from workflows.store.retention import Horizons, prune

log = structlog.get_logger("gocluster.retention")

BEAT_S = 5.0


class RetentionLoop:
    def __init__(
        self,
        db: Engine,
        horizons: Horizons,
        clock: Clock,
        stop: threading.Event,
        *,
        interval_s: float,
        batch: int,
        progress: LoopState | None = None,
    ) -> None:
        self.db = db
        self.horizons = horizons
        self.clock = clock
        self.stop = stop
        self.interval_s = interval_s
        self.batch = batch
        self.progress = progress  # liveness: beats while it waits between rounds too

    def run(self) -> None:
        while not self.stop.is_set():
            self.step()
            self._wait(self.interval_s)

    def _wait(self, seconds: float) -> None:
        """Wait for the next round in short slices, beating after each: a loop that waits
        as scheduled is alive; one stuck in a round stops beating."""
        remaining = seconds
        while remaining > 0 and not self.stop.is_set():
            if self.progress is not None:
                self.progress.beat()
            self.stop.wait(min(remaining, BEAT_S))
            remaining -= BEAT_S

    def step(self) -> Mapping[str, int | None]:
        try:
            deleted = prune(
                self.db, self.horizons, self.clock.now(), batch=self.batch, stop=self.stop
            )
        except SQLAlchemyError as exc:
            log.error(
                "database unavailable for retention; next round later",
                error=str(exc).splitlines()[0],
                retry_in_s=self.interval_s,
            )
            return {}
        if any(deleted.values()):
            log.info("old rows pruned", **{t: n for t, n in deleted.items() if n})
        return deleted


def report(deleted: Mapping[str, int | None], horizons: Horizons, *, dry_run: bool) -> list[str]:
    """One line per table for `gocluster prune`."""
    lines = []
    for table, rows in deleted.items():
        horizon = horizons.of(table)
        if rows is None or horizon is None:
            lines.append(f"{table}: kept (GOCLUSTER_RETENTION_{table.upper()} is not set)")
            continue
        done = "would be deleted" if dry_run else "deleted"
        lines.append(f"{table}: {rows} rows {done} (older than {_iso(horizon)})")
    return lines


def _iso(horizon: timedelta) -> str:
    return str(TypeAdapter(timedelta).dump_python(horizon, mode="json"))
