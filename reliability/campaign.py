"""The whole campaign: one broker and one private PostgreSQL server for every phase, each
phase in turn, and the totals that decide the verdict."""

from __future__ import annotations

import contextlib
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from reliability.adversarial import adversarial_phase
from reliability.broker import broker_phase
from reliability.clock import clock_phase
from reliability.concurrency import concurrency_phase
from reliability.config import FAULT_PHASES, Config
from reliability.context import Context, say
from reliability.crash import crash_phase
from reliability.parked import parked_phase
from reliability.pause import pause_phase
from reliability.private_postgres import PrivatePostgres
from reliability.readonly import readonly_phase
from reliability.soak import soak_phase
from tests.brokers import APACHE, make_broker
from tests.machine import machine

__all__ = ["PHASE_RUNNERS", "campaign_context", "run_campaign", "totals"]

PHASE_RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "crash": crash_phase,
    "broker": broker_phase,
    "concurrency": concurrency_phase,
    "pause": pause_phase,
    "readonly": readonly_phase,
    "adversarial": adversarial_phase,
    "clock": clock_phase,
    "parked": parked_phase,
    "soak": soak_phase,
}


@contextlib.contextmanager
def campaign_context(cfg: Config, work: Path) -> Any:
    """Apache Kafka and (for the postgres backend) a private PostgreSQL server, started
    for the campaign and removed after it; yields the Context and what they are."""
    log_dir = work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(make_broker(log_dir / "broker", APACHE))
        servers = {"broker": f"{broker.name} {getattr(broker, 'version', '')}".strip()}
        pg = None
        if cfg.backend == "postgres":
            pg = stack.enter_context(PrivatePostgres(work / "postgres"))
            servers["postgres"] = server_version(pg)
        yield Context(cfg, work, broker.bootstrap, pg), servers


def run_campaign(cfg: Config, work: Path) -> dict[str, Any]:
    """Every phase in `cfg.phases`; returns the JSON result (also when a phase failed)."""
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "campaign": "reliability: crash, dependency, pause, clock, size and bad-input faults",
        "command": cfg.command,
        "started": started.isoformat(timespec="seconds"),
        "config": asdict(cfg),
        "machine": machine(),
        "phases": {},
    }
    with campaign_context(cfg, work) as (ctx, servers):
        result["machine"] |= servers
        for name in cfg.phases:
            result["phases"][name] = run_phase(name, ctx)
        result["faults"] = ctx.faults
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["duration_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    result["totals"] = totals(cfg, result)
    return result


def run_phase(name: str, ctx: Context) -> dict[str, Any]:
    """One phase; an exception is its result (reported, and the campaign fails)."""
    try:
        return PHASE_RUNNERS[name](ctx)
    except Exception as exc:
        say(f"{name}: FAILED: {exc!r}\n{traceback.format_exc()}")
        return {"error": f"{type(exc).__name__}: {exc}"[:4000]}


def totals(cfg: Config, result: dict[str, Any]) -> dict[str, Any]:
    phases = result["phases"]
    ran = [p for p in phases.values() if "skipped" not in p]
    faults = result.get("faults", [])
    kills = [f for f in faults if f["kind"] == "SIGKILL"]
    problems = [f"{name}: {p['error']}" for name, p in phases.items() if "error" in p]
    for name, phase in phases.items():
        for code_of, code in phase.get("exit_codes", {}).items():
            if code != 0:
                problems.append(f"{name}: {code_of} exited {code} on SIGTERM")
        if phase.get("crashes"):
            problems.append(f"{name}: {len(phase['crashes'])} unexpected exits")
        if name in FAULT_PHASES and phase.get("passed") is False:
            problems.append(phase["summary"])
    for fault in faults:
        if fault.get("processes_survived") is False or fault.get("processes_alive") is False:
            problems.append(f"fault {fault['n']} ({fault['kind']}): a process died")
        if fault.get("service_never_restarted") is False:
            problems.append(f"fault {fault['n']} ({fault['kind']}): the service did not survive")
    if "crash" in phases and len(kills) < cfg.kills:
        problems.append(f"{len(kills)} SIGKILLs landed, {cfg.kills} planned")
    figures = {
        key: sum(int(p.get(key, 0) or 0) for p in ran)
        for key in ("lost", "duplicated", "mismatched", "unexpected", "lost_updates")
    }
    problems += [f"{v} {k}" for k, v in figures.items() if v]
    events = sum(int(p.get("stream", {}).get("events", p.get("events", 0)) or 0) for p in ran)
    return {
        "events": events,
        "records": sum(
            int(p.get("stream", {}).get("records", p.get("records", 0)) or 0) for p in ran
        ),
        "runs": sum(int(p.get("runs", 0) or 0) for p in ran),
        "kills": len(kills),
        "faults": len(faults),
        "faults_by_kind": dict(Counter(f["kind"] for f in faults)),
        **figures,
        "fault_phases": {
            name: bool(p.get("passed")) for name, p in phases.items() if name in FAULT_PHASES
        },
        "problems": problems,
        "passed": not problems,
    }


def server_version(pg: PrivatePostgres) -> str | None:
    with psycopg.connect(pg.libpq("postgres")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else None
