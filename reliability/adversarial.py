"""The adversarial phase: ids and sources built to collide or to break storage (see
reliability/adversarial_cases.py), then ordinary events behind them on the same
partitions.

Bounds: within `adversarial_bound_s` of the last publish no input partition has
records waiting (the group's committed offsets reach the end of every
partition), every record has its effect (inbox) or is in the DLQ with a reason,
and distinct inputs never share an output id: every applied case has its own
membership.changed, with an id no other case has.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from typing import Any

from kafka import KafkaProducer

from reliability.accounting import waiting_records
from reliability.adversarial_cases import Case, cases, record
from reliability.checks import at_most, fmt, verdict
from reliability.context import Context, say
from reliability.outputs import dlq_origin
from reliability.processes import Fleet
from tests import stories
from tests.kafka_fixtures import KafkaTopics, create_topic_set
from tests.service_process import inbox_outcomes, migrate, read_topics, service_env, wait_until
from tests.workload import cloud_events

__all__ = ["adversarial_phase"]

SERVICE = ["run", "--clock", "event"]
Sent = tuple[str, int, int]  # topic, partition, offset


def adversarial_phase(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    began = time.monotonic()
    url = ctx.new_database("adversarial")
    migrate(url)
    topics = create_topic_set(ctx.bootstrap, prefix="adversarial")
    fleet = Fleet(service_env(topics.env(), {"GOCLUSTER_DATABASE_URL": url}), ctx.logs("adv"))
    made = cases()
    followers = cloud_events(max(2, cfg.adversarial_followers // 6), cfg.adversarial_followers, 77)
    try:
        proc = fleet.start("service", SERVICE)
        wait_until(proc.partitions, 120, "the service to join")
        where, sent = _send(topics, made, followers)
        last = time.monotonic()
        say(f"adversarial: {len(made)} cases and {len(followers)} ordinary events published")
        cleared_s, waiting = _drained(topics, cfg.adversarial_bound_s, last)
        stuck_lines = proc.n("database unavailable, batch will be retried")
        error = (proc.last.get("database unavailable, batch will be retried") or {}).get("error")
        codes = {proc.name: fleet.terminate("service")}
    finally:
        fleet.close()
    inbox = inbox_outcomes(url)
    dlq_records = read_topics(topics.bootstrap, [topics.dlq], 0, timeout_s=30, settle_s=2)
    dlq = dict(dlq_origin(record) for record in dlq_records)
    keys = [(c.source, c.event_id) for c in made] + [(e["source"], e["id"]) for e in followers]
    unaccounted = [k for k, at in zip(keys, where, strict=True) if k not in inbox and at not in dlq]
    outputs = read_topics(topics.bootstrap, [topics.membership], 0, timeout_s=30, settle_s=2)
    shared, missing = _output_ids(made, inbox, outputs)
    waiting_n = sum(waiting.values())
    checks = [
        at_most(
            "records waiting after the bound",
            waiting_n,
            0,
            f"every partition drained {cleared_s} s after the last publish"
            if cleared_s is not None
            else f"partition stuck: {fmt(waiting_n)} records waiting "
            f"{fmt(cfg.adversarial_bound_s)} s after the last publish ({error})"[:400],
        ),
        at_most(
            "records neither applied nor in the DLQ",
            len(unaccounted),
            0,
            f"{fmt(len(unaccounted))} of {fmt(sent)} records neither applied nor in the DLQ",
        ),
        at_most(
            "inputs sharing an output id",
            len(shared) + len(missing),
            0,
            f"{fmt(len(shared))} output ids shared by distinct inputs, "
            f"{fmt(len(missing))} applied inputs without their own output",
        ),
    ]
    outcomes = Counter(inbox.get((c.source, c.event_id), "none") for c in made)
    figures = {
        "cases": len(made),
        "followers": len(followers),
        "drained_after_s": cleared_s,
        "waiting_per_partition": waiting,
        "retry_log_lines": stuck_lines,
        "case_outcomes": dict(outcomes),
        "dlq_classes": dict(Counter(dlq.values())),
        "unaccounted_examples": [repr(k)[:120] for k in unaccounted[:5]],
        "shared_examples": shared[:5],
        "missing_examples": missing[:5],
    }
    return verdict("adversarial", checks, figures) | {
        "events": len(made) + len(followers),
        "runs": fleet.runs,
        "exit_codes": codes,
        "crashes": fleet.crashes,
        "duration_s": round(time.monotonic() - began, 1),
    }


def _send(
    topics: KafkaTopics, made: list[Case], followers: list[dict[str, Any]]
) -> tuple[list[Sent], int]:
    """The cases, then the ordinary events; where each landed, in that order."""
    names = {"applications": topics.applications, "interviews": topics.interviews}
    records = [record(c) for c in made]
    records += [(stories.topic_of(e), *stories.structured_record(e)) for e in followers]
    producer = KafkaProducer(bootstrap_servers=topics.bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(names[t], key=k, value=v, headers=h) for t, k, v, h in records]
        producer.flush(timeout=60)
        metas = [f.get(timeout=60) for f in futures]
    finally:
        producer.close(timeout=10)
    return [(m.topic, m.partition, m.offset) for m in metas], len(records)


def _drained(
    topics: KafkaTopics, bound_s: float, since: float
) -> tuple[float | None, dict[str, int]]:
    """Seconds until no input record waits for the group, or None within the bound."""
    while True:
        waiting = waiting_records(topics.bootstrap, topics.group_id, topics.inputs)
        if not any(waiting.values()):
            return round(time.monotonic() - since, 2), waiting
        if time.monotonic() - since > bound_s:
            return None, waiting
        time.sleep(0.5)


def _output_ids(
    made: list[Case], inbox: dict[tuple[str, str], str], outputs: list[Any]
) -> tuple[list[str], list[str]]:
    """Output ids that two clusters' outputs carry, and applied cases without an output."""
    subjects: dict[str, set[str]] = defaultdict(set)
    of_cluster: dict[str, set[str]] = defaultdict(set)
    for out in outputs:
        event = json.loads(out.value)
        subjects[event["id"]].add(event["subject"])
        of_cluster[event["subject"]].add(event["id"])
    shared = sorted(i for i, s in subjects.items() if len(s) > 1)
    missing = [
        c.name + f" ({c.mode})"
        for c in made
        if inbox.get((c.source, c.event_id)) == "applied" and len(of_cluster[c.cluster_id]) != 1
    ]
    return shared, missing
