"""The crash phase's PostgreSQL faults: the server down while the service and the relay
start, and restarted (fast or immediate) mid-stream while the service works. Each
records which processes survived, when input was applied again, and the log lines
that said the database was gone."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from reliability.processes import DEPENDENCY_LOG_EVENTS
from tests.service_process import wait_until

if TYPE_CHECKING:
    from reliability.crash import CrashRun

__all__ = ["restart_postgres", "unreachable_at_start"]


def unreachable_at_start(run: CrashRun, roles: dict[str, list[str]]) -> None:
    """The roles' processes start while PostgreSQL is down: they must wait, say so, go on."""
    ctx = run.ctx
    ctx.pg.stop("fast")
    began = time.monotonic()
    procs = [run.fleet.start(role, args) for role, args in roles.items()]
    event = "database unreachable at start, retrying"
    for proc in procs:
        wait_until(lambda p=proc: p.n(event) >= 2 or not p.alive, 60, f"{proc.name}: {event}")
    alive = all(p.alive for p in procs)
    ctx.pg.start()
    ctx.record(
        "crash",
        "database unreachable at start",
        target="PostgreSQL",
        down_s=round(time.monotonic() - began, 2),
        processes_alive=alive,
        log_lines={p.name: {event: p.n(event)} for p in procs},
        example=_short_log(procs[0].last.get(event)),
    )


def restart_postgres(run: CrashRun, rng: Any) -> None:
    """Stop PostgreSQL while the service is at work (past its start-up, in the group,
    its timer loop on the database every second): a service still starting up, as
    after a kill just before, would not notice, and the fault would prove nothing."""
    ctx = run.ctx

    def working() -> bool:
        run.fleet.check()
        return bool(run.fleet.procs["service"].partitions())

    wait_until(working, 120, "the service in the group")
    time.sleep(rng.uniform(0.0, 1.0))
    mode = rng.choice(("fast", "immediate"))
    down = round(rng.uniform(2.0, 5.0), 2)
    procs = dict(run.fleet.procs)
    for proc in procs.values():
        proc.scan()
    before = {role: dict(p.events) for role, p in procs.items()}
    inbox = run.probe.inbox() or 0
    ctx.pg.stop(mode)
    time.sleep(down)
    ctx.pg.start()
    started = time.monotonic()
    resumed = None
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: (run.probe.inbox() or 0) > inbox, 90, "input applied again", 0.05)
        resumed = round(time.monotonic() - started, 2)
    time.sleep(1.0)
    survived = all(p.alive for p in procs.values())
    lines = {}
    for role, proc in procs.items():
        proc.scan()
        delta = {
            e: proc.events[e] - before[role].get(e, 0)
            for e in proc.events
            if proc.events[e] > before[role].get(e, 0) and e in DEPENDENCY_LOG_EVENTS
        }
        lines[proc.name] = delta
    run.fleet.check()
    ctx.record(
        "crash",
        "PostgreSQL restart",
        target="PostgreSQL",
        mode=mode,
        down_s=down,
        processes_survived=survived,
        resumed_after_s=resumed,
        log_lines=lines,
    )


def _short_log(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {k: v for k, v in entry.items() if k in ("event", "level", "database", "error")}
