"""The campaign's dependency and concurrency phases (see bench/crash_campaign.py).

broker: the broker is SIGKILLed while the service runs and a tick leaves output
to publish; it comes back on its data (Apache Kafka: topics, the group, its
offsets and producer ids survive), and the service must carry on from its
committed offsets, publish and apply the rest without ever exiting. On Tansu
(local loops only) everything is lost and the topics are re-created.

concurrency: two `run --clock wall` instances in one group on PostgreSQL, one
killed and restarted mid-stream, `tick` over and over, events for the same
clusters arriving all the while. With the wall clock the outcome depends on
timing, so what is checked are the invariants that must hold whatever it is.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

from bench.campaign_state import (
    compare,
    compare_outputs,
    history_invariants,
    snapshot,
    topic_outputs,
)
from bench.campaign_support import (
    DEPENDENCY_LOG_EVENTS,
    Context,
    Fleet,
    Probe,
    Proc,
    Producer,
    applied_twice_in_logs,
    build_stream,
    reference_snapshot_run,
    say,
    wait_for,
)
from bench.workload import cloud_events
from consumers.kafka_admin import create_topics, delete_topics
from tests import stories
from tests.brokers import Broker, make_broker
from tests.kafka_fixtures import KafkaTopics, create_topic_set, produce
from tests.service_process import migrate, read_topics, service_env

FAR = "2040-01-01T00:00:00+00:00"
SERVICE = ["run", "--clock", "event"]


def publish(topics: KafkaTopics, events: list[dict[str, Any]], seed: int) -> None:
    for name, topic in (("applications", topics.applications), ("interviews", topics.interviews)):
        on_topic = [e for e in events if stories.topic_of(e) == name]
        if on_topic:
            produce(topics.bootstrap, topic, stories.mixed_records(on_topic, seed), timeout_s=60)


def _log_delta(proc: Proc, before: dict[str, int]) -> dict[str, int]:
    proc.scan()
    return {
        e: n - before.get(e, 0)
        for e, n in proc.events.items()
        if e in DEPENDENCY_LOG_EVENTS and n > before.get(e, 0)
    }


# -- broker stop and restart -----------------------------------------------------------------


def broker_phase(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    rng = ctx.rng("broker")
    began = time.monotonic()
    events = cloud_events(cfg.broker_clusters, cfg.broker_events, seed=cfg.seed + 1001)
    ids = sorted({e["subject"] for e in events})
    first = set(ids[: len(ids) // 2])
    before = [e for e in events if e["subject"] in first]
    after = [e for e in events if e["subject"] not in first]
    say(f"broker: {len(events)} events over {len(ids)} clusters, broker killed in between")
    log_dir = ctx.work / "logs" / "broker"
    log_dir.mkdir(parents=True, exist_ok=True)
    with make_broker(log_dir / "broker") as broker:
        topics = create_topic_set(broker.bootstrap)
        url = ctx.new_database("broker")
        migrate(url)
        fleet = Fleet(service_env(topics.env(), {"GOCLUSTER_DATABASE_URL": url}), log_dir)
        probe = Probe(url)
        try:
            fault, mark, mid = _broker_outage(ctx, rng, broker, topics, fleet, probe, before, after)
        finally:
            fleet.close()
            probe.close()
        camp = snapshot(url)
        # A broker that keeps its log still has what was published before the kill.
        checked = {i for i, seq in camp.outbox_seq.items() if broker.keeps_data or seq > mark}
        records = read_topics(
            broker.bootstrap,
            [topics.labels, topics.deadlines, topics.membership],
            len(checked),
            timeout_s=120,
            settle_s=2.0,
        )
    steps = [("replay", before), ("tick", mid), ("replay", after)]
    ref_url, _ = reference_snapshot_run(steps, ctx.work / "reference", "broker")
    ref = snapshot(ref_url)
    database = compare(ref, camp)
    outputs = compare_outputs(
        ref.items["outbox"], topic_outputs(records), order=camp.outbox_seq, only=checked
    )
    invariants = history_invariants(camp)
    return {
        "events": len(events),
        "records": len(events),
        "clusters": len(ids),
        "fault": fault,
        "runs": fleet.runs,
        "crashes": fleet.crashes,
        "lost": database.total("lost") + outputs["lost"],
        "duplicated": database.total("duplicated")
        + outputs["duplicated"]
        + invariants["causes_applied_twice"]
        + invariants["timers_fired_twice"],
        "mismatched": database.total("mismatched") + outputs["mismatched"],
        "unexpected": database.total("unexpected") + outputs["unexpected"],
        "database": database.to_json(),
        "outputs_after_restart": outputs,
        "invariants": invariants,
        "reference": "gocluster replay of the first half, tick --now T --no-publish, "
        "replay of the second half, on a fresh SQLite",
        "duration_s": round(time.monotonic() - began, 1),
    }


def _broker_outage(
    ctx: Context,
    rng: Any,
    broker: Broker,
    topics: KafkaTopics,
    fleet: Fleet,
    probe: Probe,
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
) -> tuple[dict[str, Any], int, str]:
    proc = fleet.start("service", SERVICE)
    wait_for(proc.partitions, 120, "the service to join")
    publish(topics, before, ctx.cfg.seed)
    wait_for(
        lambda: probe.inbox() == len(before) and probe.parked() == 0 and probe.unsent() == 0,
        300,
        "the first half applied and published",
        0.2,
    )
    due = probe.pending_due_times(datetime.fromisoformat(FAR))
    mid = due[len(due) // 2].isoformat() if due else FAR
    mark = probe.last_seq() or 0
    proc.scan()
    counts = dict(proc.events)
    assigned = proc.n("partitions assigned")
    down = round(rng.uniform(4.0, 8.0), 2)
    stderr_before = len(proc.stderr.splitlines())
    broker.kill()
    stopped = time.monotonic()
    say(f"broker: killed; tick --now {mid} leaves output to publish while it is down")
    tick = Proc(
        fleet.env,
        ["tick", "--now", mid, "--no-publish"],
        name="tick-1",
        log_dir=fleet.log_dir,
        log_stream="stderr",
    ).start()
    tick_code = tick.process.wait(timeout=300) if tick.process else None
    tick.terminate()
    pending = probe.unsent()
    time.sleep(max(0.0, down - (time.monotonic() - stopped)))
    alive_while_down = proc.alive
    # What an operator sees while it is down: the service's own JSON lines, and
    # kafka-python's (stdlib logging on stderr).
    said_while_down = _log_delta(proc, counts)
    library_lines = proc.stderr.splitlines()[stderr_before:]
    broker.start()
    restarted = time.monotonic()
    inputs = {f"{t}/{p}" for t in topics.inputs for p in range(3)}
    if broker.keeps_data:
        # Topics, the group and its committed offsets survived: the consumer carries on
        # from its offsets whether or not the group rebalanced.
        wait_for(lambda: proc.partitions() == inputs, 180, "the service to own its inputs", 0.2)
    else:
        create_topics(
            {"bootstrap_servers": broker.bootstrap},
            dict.fromkeys(topics.inputs, 3) | dict.fromkeys(topics.outputs, 3),
        )
        wait_for(
            lambda: proc.n("partitions assigned") > assigned and proc.partitions() == inputs,
            180,
            "the service to re-join the group the broker forgot",
            0.2,
        )
    rejoined = round(time.monotonic() - restarted, 2)
    publish(topics, after, ctx.cfg.seed + 1)
    wait_for(
        lambda: (
            probe.inbox() == len(before) + len(after)
            and probe.parked() == 0
            and probe.unsent() == 0
        ),
        300,
        "the second half applied and everything published",
        0.2,
    )
    caught_up = round(time.monotonic() - restarted, 2)
    same = fleet.procs.get("service") is proc and proc.alive
    lines = _log_delta(proc, counts)
    code = fleet.terminate("service")
    fault = ctx.record(
        "broker",
        f"{broker.name} broker SIGKILLed and restarted"
        + (" on its data" if broker.keeps_data else " (all data lost), topics re-created"),
        target=f"{broker.name} broker",
        down_s=down,
        tick_while_down={"now": mid, "exit": tick_code, "outputs_pending": pending},
        service_alive_while_down=alive_while_down,
        service_never_restarted=same and not fleet.crashes,
        rejoined_after_s=rejoined,
        all_applied_and_published_after_s=caught_up,
        service_exit_on_sigterm=code,
        log_lines={proc.name: lines},
        service_log_lines_while_down=said_while_down,
        library_stderr_lines_while_down=len(library_lines),
        library_stderr_examples=sorted({line[:160] for line in library_lines})[:4],
    )
    return fault, mark, mid


# -- two instances, timers and events on the same clusters --------------------------------------


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
    records = read_topics(
        topics.bootstrap,
        [topics.labels, topics.deadlines, topics.membership],
        camp.count("outbox"),
        timeout_s=120,
        settle_s=2.0,
    )
    with contextlib.suppress(Exception):
        delete_topics({"bootstrap_servers": ctx.bootstrap}, [*topics.inputs, *topics.outputs])
    expected = {f"{e['source']}|{e['id']}" for e in stream.events}
    received = set(camp.items["inbox"])
    outcomes = Counter(v[0][2] for v in camp.items["inbox"].values())
    dlq_origins = {repr(sorted(r["origin"].items())) for r in camp.dlq_rows}
    outputs = compare_outputs(camp.items["outbox"], topic_outputs(records), order=camp.outbox_seq)
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

    wait_for(split, 120, "the two instances to split the input partitions")
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

    wait_for(applied, 300, "every event applied by the two instances", 0.2)
    ticks.append(_tick(fleet, len(ticks) + 1))
    wait_for(lambda: (fleet.check(), probe.unsent() == 0)[1], 300, "the outbox drained", 0.2)
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
