"""The readonly phase: the database refuses writes but still serves reads, for some
seconds, while a relay has outputs to publish.

PostgreSQL is made read-only the way a failed-over replica or a full disk does it
to a service: `ALTER DATABASE ... SET default_transaction_read_only = on`, and
every session ended so that each reconnects under it. Each episode: the consumer
(`run --only consumer`) has applied a backlog the relay has not published, the
database turns read-only, a relay (`run --only relay`) starts, more input
arrives, and after `readonly_seconds` the database accepts writes again.

A relay can read and publish but cannot mark what it published as sent, so
what it publishes it will publish again. Bound: identical copies re-published
per episode at most one relay batch (500 rows). Afterwards every output is
published and marked sent, every input applied, nothing twice.
"""

from __future__ import annotations

import time
from typing import Any

from reliability.checks import at_most, fmt, verdict
from reliability.context import Context, say
from reliability.integrity import integrity, integrity_checks
from reliability.probes import OutputWatcher, Probe
from reliability.processes import Fleet, log_delta
from reliability.stream import publish
from tests.kafka_fixtures import KafkaTopics, create_topic_set
from tests.service_process import migrate, service_env, wait_until
from tests.workload import cloud_events

__all__ = ["readonly_phase"]

CONSUMER = ["run", "--clock", "event", "--only", "consumer"]
RELAY = ["run", "--clock", "event", "--only", "relay"]


def readonly_phase(ctx: Context) -> dict[str, Any]:
    if ctx.pg is None:
        return {"skipped": "a read-only database is made with PostgreSQL's own setting"}
    cfg = ctx.cfg
    began = time.monotonic()
    seed = cfg.seed + 4004
    events = cloud_events(max(2, cfg.readonly_events // 10), cfg.readonly_events, seed=seed)
    parts = 2 * cfg.readonly_episodes
    chunks = [
        events[i * len(events) // parts : (i + 1) * len(events) // parts] for i in range(parts)
    ]
    url = ctx.new_database("readonly")
    migrate(url)
    topics = create_topic_set(ctx.bootstrap, prefix="readonly")
    fleet = Fleet(service_env(topics.env(), {"GOCLUSTER_DATABASE_URL": url}), ctx.logs("readonly"))
    probe = Probe(url)
    watcher = OutputWatcher(topics.bootstrap, [topics.labels, topics.deadlines, topics.membership])
    episodes = []
    try:
        consumer = fleet.start("consumer", CONSUMER)
        wait_until(consumer.partitions, 120, "the consumer to join")
        watcher.start()
        published = 0
        for k in range(cfg.readonly_episodes):
            backlog, during = chunks[2 * k], chunks[2 * k + 1]
            episodes.append(
                _episode(ctx, k + 1, url, topics, fleet, probe, watcher, backlog, during)
            )
            published += len(backlog) + len(during)
            say(f"readonly: episode {k + 1}: {episodes[-1]['said']}")
        codes = {fleet.procs["consumer"].name: fleet.terminate("consumer")}
    finally:
        watcher.stop.set()
        fleet.close()
        probe.close()
    found = integrity(url, topics, fleet, {f"{e['source']}|{e['id']}" for e in events})
    checks = [
        at_most(f"episode {e['n']}: identical copies", e["copies"], cfg.relay_batch, e["said"])
        for e in episodes
    ]
    checks += integrity_checks("readonly", found)
    figures = {"episodes": episodes, "events": len(events), "relay_batch": cfg.relay_batch}
    return verdict("readonly", checks, figures) | {
        "integrity": found,
        "events": len(events),
        "runs": fleet.runs,
        "exit_codes": codes | {k: v for e in episodes for k, v in e["exit_codes"].items()},
        "crashes": fleet.crashes,
        "duration_s": round(time.monotonic() - began, 1),
    }


def _episode(
    ctx: Context,
    n: int,
    url: str,
    topics: KafkaTopics,
    fleet: Fleet,
    probe: Probe,
    watcher: OutputWatcher,
    backlog: list[dict[str, Any]],
    during: list[dict[str, Any]],
) -> dict[str, Any]:
    cfg = ctx.cfg
    target = (probe.inbox() or 0) + len(backlog)
    publish(topics, backlog, cfg.seed + n)
    wait_until(lambda: (fleet.check(), probe.inbox() == target)[1], 180, "the backlog applied", 0.2)
    unsent = probe.unsent() or 0
    copies, ids = watcher.copies(), watcher.seen()
    database = url.rsplit("/", 1)[-1]
    ended = ctx.pg.set_read_only(database, True)
    switched = time.monotonic()
    consumer = fleet.procs["consumer"]
    consumer_lines = dict(consumer.events)
    relay = fleet.start("relay", RELAY)
    publish(topics, during, cfg.seed + 100 + n)
    time.sleep(max(0.0, cfg.readonly_seconds - (time.monotonic() - switched)))
    read_only_s = round(time.monotonic() - switched, 2)
    copies_while = watcher.copies() - copies
    ctx.pg.set_read_only(database, False)
    writable = time.monotonic()
    target += len(during)
    wait_until(
        lambda: (fleet.check(), probe.inbox() == target and probe.unsent() == 0)[1],
        300,
        "everything applied and published after the database accepts writes again",
        0.2,
    )
    recovered_s = round(time.monotonic() - writable, 2)
    time.sleep(2.0)  # late copies still on their way count too
    total = watcher.copies() - copies
    relay_lines = log_delta(relay, {})
    code = fleet.terminate("relay")
    said = (
        f"{fmt(total)} identical copies for {fmt(unsent)} unsent outputs in "
        f"{fmt(read_only_s)} s read-only"
    )
    ctx.record(
        "readonly",
        "database read-only",
        target="PostgreSQL",
        read_only_s=read_only_s,
        sessions_ended=ended,
        unsent_at_switch=unsent,
        copies=total,
        log_lines={relay.name: relay_lines, consumer.name: log_delta(consumer, consumer_lines)},
    )
    return {
        "n": n,
        "unsent_at_switch": unsent,
        "read_only_s": read_only_s,
        "copies_while_read_only": copies_while,
        "copies": total,
        "outputs_published": watcher.seen() - ids,
        "recovered_after_s": recovered_s,
        "relay_log_lines": relay_lines,
        "exit_codes": {relay.name: code},
        "said": said,
    }
