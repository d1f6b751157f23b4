"""The pause phase: SIGSTOP, not SIGKILL. A stopped process keeps its sockets, its database
sessions and its locks, and comes back later believing it still owns what it had.

idle member
    Two `run --only consumer` members share six input partitions; one is stopped
    while idle, past its session timeout. The other must take its partitions and
    apply what arrives meanwhile within the bound.
member in its transaction
    The same, but the member is stopped while it is inside its batch transaction
    (pg_stat_activity shows its session `idle in transaction` with row locks, with
    GOCLUSTER_KAFKA_MAX_POLL_RECORDS=5 so that it is there most of the time). Its
    partitions move; the other member must not wait for its locks for ever.
relay leader
    Two `run --only relay` processes on PostgreSQL; the one holding the relay
    leadership is stopped. Outputs decided meanwhile must be published again
    within the bound.

After SIGCONT: nothing lost, nothing applied twice, no stale write (each
cluster's history an unbroken chain ending in its state, versions at least its
transactions). The phase passes the fixes' settings by their announced names
(GOCLUSTER_RELAY_LEASE_S, GOCLUSTER_DB_LOCK_TIMEOUT_MS,
GOCLUSTER_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS).
"""

from __future__ import annotations

import time
from typing import Any

from reliability.checks import at_most, fmt, verdict
from reliability.context import Context, say, seconds_until
from reliability.integrity import integrity, integrity_checks
from reliability.pause_setup import (
    CONSUMER,
    RELAY,
    PauseRun,
    catch_in_transaction,
    pause_run,
    wait_split,
)
from reliability.stream import Producer, publish
from tests.service_process import wait_until

__all__ = ["pause_phase"]


def pause_phase(ctx: Context) -> dict[str, Any]:
    if ctx.pg is None:
        return {"skipped": "two members and two relays need PostgreSQL"}
    began = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    checks: list[dict[str, Any]] = []
    for name, (case, key, roles, max_poll_records) in CASES.items():
        say(f"pause: {name}")
        try:
            with pause_run(ctx, key, roles, max_poll_records) as run:
                results[name] = case(ctx, run)
        except Exception as exc:  # the case failed to run: a failed check, not a crash
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            checks.append(at_most(f"{name}: ran", None, 0, f"{name} did not run: {exc}"[:300]))
            continue
        checks += results[name]["checks"]
    figures = {name: r.get("figures") for name, r in results.items()}
    return verdict("pause", checks, figures) | {
        "cases": results,
        "events": sum(r.get("figures", {}).get("events", 0) for r in results.values()),
        "runs": sum(r.get("runs", 0) for r in results.values()),
        "exit_codes": {k: v for r in results.values() for k, v in r.get("exit_codes", {}).items()},
        "crashes": [c for r in results.values() for c in r.get("crashes", [])],
        "duration_s": round(time.monotonic() - began, 1),
    }


def _applied(run: PauseRun, keys: set[tuple[str, str]]) -> bool:
    run.fleet.check()
    return keys <= run.inbox().keys()


def _finish(run: PauseRun, figures: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything applied and published, every process stopped, then the integrity checks."""
    keys = {(e["source"], e["id"]) for e in run.events}
    wait_until(lambda: _applied(run, keys), 300, "every event applied after the pause", 0.2)
    wait_until(lambda: (run.fleet.check(), run.probe.unsent() == 0)[1], 300, "the outbox drained")
    codes = {run.fleet.procs[r].name: run.fleet.terminate(r) for r in list(run.fleet.procs)}
    found = integrity(run.url, run.topics, run.fleet, {f"{s}|{i}" for s, i in keys})
    prefix = figures["case"]
    return {
        "checks": [*checks, *integrity_checks(prefix, found)],
        "figures": figures | {"events": len(keys), "lock_waiters_at_end": run.lock_waiters},
        "integrity": found,
        "exit_codes": codes,
        "crashes": run.fleet.crashes,
        "runs": run.fleet.runs,
    }


def _first_half(run: PauseRun, seed: int) -> list[dict[str, Any]]:
    """Publish the first half of the events and wait until it is applied and published;
    returns the second half."""
    half = len(run.events) // 2
    publish(run.topics, run.events[:half], seed)
    keys = {(e["source"], e["id"]) for e in run.events[:half]}
    wait_until(lambda: _applied(run, keys) and run.probe.unsent() == 0, 180, "first half out", 0.2)
    return run.events[half:]


def idle_member(ctx: Context, run: PauseRun) -> dict[str, Any]:
    cfg = ctx.cfg
    second = _first_half(run, cfg.seed)
    wait_split(run)
    victim = run.fleet.procs["a"]
    owned = sorted(victim.partitions())
    victim.pause()
    paused = time.monotonic()
    fault = ctx.record("pause", "SIGSTOP", target=victim.name, args=victim.args, ready="idle")
    publish(run.topics, second, cfg.seed + 1)
    everything = {(e["source"], e["id"]) for e in run.events}
    applied_s = seconds_until(lambda: _applied(run, everything), cfg.pause_bound_s + 15, paused)
    taken = sorted(set(owned) & run.fleet.procs["b"].partitions())
    stopped_s = round(victim.resume(), 2)
    said = (
        f"a member stopped while idle for {fmt(stopped_s)} s (session timeout "
        f"{fmt(cfg.pause_session_timeout_ms)} ms): the other applied its input "
        + (f"{fmt(applied_s)} s after the pause" if applied_s is not None else "never")
    )
    figures = {
        "case": "idle member",
        "stopped_s": stopped_s,
        "applied_after_s": applied_s,
        "partitions_of_the_stopped_member": len(owned),
        "taken_over_by_the_other": len(taken),
    }
    fault |= {"stopped_s": stopped_s, "others_applied_after_s": applied_s}
    checks = [
        at_most(
            "idle member: time to apply",
            applied_s,
            cfg.pause_bound_s,
            said,
            f"{cfg.pause_bound_s:g} s",
        )
    ]
    return _finish(run, figures, checks)


def member_in_transaction(ctx: Context, run: PauseRun) -> dict[str, Any]:
    cfg = ctx.cfg
    producer = Producer(run.topics.bootstrap, run.inputs, run.stream, len(run.events) / 20)
    producer.start()
    wait_until(lambda: producer.fraction >= 0.25, 120, "a quarter of the stream published")
    victim = run.fleet.procs["a"]
    caught = catch_in_transaction(run, victim, timeout_s=60)
    paused = time.monotonic()
    sent = producer.sent
    fault = ctx.record("pause", "SIGSTOP", target=victim.name, args=victim.args, **caught)
    before = {(e["source"], e["id"]) for e in run.events[:sent]}
    applied_s = None
    if caught["ready"] is not None:
        bound = cfg.pause_bound_s + 15
        applied_s = seconds_until(lambda: _applied(run, before), bound, paused)
    run.lock_waiters = run.probe.lock_waiters()
    stalled = len(before - run.inbox().keys())
    stopped_s = round(victim.resume(), 2) if victim.paused_at else 0.0
    producer.join(timeout=300)
    if caught["ready"] is None:
        said = "the member was never caught inside its transaction"
    elif applied_s is None:
        said = (
            f"a member stopped inside its batch transaction for {fmt(stopped_s)} s: "
            f"{fmt(stalled)} records published before the pause still not applied; sessions "
            f"waiting for its locks: {fmt(run.lock_waiters)}"
        )
    else:
        said = f"the others applied everything published before the pause {applied_s} s after it"
    figures = {
        "case": "member in its transaction",
        "caught": caught,
        "stopped_s": stopped_s,
        "published_before_the_pause": sent,
        "applied_after_s": applied_s,
        "not_applied_while_stopped": stalled,
    }
    fault |= {"stopped_s": stopped_s, "others_applied_after_s": applied_s}
    checks = [
        at_most(
            "member in its transaction: time to apply",
            applied_s,
            cfg.pause_bound_s,
            said,
            f"{cfg.pause_bound_s:g} s",
        )
    ]
    return _finish(run, figures, checks)


def relay_leader(ctx: Context, run: PauseRun) -> dict[str, Any]:
    cfg = ctx.cfg
    second = _first_half(run, cfg.seed)
    role = wait_until(
        lambda: next((r for r in ("r1", "r2") if run.fleet.procs[r].holds_relay_lock()), None),
        60,
        "a relay holding the leadership",
    )
    leader = run.fleet.procs[role]
    leader.pause()
    paused = time.monotonic()
    marked = run.probe.sent_events() or 0
    fault = ctx.record("pause", "SIGSTOP", target=leader.name, args=leader.args, ready="leading")
    publish(run.topics, second, cfg.seed + 1)
    bound = cfg.pause_bound_s + 15
    again_s = seconds_until(lambda: (run.probe.sent_events() or 0) > marked, bound, paused)
    unsent = run.probe.unsent()
    stopped_s = round(leader.resume(), 2)
    said = f"relay leader stopped for {fmt(stopped_s)} s: outputs published again " + (
        f"{again_s} s after the pause" if again_s is not None else f"never ({fmt(unsent)} waiting)"
    )
    figures = {
        "case": "relay leader",
        "stopped_s": stopped_s,
        "published_again_after_s": again_s,
        "unsent_when_resumed": unsent,
        "lease_s": cfg.relay_lease_s,
    }
    fault |= {"stopped_s": stopped_s, "others_published_after_s": again_s}
    checks = [
        at_most(
            "relay leader: time to publish again",
            again_s,
            cfg.pause_bound_s,
            said,
            f"{cfg.pause_bound_s:g} s",
        )
    ]
    return _finish(run, figures, checks)


MEMBERS = {"a": CONSUMER, "b": CONSUMER, "relay": RELAY}
# name: (case, database and log name, roles, GOCLUSTER_KAFKA_MAX_POLL_RECORDS); five
# records a poll keep a member inside its batch transaction most of the time.
CASES: dict[str, tuple[Any, str, dict[str, list[str]], int]] = {
    "idle member": (idle_member, "idle", MEMBERS, 100),
    "member in its transaction": (member_in_transaction, "transaction", MEMBERS, 5),
    "relay leader": (relay_leader, "relay", {"c": CONSUMER, "r1": RELAY, "r2": RELAY}, 100),
}
