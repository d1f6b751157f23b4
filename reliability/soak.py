"""The soak phase: a steady stream for `soak_seconds` through `gocluster run` with short
retention horizons, the table sizes sampled all the while.

The horizons go to the service by their announced names
(GOCLUSTER_RETENTION_INBOX, _OUTBOX, _TIMERS, _HISTORY as ISO 8601 durations,
GOCLUSTER_RETENTION_INTERVAL_S for pruning inside `run`), and `gocluster prune`
runs every `soak_prune_every_s` as an operator's timer would. Rows per table and,
on PostgreSQL, pg_total_relation_size are sampled every `soak_sample_s`.

Bound: each pruned table (inbox, outbox, the fired and cancelled timers,
history) is at most `soak_growth_bound` larger at its peak in the last third of
the stream than at its peak in the middle third, in rows; twice that in bytes
for inbox, outbox and history (space of deleted rows is reused only after a
vacuum). Without pruning, a table that grows with the input is half as large
again. The stream's mix of event kinds is the same all along (see `steady`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import func, select, text

from reliability.accounting import waiting_records
from reliability.checks import at_most, verdict
from reliability.context import Context, say
from reliability.probes import Probe
from reliability.processes import Fleet
from reliability.stream import Producer, build_stream
from tests.kafka_fixtures import create_topic_set
from tests.service_process import migrate, run_cli, service_env, wait_until
from tests.workload import cloud_events
from workflows.store.database import create_db_engine
from workflows.store.tables import metadata, timers

__all__ = ["TableSampler", "growth_checks", "soak_phase", "steady"]

SERVICE = ["run", "--clock", "event"]
PRUNED = ("inbox", "outbox", "timers", "history")
SAMPLED = (*PRUNED, "parked", "clusters", "labels", "obligations")
# Pending timers are live state (a few per cluster, and the clusters grow with the
# stream); the fired and cancelled ones are what retention removes, so the bound on
# rows applies to those, and the bound on bytes to the tables that are pure logs.
ROWS = ("inbox", "outbox", "timers closed", "history")
BYTES = ("inbox", "outbox", "history")


class TableSampler(threading.Thread):
    """Rows (and bytes on PostgreSQL) per table, every `interval_s`, from one session."""

    def __init__(self, url: str, interval_s: float) -> None:
        super().__init__(name="table-sampler", daemon=True)
        self.engine = create_db_engine(url)
        self.interval_s = interval_s
        self.began = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def sample(self) -> None:
        row: dict[str, Any] = {
            "t": round(time.monotonic() - self.began, 1),
            "rows": {},
            "bytes": {},
        }
        with self.engine.connect() as conn:
            for name in SAMPLED:
                table = metadata.tables[name]
                row["rows"][name] = conn.execute(select(func.count()).select_from(table)).scalar()
                if self.engine.dialect.name == "postgresql":
                    size = text("SELECT pg_total_relation_size(CAST(:t AS regclass))")
                    row["bytes"][name] = conn.execute(size, {"t": name}).scalar()
            closed = timers.c.status.in_(("fired", "cancelled"))
            row["rows"]["timers closed"] = conn.execute(
                select(func.count()).select_from(timers).where(closed)
            ).scalar()
        self.samples.append(row)

    def run(self) -> None:
        """Until stopped, then one last sample."""
        try:
            while not self.stop.wait(self.interval_s):
                self.sample()
            self.sample()
        finally:
            self.engine.dispose()


def soak_phase(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    began = time.monotonic()
    seed = cfg.seed + 5005
    total = int(cfg.soak_rate * cfg.soak_seconds)
    per_cluster = cfg.soak_events_per_cluster
    events = steady(cloud_events(max(2, total // per_cluster), total, seed=seed))
    stream = build_stream(events, seed, 0.0, 0)
    url = ctx.new_database("soak")
    migrate(url)
    topics = create_topic_set(ctx.bootstrap, prefix="soak")
    horizon = f"PT{cfg.soak_horizon_s}S"
    retention = {f"GOCLUSTER_RETENTION_{t.upper()}": horizon for t in PRUNED}
    retention["GOCLUSTER_RETENTION_INTERVAL_S"] = str(max(1, round(cfg.soak_prune_every_s)))
    env = service_env(topics.env(), {"GOCLUSTER_DATABASE_URL": url}, retention)
    fleet = Fleet(env, ctx.logs("soak"))
    probe = Probe(url)
    sampler = TableSampler(url, cfg.soak_sample_s)
    prunes: list[dict[str, Any]] = []
    try:
        proc = fleet.start("service", SERVICE)
        wait_until(proc.partitions, 120, "the service to join")
        inputs = {"applications": topics.applications, "interviews": topics.interviews}
        producer = Producer(topics.bootstrap, inputs, stream, cfg.soak_rate)
        sampler.sample()
        sampler.start()
        producer.start()
        stream_start = round(time.monotonic() - sampler.began, 1)
        say(f"soak: {len(events)} events at {cfg.soak_rate:g}/s, horizons {horizon}")
        while producer.is_alive():
            producer.join(timeout=cfg.soak_prune_every_s)
            fleet.check()
            if not prunes or prunes[-1]["exit"] == 0:
                prunes.append(_prune(env))
        stream_end = round(time.monotonic() - sampler.began, 1)
        wait_until(
            lambda: (
                not any(waiting_records(topics.bootstrap, topics.group_id, topics.inputs).values())
                and probe.unsent() == 0
            ),
            300,
            "the stream applied and published",
            1.0,
        )
        sampler.stop.set()
        sampler.join(timeout=30)
        codes = {proc.name: fleet.terminate("service")}
    finally:
        sampler.stop.set()
        if sampler.ident is not None:
            sampler.join(timeout=30)
        sampler.engine.dispose()
        fleet.close()
        probe.close()
    checks, growth = growth_checks(sampler.samples, stream_start, stream_end, cfg.soak_growth_bound)
    figures = {
        "events": len(events),
        "rate_per_s": cfg.soak_rate,
        "horizon": horizon,
        "stream_s": [stream_start, stream_end],
        "growth_middle_to_last_third": growth,
        "prune_runs": len(prunes),
        "prune_exit_codes": sorted({p["exit"] for p in prunes}),
        "prune_said": prunes[-1]["said"] if prunes else None,
        "final": sampler.samples[-1] if sampler.samples else None,
    }
    return verdict("soak", checks, figures) | {
        "samples": sampler.samples,
        "events": len(events),
        "runs": fleet.runs + len(prunes),
        "exit_codes": codes,
        "crashes": fleet.crashes,
        "duration_s": round(time.monotonic() - began, 1),
    }


def steady(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same events in an order whose mix does not change over the stream: cluster i's
    j-th event goes at slot i + j, so that every stretch of the stream holds every step
    of a story in the same proportion (in time order it would start with applications
    and end with interviews, and the service's work per event would grow along it).
    Each cluster keeps its own order, and with `--clock event` each cluster's timers
    fire by its own events, so the outcome is the same."""
    stories: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        stories.setdefault(event["subject"], []).append(event)
    slots = [
        (i + j, i, j, event)
        for i, story in enumerate(stories.values())
        for j, event in enumerate(story)
    ]
    return [event for *_, event in sorted(slots, key=lambda slot: slot[:3])]


def _prune(env: dict[str, str]) -> dict[str, Any]:
    done = run_cli(["prune"], env, timeout_s=120, check=False)
    said = (done.stderr or done.stdout).strip().splitlines()
    return {"exit": done.returncode, "said": said[-1][:300] if said else ""}


def growth_checks(
    samples: list[dict[str, Any]], start: float, end: float, bound: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per pruned table, in rows and (where sampled) bytes: the largest size in the last
    third of the stream against the largest in the middle third. Pruning runs in rounds,
    so sizes saw up and down; the largest of a window is its steady peak. A table that
    grows with the input grows by half from one to the other."""
    third = (end - start) / 3
    middle = [x for x in samples if start + third <= x["t"] <= start + 2 * third]
    last = [x for x in samples if start + 2 * third < x["t"] <= end + 1]
    if len(middle) < 2 or len(last) < 2:
        said = f"{len(middle)} and {len(last)} samples in the middle and last thirds"
        return [at_most("table samples", None, 0, said)], {}
    checks, growth = [], {}
    for measure, tables, limit in (("rows", ROWS, bound), ("bytes", BYTES, 2 * bound)):
        for table in tables:
            if table not in last[-1].get(measure, {}):
                continue
            before = max(int(x[measure][table]) for x in middle)
            after = max(int(x[measure][table]) for x in last)
            share = round((after - before) / max(before, 1), 3)
            growth[f"{table} {measure}"] = {"middle": before, "last": after, "growth": share}
            checks.append(
                at_most(
                    f"{table} {measure}: growth from the middle to the last third",
                    share,
                    limit,
                    f"{table} {measure} {share:+.0%} from the middle to the last third "
                    f"({before:,} -> {after:,})",
                    f"{limit:.0%}",
                )
            )
    return checks, growth
