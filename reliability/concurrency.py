"""The concurrency phase: two `run --clock wall` instances in one group on PostgreSQL,
one killed and restarted mid-stream, `tick` over and over, events for the same
clusters arriving all the while. With the wall clock the outcome depends on
timing, so what is checked are the invariants that must hold whatever it is.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from typing import Any

from consumers.kafka_admin import delete_topics
from reliability.context import Context, say
from reliability.invariants import history_invariants
from reliability.outputs import compare_outputs, read_outputs
from reliability.probes import Probe
from reliability.processes import Fleet, Proc, applied_twice_in_logs
from reliability.reference import FAR
from reliability.snapshot import snapshot
from reliability.stream import Producer, build_stream
from tests.kafka_fixtures import KafkaTopics, create_topic_set
from tests.service_process import migrate, service_env, wait_until
from tests.workload import cloud_events

__all__ = ["LockSampler", "concurrency_phase"]


def six_partition_topics(bootstrap: str) -> KafkaTopics:
    return create_topic_set(bootstrap, input_partitions=6, prefix="campaign")


def concurrency_phase(ctx: Context) -> dict[str, Any]:
    if ctx.pg is None:
        return {"skipped": "two instances need PostgreSQL (SQLite is for one instance)"}
    cfg = ctx.cfg
    began = time.monotonic()
    seed = cfg.seed + 2002
    events = cloud_events(cfg.concurrency_clusters, cfg.concurrency_events, seed=seed)
    stream = build_stream(events, seed, cfg.duplicate_share, 0)
    say(
        f"concurrency: {len(stream.records)} records over {stream.clusters} clusters, two instances"
    )
    topics = six_partition_topics(ctx.bootstrap)
    url = ctx.new_database("concurrency")
    migrate(url)
    env = service_env(
        topics.env(),
        {
            "GOCLUSTER_DATABASE_URL": url,
            "GOCLUSTER_KAFKA_MAX_POLL_RECORDS": str(cfg.max_poll_records),
        },
    )
    fleet = Fleet(env, ctx.work / "logs" / "concurrency")
    probe = Probe(url)
    try:
        ticks, codes, fired_by, contention = _two_instances(ctx, topics, fleet, probe, stream)
    finally:
        fleet.close()
        probe.close()
    camp = snapshot(url)
    published = read_outputs(topics, camp.count("outbox"))
    with contextlib.suppress(Exception):
        delete_topics({"bootstrap_servers": ctx.bootstrap}, [*topics.inputs, *topics.outputs])
    expected = {f"{e['source']}|{e['id']}" for e in stream.events}
    received = set(camp.items["inbox"])
    outcomes = Counter(v[0][2] for v in camp.items["inbox"].values())
    dlq_origins = {repr(sorted(r["origin"].items())) for r in camp.dlq_rows}
    outputs = compare_outputs(camp.items["outbox"], published, order=camp.outbox_seq)
    invariants = history_invariants(camp)
    applied_twice = applied_twice_in_logs(fleet)
    rejected_without_dlq = max(0, outcomes.get("rejected", 0) - len(dlq_origins))
    return {
        "events": stream.distinct,
        "records": len(stream.records),
        "redeliveries": stream.duplicates,
        "clusters": stream.clusters,
        "runs": fleet.runs + len(ticks),
        "ticks": ticks,
        "exit_codes": codes,
        "crashes": fleet.crashes,
        "inbox_outcomes": dict(outcomes),
        "timers_fired_by": fired_by
        | {"the consumers, by event time": invariants["timers_fired"] - sum(fired_by.values())},
        "lock_contention": contention,
        "lost": len(expected - received)
        + outputs["lost"]
        + rejected_without_dlq
        + camp.parked
        + invariants["fired_timers_without_history"]
        + sum(1 for v in camp.items["timers"].values() if v[0][5] == "pending" and v[0][2] <= FAR),
        "duplicated": invariants["causes_applied_twice"]
        + invariants["timers_fired_twice"]
        + outputs["duplicated"]
        + len(applied_twice),
        "lost_updates": invariants["chain_breaks"]
        + invariants["final_state_mismatches"]
        + invariants["version_below_transactions"],
        "unexpected": len(received - expected) + outputs["unexpected"],
        "timers_pending_after_final_tick": sum(
            1 for v in camp.items["timers"].values() if v[0][5] == "pending" and v[0][2] <= FAR
        ),
        "unsent_at_end": camp.unsent,
        "invariants": invariants,
        "outputs": outputs,
        "applied_twice_in_logs": applied_twice[:5],
        "duration_s": round(time.monotonic() - began, 1),
    }


def _two_instances(
    ctx: Context, topics: KafkaTopics, fleet: Fleet, probe: Probe, stream: Any
) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int], dict[str, Any]]:
    rng = ctx.rng("concurrency")
    wall = ["run", "--clock", "wall"]
    a, b = fleet.start("a", wall), fleet.start("b", wall)
    every = {f"{t}/{p}" for t in topics.inputs for p in range(6)}

    def split() -> bool:
        fleet.check()
        mine, theirs = fleet.procs["a"].partitions(), fleet.procs["b"].partitions()
        return bool(mine and theirs and not mine & theirs and mine | theirs == every)

    wait_until(split, 120, "the two instances to split the input partitions")
    rate = len(stream.records) / ctx.cfg.concurrency_seconds
    inputs = {"applications": topics.applications, "interviews": topics.interviews}
    producer = Producer(topics.bootstrap, inputs, stream, rate)
    producer.start()
    contention = LockSampler(probe.engine.url.render_as_string(hide_password=False))
    contention.start()
    ticks: list[dict[str, Any]] = []
    killed = False
    for _ in range(1000):
        if not producer.is_alive():
            break
        fleet.check()
        if not killed and producer.fraction >= 0.5:
            killed = True
            victim = fleet.procs["a"]
            delay = round(rng.uniform(0.0, 1.0), 3)
            time.sleep(delay)
            state = {"inbox": probe.inbox(), "process_applied": victim.n("event applied")}
            fleet.kill("a")
            ctx.record(
                "concurrency",
                "SIGKILL",
                target=victim.name,
                args=victim.args,
                role="instance a (consumer, relay, timer loop)",
                ready="half the stream published",
                pid=victim.pid,
                delay_s=delay,
                state=state,
            )
            time.sleep(1.0)
            fleet.start("a")
        ticks.append(_tick(fleet, len(ticks) + 1))
    producer.join(timeout=300)
    if producer.error is not None:
        raise RuntimeError(f"the producer failed: {producer.error!r}")

    def applied() -> bool:
        fleet.check()
        return probe.inbox() == stream.distinct and probe.parked() == 0

    wait_until(applied, 300, "every event applied by the two instances", 0.2)
    ticks.append(_tick(fleet, len(ticks) + 1))
    wait_until(lambda: (fleet.check(), probe.unsent() == 0)[1], 300, "the outbox drained", 0.2)
    contention.stop.set()
    contention.join(timeout=10)
    codes = {}
    for role in ("a", "b"):
        name = fleet.procs[role].name
        codes[name] = fleet.terminate(role)
    del a, b
    loops = sum(p.timers_fired for p in fleet.all_procs())
    by_tick = sum(int(t.get("timers_fired") or 0) for t in ticks)
    fired_by = {"tick runs": by_tick, "the instances' timer loops": loops}
    return ticks, codes, fired_by, contention.summary()


class LockSampler(threading.Thread):
    """How often, while the instances and the ticks run, a session waited for a row or
    advisory lock another one held: they did work on the same clusters at once."""

    def __init__(self, url: str) -> None:
        super().__init__(name="lock-sampler", daemon=True)
        self.probe = Probe(url)
        self.stop = threading.Event()
        self.samples = 0
        self.waiting = 0
        self.most = 0

    def run(self) -> None:
        try:
            while not self.stop.wait(0.05):
                n = self.probe.lock_waiters() or 0
                self.samples += 1
                self.waiting += n > 0
                self.most = max(self.most, n)
        finally:
            self.probe.close()

    def summary(self) -> dict[str, Any]:
        return {
            "samples_every_50ms": self.samples,
            "samples_with_a_session_waiting_for_a_lock": self.waiting,
            "most_sessions_waiting_at_once": self.most,
        }


def _tick(fleet: Fleet, n: int) -> dict[str, Any]:
    args = ["tick", "--now", FAR, "--no-publish"]
    proc = Proc(fleet.env, args, name=f"tick-{n}", log_dir=fleet.log_dir, log_stream="stderr")
    proc.start()
    code = proc.process.wait(timeout=600) if proc.process else None
    proc.terminate()
    proc.scan()
    finished = proc.last.get("tick finished") or {}
    return {"run": proc.name, "exit": code, "timers_fired": finished.get("timers_fired")}
