"""The parked phase: `parked_events` interviews scheduled for one cluster that has applied
but is not admitted yet, all parked; then its admission releases them.

Bounds: every event parked within `parked_bound_s` of the start of their
publication, every parked event released (applied or in the DLQ) within
`parked_bound_s` of the admission's publication, and the consumer never
exceeds its poll interval meanwhile (GOCLUSTER_KAFKA_MAX_POLL_INTERVAL_MS =
`parked_max_poll_interval_ms`): no rebalance takes its partitions away, while
the events park or while they are released ("partitions revoked" lines).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaProducer

from reliability.checks import at_most, fmt, verdict
from reliability.context import Context, say, seconds_until
from reliability.probes import Probe
from reliability.processes import Fleet
from tests import builders as b
from tests import stories
from tests.kafka_fixtures import KafkaTopics, create_topic_set
from tests.service_process import migrate, service_env, wait_until

__all__ = ["parked_phase"]

SERVICE = ["run", "--clock", "event"]
CLUSTER = "parked-cluster"
DAY = datetime(2025, 3, 3, 9, tzinfo=UTC)


def parked_phase(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    began = time.monotonic()
    n = cfg.parked_events
    url = ctx.new_database("parked")
    migrate(url)
    topics = create_topic_set(ctx.bootstrap, prefix="parked")
    env = service_env(
        topics.env(),
        {
            "GOCLUSTER_DATABASE_URL": url,
            "GOCLUSTER_KAFKA_MAX_POLL_INTERVAL_MS": str(cfg.parked_max_poll_interval_ms),
        },
    )
    fleet = Fleet(env, ctx.logs("parked"))
    probe = Probe(url)
    parked_s = released_s = None
    parked = released = 0
    try:
        proc = fleet.start("service", SERVICE)
        wait_until(proc.partitions, 120, "the service to join")
        _send(topics, [b.submitted(DAY, cluster_id=CLUSTER, event_id="parked-sub")])
        wait_until(lambda: probe.inbox() == 1, 60, "the application applied", 0.2)
        interviews = [
            b.scheduled(
                DAY + timedelta(minutes=i + 1),
                f"iv-{i:06d}",
                cluster_id=CLUSTER,
                event_id=f"parked-{i:06d}",
            )
            for i in range(n)
        ]
        sent = time.monotonic()
        _send(topics, interviews)
        say(f"parked: {n} interviews published in {time.monotonic() - sent:.0f} s")
        parked_s = seconds_until(lambda: probe.parked() == n, cfg.parked_bound_s, sent, 0.5)
        parked = probe.parked() or 0
        proc.scan()
        revoked_parking = proc.revoked
        admitted = time.monotonic()
        if parked_s is not None:
            assessed = b.assessed(DAY.date() + timedelta(days=1), cluster_id=CLUSTER)
            _send(topics, [assessed])
            released_s = seconds_until(
                lambda: probe.parked() == 0, cfg.parked_bound_s, admitted, 0.5
            )
            released = n - (probe.parked() or 0)
        proc.scan()
        revoked = proc.revoked
        waited = round(time.monotonic() - admitted, 1)
    finally:
        fleet.close()
        probe.close()
    if parked_s is None:
        release = f"release not tried: {fmt(parked)} of {fmt(n)} parked within the bound"
    else:
        taken = f"in {fmt(released_s)} s" if released_s is not None else f"after {fmt(waited)} s"
        release = f"{fmt(released)} of {fmt(n)} parked events released {taken}"
    checks = [
        at_most(
            "seconds to park the events",
            parked_s,
            cfg.parked_bound_s,
            f"{fmt(parked)} of {fmt(n)} events parked "
            + (f"in {fmt(parked_s)} s" if parked_s is not None else "within the bound"),
            f"{cfg.parked_bound_s:g} s",
        ),
        at_most(
            "seconds to release the parked events",
            released_s,
            cfg.parked_bound_s,
            release,
            f"{cfg.parked_bound_s:g} s",
        ),
        at_most(
            "rebalances while parking and releasing",
            revoked,
            0,
            f"{fmt(revoked)} rebalances took the consumer's partitions "
            f"({fmt(revoked_parking)} while parking), poll interval "
            f"{fmt(cfg.parked_max_poll_interval_ms)} ms",
        ),
    ]
    figures = {
        "parked_events": n,
        "parked_after_s": parked_s,
        "released_after_s": released_s,
        "released": released,
        "rebalances_while_parking": revoked_parking,
        "rebalances": revoked,
        "max_poll_interval_ms": cfg.parked_max_poll_interval_ms,
    }
    return verdict("parked", checks, figures) | {
        "events": n + 2,
        "runs": fleet.runs,
        "duration_s": round(time.monotonic() - began, 1),
    }


def _send(topics: KafkaTopics, events: list[dict[str, Any]]) -> None:
    """As fast as the broker takes them, structured mode, keyed by the cluster."""
    names = {"applications": topics.applications, "interviews": topics.interviews}
    producer = KafkaProducer(
        bootstrap_servers=topics.bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024
    )
    try:
        for event in events:
            key, value, headers = stories.structured_record(event)
            producer.send(names[stories.topic_of(event)], key=key, value=value, headers=headers)
        producer.flush(timeout=300)
    finally:
        producer.close(timeout=10)
