"""Reliability campaign: "nothing lost, nothing done twice", under faults, in figures.

    python -m bench.crash_campaign                      # the full campaign (~5 min)
    python -m bench.crash_campaign --events 600 --clusters 60 --kills 4 \\
        --pg-restarts 1 --phases crash                  # what tests/test_reliability.py runs

Phases (real `gocluster` subprocesses, the embedded broker, a PostgreSQL server of
the campaign's own so that restarting it disturbs nobody):

crash
    A stream (bench/workload.py: 10,000 events over 1,000 clusters by default, plus
    upstream re-deliveries and bad records) is published at a steady rate while
    `gocluster run --clock event` and a separate `run --only relay` are SIGKILLed
    at seeded random moments (each waits until its target is working) and
    restarted; PostgreSQL is down when they start and is restarted mid-stream.
    Then the timers: `tick --now T --no-publish` and `run --clock wall --only
    timers` killed while they fire, and re-run until nothing is due; then the
    outbox relay killed while it drains. The database (a canonical dump of every
    effect) and the output topics (ids and contents) are compared with an
    uninterrupted reference: `gocluster replay` of the same records and the same
    tick on a fresh SQLite (itself checked against a second interleaving of the
    two input topics, which must not change the result).
broker
    The broker is SIGKILLed while the service runs and a tick leaves output to
    publish; it is started again on its data: the service must stay up, carry on
    from its committed offsets, publish the pending output and apply the rest.
concurrency
    Two `run --clock wall` instances in one group on PostgreSQL, one killed and
    restarted mid-stream, while `tick` runs again and again and events arrive for
    the same clusters: invariants that hold whatever the timing (no lost update,
    no cause or timer applied twice, no output id with two contents, nothing lost).

The JSON result goes to --out; docs/RELIABILITY.md is rendered from it
(bench/reliability_report.py), with the bad-input campaign's summary when
bench/bad_input_report.py is there. Exit status 1 unless everything is zero.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/crash_campaign.py` from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.campaign_faults import broker_phase, concurrency_phase
from bench.campaign_state import (
    compare,
    compare_dlq,
    compare_outputs,
    history_invariants,
    snapshot,
    topic_outputs,
)
from bench.campaign_support import (
    DEPENDENCY_LOG_EVENTS,
    Context,
    Fleet,
    OutputWatcher,
    Probe,
    Proc,
    Producer,
    Stream,
    applied_twice_in_logs,
    build_stream,
    reference_snapshot_run,
    say,
    wait_for,
)
from bench.harness import machine
from bench.private_postgres import PrivatePostgres
from bench.workload import cloud_events
from consumers.kafka_admin import delete_topics
from tests import stories
from tests.brokers import make_broker
from tests.kafka_fixtures import KafkaTopics, create_topic_set
from tests.service_process import migrate, read_topics, service_env

ROOT = Path(__file__).resolve().parent.parent
FAR = "2040-01-01T00:00:00+00:00"
PHASES = ("crash", "broker", "concurrency")
SERVICE = ["run", "--clock", "event"]
RELAY = ["run", "--clock", "event", "--only", "relay"]


@dataclass
class Config:
    events: int = 10_000
    clusters: int = 1_000
    kills: int = 24
    seed: int = 1
    backend: str = "postgres"
    pg_restarts: int = 3
    duplicate_share: float = 0.02
    bad_records: int = 20
    max_poll_records: int = 100
    phases: tuple[str, ...] = PHASES
    broker_events: int = 2_000
    broker_clusters: int = 200
    concurrency_events: int = 3_000
    concurrency_clusters: int = 300
    concurrency_seconds: float = 20.0
    out: str | None = "bench/results/campaign.json"
    report: str | None = "docs/RELIABILITY.md"
    bad_input: str | None = "bench/results/bad_input.json"
    command: str = ""
    kill_split: dict[str, int] = field(default_factory=dict)


def split_kills(total: int) -> dict[str, int]:
    """Where the SIGKILLs go: the stream (consumer, relay), the timers (tick, loop), the drain."""
    split = {
        "consumer": round(0.4 * total),
        "relay": round(0.2 * total),
        "tick": round(0.15 * total),
        "timer_loop": round(0.1 * total),
    }
    split["drain"] = max(0, total - sum(split.values()))
    return split


# -- crash phase -------------------------------------------------------------------------------


@dataclass
class CrashRun:
    ctx: Context
    stream: Stream
    url: str
    topics: KafkaTopics
    fleet: Fleet
    probe: Probe
    producer: Producer | None = None
    watcher: OutputWatcher | None = None
    kills: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def kill(
        self,
        role: str,
        what: str,
        delay: float,
        *,
        phase: str = "crash",
        restart: bool = True,
        **details: Any,
    ) -> None:
        """SIGKILL a fleet process `delay` s from now, record what it was doing, restart it."""
        rng = self.ctx.rng(f"restart-{len(self.ctx.faults)}")
        time.sleep(delay)
        self.fleet.check()
        proc = self.fleet.procs[role]
        proc.scan()
        state = {
            "inbox": self.probe.inbox(),
            "unsent": self.probe.unsent(),
            "process_applied": proc.events["event applied"],
            "records_published": self.producer.sent if self.producer else None,
        }
        self.fleet.kill(role)
        pause = round(rng.uniform(0.0, 1.0), 2)
        self.ctx.record(
            phase,
            "SIGKILL",
            target=proc.name,
            args=proc.args,
            role=what,
            pid=proc.pid,
            delay_s=round(delay, 3),
            restart_after_s=pause if restart else None,
            alive_s=round(time.monotonic() - proc.started_at, 2),
            state=state,
            **details,
        )
        self.kills[what] = self.kills.get(what, 0) + 1
        if restart:
            time.sleep(pause)
            self.fleet.start(role)

    # (a) the stream --------------------------------------------------------------------

    def stream_phase(self) -> None:
        ctx, cfg = self.ctx, self.ctx.cfg
        rng = ctx.rng("stream")
        plan = ["consumer"] * cfg.kill_split["consumer"] + ["relay"] * cfg.kill_split["relay"]
        plan += ["pg_restart"] * (cfg.pg_restarts if ctx.pg is not None else 0)
        rng.shuffle(plan)
        estimate = 10 + sum({"consumer": 6, "relay": 3, "pg_restart": 8}[p] for p in plan)
        rate = min(800.0, max(20.0, len(self.stream.records) / estimate))
        if ctx.pg is None:
            self.notes.append("SQLite: no PostgreSQL to stop or restart")
            self.fleet.start("service", SERVICE)
            self.fleet.start("relay", RELAY)
        else:
            self.unreachable_at_start()
        wait_for(lambda: self.fleet.procs["service"].partitions(), 120, "the consumer to join")
        self.producer = Producer(
            self.topics.bootstrap,
            {"applications": self.topics.applications, "interviews": self.topics.interviews},
            self.stream,
            rate,
        )
        self.producer.start()
        outputs = [self.topics.labels, self.topics.deadlines, self.topics.membership]
        self.watcher = OutputWatcher(self.topics.bootstrap, outputs)
        self.watcher.start()
        say(f"publishing {len(self.stream.records)} records at {rate:.0f}/s; faults: {plan}")
        for i, fault in enumerate(plan):
            share = (i + 1) / (len(plan) + 1)
            wait_for(
                lambda s=share: (
                    self.fleet.check(),
                    self.producer is not None
                    and (self.producer.fraction >= s or not self.producer.is_alive()),
                )[1],
                len(self.stream.records) / rate + 120,
                f"{share:.0%} of the stream published",
            )
            if fault == "consumer":
                wait_for(
                    lambda: (self.fleet.check(), self.fleet.procs["service"].partitions())[1],
                    120,
                    "the restarted consumer to join",
                )
                self.kill("service", "consumer", rng.uniform(0.0, 2.0), ready="joined the group")
            elif fault == "relay":
                self.kill_relay()
            else:
                self.restart_postgres(rng)
        self.producer.join(timeout=len(self.stream.records) / rate + 300)
        if self.producer.error is not None or self.producer.is_alive():
            raise RuntimeError(f"the producer failed: {self.producer.error!r}")
        self.wait_applied()
        for role in ("service", "relay"):
            name = self.fleet.procs[role].name
            self.exit_codes[name] = self.fleet.terminate(role)

    def unreachable_at_start(self) -> None:
        """Both processes start while PostgreSQL is down: they must wait, say so, go on."""
        ctx = self.ctx
        ctx.pg.stop("fast")
        began = time.monotonic()
        procs = [self.fleet.start("service", SERVICE), self.fleet.start("relay", RELAY)]
        event = "database unreachable at start, retrying"
        for proc in procs:
            wait_for(lambda p=proc: p.n(event) >= 2 or not p.alive, 60, f"{proc.name}: {event}")
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

    def in_flight(self) -> int:
        """Output events the broker has that the outbox does not show as sent: a relay is
        between its send and its mark (read in this order, so a positive count is real)."""
        seen = self.watcher.seen() if self.watcher else 0
        return max(0, seen - (self.probe.sent_events() or seen))

    def wait_in_flight(self, timeout_s: float, proc: Proc | None = None) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (proc is None or proc.alive):
            if (n := self.in_flight()) > 0:
                return n
            time.sleep(0.002)
        return 0

    def kill_relay(self) -> None:
        """Kill the process that publishes (the relay lock holder on PostgreSQL) while it
        has published rows it has not marked sent, if that moment comes within 10 s."""

        def leader() -> str | None:
            self.fleet.check()
            if self.sqlite:
                return "relay"
            held = [r for r, p in self.fleet.procs.items() if p.holds_relay_lock()]
            return held[0] if held else None

        role = wait_for(leader, 60, "a process holding the outbox relay lock")
        in_flight = self.wait_in_flight(10.0, self.fleet.procs[role])
        what = "relay" if role == "relay" else "relay (the service's relay thread)"
        ready = "published rows not yet marked sent" if in_flight else "10 s without a send"
        self.kill(role, "relay", 0.0, ready=ready, relay_process=what, in_flight=in_flight)

    def restart_postgres(self, rng: Any) -> None:
        ctx = self.ctx
        time.sleep(rng.uniform(0.0, 1.0))
        mode = rng.choice(("fast", "immediate"))
        down = round(rng.uniform(2.0, 5.0), 2)
        procs = dict(self.fleet.procs)
        for proc in procs.values():
            proc.scan()
        before = {role: dict(p.events) for role, p in procs.items()}
        inbox = self.probe.inbox() or 0
        ctx.pg.stop(mode)
        time.sleep(down)
        ctx.pg.start()
        started = time.monotonic()
        resumed = None
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: (self.probe.inbox() or 0) > inbox, 90, "input applied again", 0.05)
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
        self.fleet.check()
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

    def wait_applied(self) -> None:
        distinct, bad = self.stream.distinct, len(self.stream.bad)

        def done() -> bool:
            self.fleet.check()
            return (
                self.probe.inbox() == distinct
                and self.probe.parked() == 0
                and (self.probe.dlq_rows() or 0) >= bad
                and self.probe.unsent() == 0
            )

        wait_for(done, 600, "every record applied or in the DLQ, and published", 0.5)

    # (b) timers ---------------------------------------------------------------------------

    def timers_phase(self) -> None:
        """Ticks up to two horizons in the past, the wall-clock timer loop for the rest up
        to now, a final tick far in the future: each killed while it fires. Cutting the
        firing at other points must not change what fires (the reference ticks once)."""
        cfg = self.ctx.cfg
        rng = self.ctx.rng("timers")
        due = self.probe.pending_due_times(datetime.now(UTC))
        horizons = [due[int(len(due) * q)].isoformat() for q in (0.25, 0.45)] if due else []
        horizons.append(FAR)
        wanted = cfg.kill_split["tick"]
        for n, horizon in enumerate(horizons):
            if horizon == FAR:
                self.timer_loop(cfg.kill_split["timer_loop"], rng)
            share = -(-wanted // (len(horizons) - n))  # the rest, spread over what is left
            wanted -= self.tick(horizon, share, rng)
        if wanted:
            self.notes.append(f"tick: {wanted} planned kills found nothing left to fire")

    def working(self, proc: Proc, fired: int, mode: str) -> str | None:
        """Whether a timer-firing process is where the kill should land: `transaction`,
        inside a firing transaction (PostgreSQL; a kill there rolls it back), or `commit`,
        after its first committed round (a kill then stops it half-way). None until then."""
        if not proc.alive:
            return "exited"
        if (self.probe.fired() or 0) > fired:
            return "committed its first firings"
        if mode == "transaction" and self.probe.busy_sessions():
            return "inside a firing transaction"
        return None

    def kill_mode(self, rng: Any, horizon: str) -> str:
        if self.sqlite:
            return "commit"
        # Far in the future only a few timers are left: one transaction, nothing after it.
        return "transaction" if horizon == FAR else rng.choice(("transaction", "commit"))

    def tick(self, horizon: str, kills: int, rng: Any) -> int:
        """`tick --now horizon --no-publish`, killed up to `kills` times while it fires,
        re-run until a run fires nothing. Returns the kills that landed."""
        landed = 0
        args = ["tick", "--now", horizon, "--no-publish"]
        for _ in range(kills + 5):
            fired = self.probe.fired() or 0
            self.fleet.starts["tick"] += 1
            name = f"tick-{self.fleet.starts['tick']}"
            proc = Proc(
                self.fleet.env, args, name=name, log_dir=self.fleet.log_dir, log_stream="stderr"
            ).start()
            if landed < kills and self.probe.pending_due(datetime.fromisoformat(horizon)):
                mode = self.kill_mode(rng, horizon)
                ready = wait_for(
                    lambda p=proc, f=fired, m=mode: self.working(p, f, m),
                    120,
                    "the tick to fire timers",
                    0.005,
                )
                delay = rng.uniform(0.0, 0.05)
                time.sleep(delay)
                if proc.alive:
                    state = {"fired_before": fired, "fired_at_kill": self.probe.fired()}
                    proc.sigkill()
                    landed += 1
                    self.kills["tick"] = self.kills.get("tick", 0) + 1
                    self.ctx.record(
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
            self.runs.append({"run": proc.name, "args": args, "exit": code, **finished})
            if finished.get("timers_fired") == 0:
                return landed
        raise RuntimeError(f"tick --now {horizon} still fired timers after {kills + 5} runs")

    def timer_loop(self, kills: int, rng: Any) -> None:
        """`run --clock wall --only timers` killed while it fires, then run until none is due."""
        args = ["run", "--clock", "wall", "--only", "timers"]
        for _ in range(kills):
            if not self.probe.pending_due(datetime.now(UTC)):
                self.notes.append("timer loop: nothing left to fire before every kill landed")
                break
            fired = self.probe.fired() or 0
            proc = self.fleet.start("timers", args)
            mode = self.kill_mode(rng, "now")
            ready = wait_for(
                lambda p=proc, f=fired, m=mode: self.working(p, f, m),
                120,
                "the timer loop to fire",
                0.005,
            )
            delay = rng.uniform(0.0, 0.05)
            self.kill("timers", "timer loop", delay, phase="timers", restart=False, ready=ready)
        self.fleet.start("timers", args)
        wait_for(
            lambda: (self.fleet.check(), self.probe.pending_due(datetime.now(UTC)) == 0)[1],
            300,
            "the timer loop to fire everything due",
        )
        name = self.fleet.procs["timers"].name
        self.exit_codes[name] = self.fleet.terminate("timers")

    # (c) the relay drains what the timers left ---------------------------------------------

    def drain_phase(self) -> None:
        """`run --only relay` killed while it has published rows it has not marked sent,
        restarted until the outbox is empty."""
        args = ["run", "--only", "relay"]
        for _ in range(self.ctx.cfg.kill_split["drain"]):
            unsent = self.probe.unsent() or 0
            if unsent == 0:
                self.notes.append("relay drain: the outbox was empty before every kill landed")
                break
            proc = self.fleet.start("drain", args)
            in_flight = self.wait_in_flight(60.0, proc)
            self.kill(
                "drain",
                "relay drain",
                0.0,
                phase="drain",
                restart=False,
                ready="published rows not yet marked sent" if in_flight else "exited",
                in_flight=in_flight,
                unsent_at_start=unsent,
            )
        proc = self.fleet.start("drain", args)
        wait_for(
            lambda: (self.fleet.check(), self.probe.unsent() == 0)[1], 300, "the outbox drained"
        )
        self.exit_codes[proc.name] = self.fleet.terminate("drain")
        if self.watcher is not None:
            self.watcher.stop.set()


def _short_log(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {k: v for k, v in entry.items() if k in ("event", "level", "database", "error")}


def crash_phase(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    began = time.monotonic()
    events = cloud_events(cfg.clusters, cfg.events, seed=cfg.seed)
    stream = build_stream(events, cfg.seed, cfg.duplicate_share, cfg.bad_records)
    say(
        f"crash: {stream.distinct} events (+{stream.duplicates} re-deliveries, "
        f"{len(stream.bad)} bad) over {stream.clusters} clusters; reference replay"
    )
    reference = reference_check(ctx, stream)
    url = ctx.new_database("crash")
    migrate(url)
    topics = create_topic_set(ctx.bootstrap)
    env = service_env(
        topics.env(),
        {
            "GOCLUSTER_DATABASE_URL": url,
            "GOCLUSTER_KAFKA_MAX_POLL_RECORDS": str(cfg.max_poll_records),
        },
    )
    fleet = Fleet(env, ctx.work / "logs" / "crash")
    run = CrashRun(ctx, stream, url, topics, fleet, Probe(url))
    try:
        run.stream_phase()
        say("crash: timers")
        run.timers_phase()
        say("crash: relay drain")
        run.drain_phase()
        say("crash: comparing with the reference")
        result = judge_crash(run, reference)
    finally:
        if run.watcher is not None:
            run.watcher.stop.set()
        fleet.close()
        run.probe.close()
        with contextlib.suppress(Exception):
            delete_topics({"bootstrap_servers": ctx.bootstrap}, [*topics.inputs, *topics.outputs])
    result |= {
        "stream": {
            "events": stream.distinct,
            "redeliveries": stream.duplicates,
            "bad_records": len(stream.bad),
            "records": len(stream.records),
            "clusters": stream.clusters,
            "rate_per_s": round(run.producer.rate, 1) if run.producer else None,
        },
        "kills": run.kills,
        "runs": fleet.runs,
        "crashes": fleet.crashes,
        "exit_codes": run.exit_codes,
        "tick_runs": run.runs,
        "notes": run.notes,
        "reference": reference["info"],
        "duration_s": round(time.monotonic() - began, 1),
    }
    return result


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


def judge_crash(run: CrashRun, reference: dict[str, Any]) -> dict[str, Any]:
    ref = reference["snapshot"]
    camp = snapshot(run.url)
    database = compare(ref, camp)
    invariants = history_invariants(camp)
    outputs_expected = ref.count("outbox")
    topics = run.topics
    records = read_topics(
        topics.bootstrap,
        [topics.labels, topics.deadlines, topics.membership],
        outputs_expected,
        timeout_s=180,
        settle_s=2.0,
    )
    outputs = compare_outputs(ref.items["outbox"], topic_outputs(records), order=camp.outbox_seq)
    bad_at = run.producer.bad_at if run.producer else {}
    dlq_records = read_topics(topics.bootstrap, [topics.dlq], len(bad_at), timeout_s=60, settle_s=1)
    dlq = compare_dlq(bad_at, dlq_records)
    applied_twice = applied_twice_in_logs(run.fleet)
    lost = database.total("lost") + outputs["lost"] + dlq["lost"]
    duplicated = (
        database.total("duplicated")
        + outputs["duplicated"]
        + dlq["duplicated"]
        + len(applied_twice)
        + invariants["causes_applied_twice"]
        + invariants["timers_fired_twice"]
    )
    return {
        "lost": lost,
        "duplicated": duplicated,
        "mismatched": database.total("mismatched") + outputs["mismatched"] + dlq["mismatched"],
        "unexpected": database.total("unexpected") + outputs["unexpected"] + dlq["unexpected"],
        "database": database.to_json(),
        "invariants": invariants,
        "outputs": outputs,
        "dlq": dlq,
        "applied_twice_in_logs": applied_twice[:5],
        "unsent_at_end": camp.unsent,
    }


# -- the whole campaign ------------------------------------------------------------------------


def run_campaign(cfg: Config, work: Path) -> dict[str, Any]:
    """Every phase in `cfg.phases`; returns the JSON result (also when a phase failed)."""
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "campaign": "reliability: crash, dependency and concurrency faults",
        "command": cfg.command,
        "started": started.isoformat(timespec="seconds"),
        "config": asdict(cfg),
        "machine": machine(),
        "phases": {},
    }
    log_dir = work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(make_broker(log_dir / "broker"))
        result["machine"]["broker"] = f"{broker.name} {getattr(broker, 'version', '')}".strip()
        pg = None
        if cfg.backend == "postgres":
            pg = stack.enter_context(PrivatePostgres(work / "postgres"))
            result["machine"]["postgres"] = _server_version(pg)
        ctx = Context(cfg, work, broker.bootstrap, pg)
        phases = {"crash": crash_phase, "broker": broker_phase, "concurrency": concurrency_phase}
        for name in cfg.phases:
            try:
                result["phases"][name] = phases[name](ctx)
            except Exception as exc:  # reported, and the campaign fails
                say(f"{name}: FAILED: {exc!r}\n{traceback.format_exc()}")
                result["phases"][name] = {"error": f"{type(exc).__name__}: {exc}"[:4000]}
        result["faults"] = ctx.faults
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["duration_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    result["totals"] = totals(cfg, result)
    return result


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
    for fault in faults:
        if fault.get("processes_survived") is False or fault.get("processes_alive") is False:
            problems.append(f"fault {fault['n']} ({fault['kind']}): a process died")
        if fault.get("service_never_restarted") is False:
            problems.append(f"fault {fault['n']} ({fault['kind']}): the service did not survive")
    if len(kills) < cfg.kills:
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
        "problems": problems,
        "passed": not problems,
    }


def _server_version(pg: PrivatePostgres) -> str | None:
    import psycopg

    with psycopg.connect(pg.libpq("postgres")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else None


def bad_input_summary(cfg: Config) -> Path | None:
    """Run the bad-input campaign (bench/bad_input_report.py) when it is there."""
    script = ROOT / "bench" / "bad_input_report.py"
    if cfg.bad_input is None or not script.exists():
        return None
    out = ROOT / cfg.bad_input
    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"bad input: {script.relative_to(ROOT)} --out {cfg.bad_input}")
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if not out.exists():
        say(f"bad input: no summary (exit {done.returncode}): {done.stderr[-500:]}")
        return None
    return out


def parse_args(argv: list[str] | None) -> Config:
    defaults = Config()
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument("--clusters", type=int, default=defaults.clusters)
    parser.add_argument("--kills", type=int, default=defaults.kills, help="SIGKILLs, at least")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default=defaults.backend)
    parser.add_argument("--pg-restarts", type=int, default=defaults.pg_restarts)
    parser.add_argument("--duplicate-share", type=float, default=defaults.duplicate_share)
    parser.add_argument("--bad-records", type=int, default=defaults.bad_records)
    parser.add_argument("--max-poll-records", type=int, default=defaults.max_poll_records)
    parser.add_argument(
        "--phases", default=",".join(defaults.phases), help=f"comma-separated of {PHASES}"
    )
    parser.add_argument("--broker-events", type=int, default=defaults.broker_events)
    parser.add_argument("--broker-clusters", type=int, default=defaults.broker_clusters)
    parser.add_argument("--concurrency-events", type=int, default=defaults.concurrency_events)
    parser.add_argument("--concurrency-clusters", type=int, default=defaults.concurrency_clusters)
    parser.add_argument("--concurrency-seconds", type=float, default=defaults.concurrency_seconds)
    parser.add_argument("--out", default=defaults.out, help="the JSON result")
    parser.add_argument("--report", default=defaults.report, help="'' for no report")
    parser.add_argument("--bad-input", default=defaults.bad_input, help="'' to skip it")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and databases here")
    args = parser.parse_args(argv)
    phases = tuple(p for p in args.phases.split(",") if p)
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}")
    cfg = Config(
        events=args.events,
        clusters=args.clusters,
        kills=args.kills,
        seed=args.seed,
        backend=args.backend,
        pg_restarts=args.pg_restarts,
        duplicate_share=args.duplicate_share,
        bad_records=args.bad_records,
        max_poll_records=args.max_poll_records,
        phases=phases,
        broker_events=args.broker_events,
        broker_clusters=args.broker_clusters,
        concurrency_events=args.concurrency_events,
        concurrency_clusters=args.concurrency_clusters,
        concurrency_seconds=args.concurrency_seconds,
        out=args.out or None,
        report=args.report or None,
        bad_input=args.bad_input or None,
        command="python -m bench.crash_campaign"
        + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv)),
    )
    cfg.kill_split = split_kills(cfg.kills)
    cfg_keep[0] = args.keep
    return cfg


cfg_keep: list[Path | None] = [None]


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    keep = cfg_keep[0]
    with contextlib.ExitStack() as stack:
        if keep is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gocluster-cc-")))
        else:
            work = keep
            work.mkdir(parents=True, exist_ok=True)
        result = run_campaign(cfg, work)
    if cfg.out:
        out = ROOT / cfg.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n", "utf-8")
        say(f"result: {cfg.out}")
    if cfg.report:
        from bench.reliability_report import render

        bad = bad_input_summary(cfg)
        bad_json = json.loads(bad.read_text("utf-8")) if bad else None
        (ROOT / cfg.report).write_text(render(result, bad_json), "utf-8")
        say(f"report: {cfg.report}")
    t = result["totals"]
    say(
        f"{t['events']} events, {t['kills']} SIGKILLs, {t['faults']} faults, {t['runs']} runs: "
        f"lost {t['lost']}, duplicated {t['duplicated']}: "
        + ("PASSED" if t["passed"] else f"FAILED {t['problems']}")
    )
    return 0 if t["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
