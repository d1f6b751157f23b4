"""The crash phase: SIGKILLs of every `gocluster` process at seeded moments while it
works, PostgreSQL down at the start and restarted mid-stream, then the result compared
with an uninterrupted reference.

A stream (tests/workload.py: 10,000 events over 1,000 clusters by default, plus
upstream re-deliveries and bad records) is published at a steady rate while
`gocluster run --clock event` and a separate `run --only relay` are SIGKILLed
at seeded random moments (each waits until its target is working) and
restarted; PostgreSQL is down when they start and is restarted mid-stream.
PostgreSQL's faults are in reliability/crash_postgres.py. Then the timers
(reliability/crash_timers.py) and the relay drain. The database (a canonical
dump of every effect) and the output topics (ids and contents) are compared
with `gocluster replay` of the same records and the same tick on a fresh SQLite
(itself checked against a second interleaving of the two input topics, which
must not change the result).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from consumers.kafka_admin import delete_topics
from reliability.context import Context, say
from reliability.crash_postgres import restart_postgres, unreachable_at_start
from reliability.crash_timers import drain_phase, timers_phase
from reliability.invariants import history_invariants
from reliability.outputs import compare_dlq, compare_outputs, read_outputs
from reliability.probes import OutputWatcher, Probe
from reliability.processes import Fleet, Proc, applied_twice_in_logs
from reliability.reference import reference_check
from reliability.snapshot import compare, snapshot
from reliability.stream import Producer, Stream, build_stream
from tests.kafka_fixtures import KafkaTopics, create_topic_set
from tests.service_process import migrate, read_topics, service_env, wait_until
from tests.workload import cloud_events

__all__ = ["RELAY", "SERVICE", "CrashRun", "crash_phase"]

SERVICE = ["run", "--clock", "event"]
RELAY = ["run", "--clock", "event", "--only", "relay"]


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
            unreachable_at_start(self, {"service": SERVICE, "relay": RELAY})
        wait_until(lambda: self.fleet.procs["service"].partitions(), 120, "the consumer to join")
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
            wait_until(
                lambda s=share: (
                    self.fleet.check(),
                    self.producer is not None
                    and (self.producer.fraction >= s or not self.producer.is_alive()),
                )[1],
                len(self.stream.records) / rate + 120,
                f"{share:.0%} of the stream published",
            )
            if fault == "consumer":
                wait_until(
                    lambda: (self.fleet.check(), self.fleet.procs["service"].partitions())[1],
                    120,
                    "the restarted consumer to join",
                )
                self.kill("service", "consumer", rng.uniform(0.0, 2.0), ready="joined the group")
            elif fault == "relay":
                self.kill_relay()
            else:
                restart_postgres(self, rng)
        self.producer.join(timeout=len(self.stream.records) / rate + 300)
        if self.producer.error is not None or self.producer.is_alive():
            raise RuntimeError(f"the producer failed: {self.producer.error!r}")
        self.wait_applied()
        for role in ("service", "relay"):
            name = self.fleet.procs[role].name
            self.exit_codes[name] = self.fleet.terminate(role)

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

        role = wait_until(leader, 60, "a process holding the outbox relay lock")
        in_flight = self.wait_in_flight(10.0, self.fleet.procs[role])
        what = "relay" if role == "relay" else "relay (the service's relay thread)"
        ready = "published rows not yet marked sent" if in_flight else "10 s without a send"
        self.kill(role, "relay", 0.0, ready=ready, relay_process=what, in_flight=in_flight)

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

        wait_until(done, 600, "every record applied or in the DLQ, and published", 0.5)


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
        timers_phase(run)
        say("crash: relay drain")
        drain_phase(run)
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


def judge_crash(run: CrashRun, reference: dict[str, Any]) -> dict[str, Any]:
    ref = reference["snapshot"]
    camp = snapshot(run.url)
    database = compare(ref, camp)
    invariants = history_invariants(camp)
    topics = run.topics
    published = read_outputs(topics, ref.count("outbox"), timeout_s=180)
    outputs = compare_outputs(ref.items["outbox"], published, order=camp.outbox_seq)
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
