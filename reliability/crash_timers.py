"""The crash phase's second and third parts: timers fired by `tick` and by the wall-clock
timer loop, each SIGKILLed while it fires, then the outbox relay killed while it drains
what the timers left. Cutting the firing at other points must not change what fires
(the reference ticks once)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reliability.processes import Proc
from reliability.reference import FAR
from tests.service_process import wait_until

if TYPE_CHECKING:
    from reliability.crash import CrashRun

__all__ = ["drain_phase", "timers_phase"]


def timers_phase(run: CrashRun) -> None:
    """Ticks up to two horizons in the past, the wall-clock timer loop for the rest up
    to now, a final tick far in the future: each killed while it fires. Cutting the
    firing at other points must not change what fires (the reference ticks once)."""
    cfg = run.ctx.cfg
    rng = run.ctx.rng("timers")
    due = run.probe.pending_due_times(datetime.now(UTC))
    horizons = [due[int(len(due) * q)].isoformat() for q in (0.25, 0.45)] if due else []
    horizons.append(FAR)
    wanted = cfg.kill_split["tick"]
    for n, horizon in enumerate(horizons):
        if horizon == FAR:
            timer_loop(run, cfg.kill_split["timer_loop"], rng)
        share = -(-wanted // (len(horizons) - n))  # the rest, spread over what is left
        wanted -= tick(run, horizon, share, rng)
    if wanted:
        run.notes.append(f"tick: {wanted} planned kills found nothing left to fire")


def working(run: CrashRun, proc: Proc, fired: int, mode: str) -> str | None:
    """Whether a timer-firing process is where the kill should land: `transaction`,
    inside a firing transaction (PostgreSQL; a kill there rolls it back), or `commit`,
    after its first committed round (a kill then stops it half-way). None until then."""
    if not proc.alive:
        return "exited"
    if (run.probe.fired() or 0) > fired:
        return "committed its first firings"
    if mode == "transaction" and run.probe.busy_sessions():
        return "inside a firing transaction"
    return None


def kill_mode(run: CrashRun, rng: Any, horizon: str) -> str:
    if run.sqlite:
        return "commit"
    # Far in the future only a few timers are left: one transaction, nothing after it.
    return "transaction" if horizon == FAR else rng.choice(("transaction", "commit"))


def tick(run: CrashRun, horizon: str, kills: int, rng: Any) -> int:
    """`tick --now horizon --no-publish`, killed up to `kills` times while it fires,
    re-run until a run fires nothing. Returns the kills that landed."""
    landed = 0
    args = ["tick", "--now", horizon, "--no-publish"]
    for _ in range(kills + 5):
        fired = run.probe.fired() or 0
        run.fleet.starts["tick"] += 1
        name = f"tick-{run.fleet.starts['tick']}"
        proc = Proc(
            run.fleet.env, args, name=name, log_dir=run.fleet.log_dir, log_stream="stderr"
        ).start()
        if landed < kills and run.probe.pending_due(datetime.fromisoformat(horizon)):
            mode = kill_mode(run, rng, horizon)
            ready = wait_until(
                lambda p=proc, f=fired, m=mode: working(run, p, f, m),
                120,
                "the tick to fire timers",
                0.005,
            )
            delay = rng.uniform(0.0, 0.05)
            time.sleep(delay)
            if proc.alive:
                state = {"fired_before": fired, "fired_at_kill": run.probe.fired()}
                proc.sigkill()
                landed += 1
                run.kills["tick"] = run.kills.get("tick", 0) + 1
                run.ctx.record(
                    "timers",
                    "SIGKILL",
                    target=proc.name,
                    args=args,
                    role="tick",
                    pid=proc.pid,
                    delay_s=round(delay, 3),
                    ready=ready,
                    state=state,
                )
                continue
        code = proc.process.wait(timeout=600) if proc.process else None
        proc.terminate()
        proc.scan()
        finished = proc.last.get("tick finished") or {}
        if code != 0:
            raise RuntimeError(f"{proc.name} exited {code}\n{proc.tail()}")
        run.runs.append({"run": proc.name, "args": args, "exit": code, **finished})
        if finished.get("timers_fired") == 0:
            return landed
    raise RuntimeError(f"tick --now {horizon} still fired timers after {kills + 5} runs")


def timer_loop(run: CrashRun, kills: int, rng: Any) -> None:
    """`run --clock wall --only timers` killed while it fires, then run until none is due."""
    args = ["run", "--clock", "wall", "--only", "timers"]
    for _ in range(kills):
        if not run.probe.pending_due(datetime.now(UTC)):
            run.notes.append("timer loop: nothing left to fire before every kill landed")
            break
        fired = run.probe.fired() or 0
        proc = run.fleet.start("timers", args)
        mode = kill_mode(run, rng, "now")
        ready = wait_until(
            lambda p=proc, f=fired, m=mode: working(run, p, f, m),
            120,
            "the timer loop to fire",
            0.005,
        )
        delay = rng.uniform(0.0, 0.05)
        run.kill("timers", "timer loop", delay, phase="timers", restart=False, ready=ready)
    run.fleet.start("timers", args)
    wait_until(
        lambda: (run.fleet.check(), run.probe.pending_due(datetime.now(UTC)) == 0)[1],
        300,
        "the timer loop to fire everything due",
    )
    name = run.fleet.procs["timers"].name
    run.exit_codes[name] = run.fleet.terminate("timers")


def drain_phase(run: CrashRun) -> None:
    """`run --only relay` killed while it has published rows it has not marked sent,
    restarted until the outbox is empty."""
    args = ["run", "--only", "relay"]
    for _ in range(run.ctx.cfg.kill_split["drain"]):
        unsent = run.probe.unsent() or 0
        if unsent == 0:
            run.notes.append("relay drain: the outbox was empty before every kill landed")
            break
        proc = run.fleet.start("drain", args)
        in_flight = run.wait_in_flight(60.0, proc)
        run.kill(
            "drain",
            "relay drain",
            0.0,
            phase="drain",
            restart=False,
            ready="published rows not yet marked sent" if in_flight else "exited",
            in_flight=in_flight,
            unsent_at_start=unsent,
        )
    proc = run.fleet.start("drain", args)
    wait_until(lambda: (run.fleet.check(), run.probe.unsent() == 0)[1], 300, "the outbox drained")
    run.exit_codes[proc.name] = run.fleet.terminate("drain")
    if run.watcher is not None:
        run.watcher.stop.set()
