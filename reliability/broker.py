"""The broker phase: Apache Kafka SIGKILLed while the service runs and a tick leaves
output to publish, then started again on its data (topics, the group, its committed
offsets and producer ids survive). The service must never exit, carry on from its
committed offsets, publish the pending output and apply the rest.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from reliability.context import Context, say
from reliability.invariants import history_invariants
from reliability.outputs import compare_outputs, read_outputs
from reliability.probes import Probe
from reliability.processes import Fleet, Proc, log_delta
from reliability.reference import FAR, reference_snapshot_run
from reliability.snapshot import compare, snapshot
from reliability.stream import publish
from tests.brokers import APACHE, Broker, make_broker
from tests.kafka_fixtures import KafkaTopics, create_topic_set
from tests.service_process import migrate, service_env, wait_until
from tests.workload import cloud_events

__all__ = ["broker_phase"]

SERVICE = ["run", "--clock", "event"]


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
    log_dir = ctx.logs("broker")
    with make_broker(log_dir / "broker", APACHE) as broker:
        topics = create_topic_set(broker.bootstrap)
        url = ctx.new_database("broker")
        migrate(url)
        fleet = Fleet(service_env(topics.env(), {"GOCLUSTER_DATABASE_URL": url}), log_dir)
        probe = Probe(url)
        try:
            fault, mid = _broker_outage(ctx, rng, broker, topics, fleet, probe, before, after)
        finally:
            fleet.close()
            probe.close()
        camp = snapshot(url)
        published = read_outputs(topics, len(camp.outbox_seq))
    steps = [("replay", before), ("tick", mid), ("replay", after)]
    ref_url, _ = reference_snapshot_run(steps, ctx.work / "reference", "broker")
    ref = snapshot(ref_url)
    database = compare(ref, camp)
    outputs = compare_outputs(ref.items["outbox"], published, order=camp.outbox_seq)
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
        "outputs": outputs,
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
) -> tuple[dict[str, Any], str]:
    proc = fleet.start("service", SERVICE)
    wait_until(proc.partitions, 120, "the service to join")
    publish(topics, before, ctx.cfg.seed)
    wait_until(
        lambda: probe.inbox() == len(before) and probe.parked() == 0 and probe.unsent() == 0,
        300,
        "the first half applied and published",
        0.2,
    )
    due = probe.pending_due_times(datetime.fromisoformat(FAR))
    mid = due[len(due) // 2].isoformat() if due else FAR
    proc.scan()
    counts = dict(proc.events)
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
    said_while_down = log_delta(proc, counts)
    library_lines = proc.stderr.splitlines()[stderr_before:]
    broker.start()
    restarted = time.monotonic()
    inputs = {f"{t}/{p}" for t in topics.inputs for p in range(3)}
    # Topics, the group and its committed offsets survived: the consumer carries on
    # from its offsets whether or not the group rebalanced.
    wait_until(lambda: proc.partitions() == inputs, 180, "the service to own its inputs", 0.2)
    rejoined = round(time.monotonic() - restarted, 2)
    publish(topics, after, ctx.cfg.seed + 1)
    wait_until(
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
    lines = log_delta(proc, counts)
    code = fleet.terminate("service")
    fault = ctx.record(
        "broker",
        f"{broker.name} broker SIGKILLed and restarted on its data",
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
    return fault, mid
