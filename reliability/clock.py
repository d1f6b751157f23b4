"""The clock phase: producers whose clocks are wrong, and results published late, under
`gocluster run --clock wall` (the service clock is the wall clock).

future
    Clusters admitted ten days ago, then an interview scheduled by a producer whose
    clock runs `clock_skew_days` ahead; and applications for fresh clusters from
    that producer.
late
    Clusters whose Bronze interview was due `clock_late_days` ago: the interview
    was held on the due date, its result is published now. The timer loop has run
    over them in between (their past-due reminders are out).

Rules that need no reference run, over every output the service decided (the
outbox row's `created_at` is the service clock at that moment): no
`deadline.breached` before the start of `due_on` + 1 by the service clock; no
output dated after the service clock; no breach of an obligation that a result
held on or before its due date met. Every record applied, parked or in the DLQ.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from reliability.accounting import outbox_rows, waiting_records
from reliability.checks import at_most, fmt, verdict
from reliability.context import Context, seconds_until
from reliability.processes import Fleet
from reliability.stream import publish
from tests import builders as b
from tests.kafka_fixtures import create_topic_set
from tests.service_process import migrate, service_env, wait_until
from workflows.dates import add_months, local_date, passes_at
from workflows.policy import load_policy

__all__ = ["clock_phase"]

SERVICE = ["run", "--clock", "wall"]
BREACHED = "gocluster.deadline.breached"


def clock_phase(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    began = time.monotonic()
    zone = load_policy().zone
    now = datetime.now(UTC)
    first, second, met_on_time = scenario(now, local_date(now, zone), cfg)
    url = ctx.new_database("clock")
    migrate(url)
    topics = create_topic_set(ctx.bootstrap, prefix="clock")
    fleet = Fleet(service_env(topics.env(), {"GOCLUSTER_DATABASE_URL": url}), ctx.logs("clock"))
    late = {c for c, _ in met_on_time}

    def drained() -> bool:
        return not any(waiting_records(topics.bootstrap, topics.group_id, topics.inputs).values())

    def reminded() -> bool:
        out = [
            r for r in outbox_rows(url) if r["cluster_id"] in late and r["stream"] == "deadlines"
        ]
        return len(out) >= 2 * len(late)

    try:
        proc = fleet.start("service", SERVICE)
        wait_until(proc.partitions, 120, "the service to join")
        publish(topics, first, cfg.seed)
        wait_until(drained, 120, "the admissions applied", 0.5)
        timer_loop_ran = seconds_until(reminded, 30, interval_s=0.5) is not None
        publish(topics, second, cfg.seed + 1)
        taken = seconds_until(drained, 120, interval_s=0.5) is not None
        time.sleep(3.0)  # a few rounds of the timer loop
        codes = {proc.name: fleet.terminate("service")}
    finally:
        fleet.close()
    rows = outbox_rows(url)
    checks, figures = judge(rows, met_on_time, zone, cfg)
    checks.append(
        at_most(
            "records not applied, parked or in the DLQ",
            0 if taken else len(second),
            0,
            "every record taken" if taken else "records still waiting 120 s after publication",
        )
    )
    figures |= {
        "events": len(first) + len(second),
        "timer_loop_ran_before_the_late_results": timer_loop_ran,
        "service_clock_at_start": now.isoformat(timespec="seconds"),
    }
    return verdict("clock", checks, figures) | {
        "events": len(first) + len(second),
        "runs": fleet.runs,
        "exit_codes": codes,
        "crashes": fleet.crashes,
        "duration_s": round(time.monotonic() - began, 1),
    }


def scenario(
    now: datetime, today: date, cfg: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[tuple[str, str], date]]:
    """First the admissions, then the future-dated and the late events; and, per late
    cluster, the day its Bronze obligation was met (held on its due date)."""
    ahead = now + timedelta(days=cfg.clock_skew_days)
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    met: dict[tuple[str, str], date] = {}
    for n in range(cfg.clock_clusters):
        c = f"clock-future-{n:03d}"
        admitted = today - timedelta(days=10)
        first += [
            b.submitted(now - timedelta(days=15), cluster_id=c, event_id=f"{c}-sub"),
            b.assessed(
                admitted, cluster_id=c, event_id=f"{c}-ass", published=now - timedelta(days=9)
            ),
        ]
        second.append(b.scheduled(ahead, f"{c}-iv", cluster_id=c, event_id=f"{c}-sch"))
        fresh = f"clock-ahead-{n:03d}"
        second.append(b.submitted(ahead, cluster_id=fresh, event_id=f"{fresh}-sub"))
        c = f"clock-late-{n:03d}"
        admitted = add_months(today - timedelta(days=cfg.clock_late_days), -6)
        due = add_months(admitted, 6)
        first += [
            b.submitted(admitted - timedelta(days=30), cluster_id=c, event_id=f"{c}-sub"),
            b.assessed(admitted, cluster_id=c, event_id=f"{c}-ass"),
            b.scheduled(
                admitted + timedelta(days=20), f"{c}-iv", cluster_id=c, event_id=f"{c}-sch"
            ),
        ]
        second.append(
            b.bronze(due, interview_id=f"{c}-iv", cluster_id=c, event_id=f"{c}-res", published=now)
        )
        met[(c, "bronze_interview")] = due
    return first, second, met


def judge(
    rows: list[dict[str, Any]], met_on_time: dict[tuple[str, str], date], zone: Any, cfg: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    early: list[float] = []  # days before the deadline passed, by the service clock
    ahead: list[float] = []  # days an output's time lies after the service clock
    false: list[str] = []
    for row in rows:
        if row["stream"] == "dlq":
            continue
        event = row["payload"]
        lead = datetime.fromisoformat(event["time"]) - row["created_at"]
        if lead > timedelta(0):
            ahead.append(lead / timedelta(days=1))
        if event["type"] != BREACHED:
            continue
        due = date.fromisoformat(event["data"]["due_on"])
        early_by = passes_at(due, zone) - row["created_at"]
        if early_by > timedelta(0):
            early.append(early_by / timedelta(days=1))
        held = met_on_time.get((event["subject"], event["data"]["obligation"]))
        if held is not None and held <= due:
            false.append(f"{event['subject']} {event['data']['obligation']} due {due}")
    most_early = max(early, default=0.0)
    most_ahead = max(ahead, default=0.0)
    checks = [
        at_most(
            "breaches before due_on + 1 by the service clock",
            len(early),
            0,
            f"{fmt(len(early))} breaches before their deadline passed, the earliest "
            f"{fmt(most_early)} days ({most_early / 365.25:.1f} years) before due",
        ),
        at_most(
            "outputs dated after the service clock",
            len(ahead),
            0,
            f"{fmt(len(ahead))} outputs dated after the service clock, up to "
            f"{fmt(most_ahead)} days ahead",
        ),
        at_most(
            "breaches of obligations met on time",
            len(false),
            0,
            f"{fmt(len(false))} breaches of {fmt(len(met_on_time))} Bronze obligations met on "
            f"the due date by results published {cfg.clock_late_days} days late",
        ),
    ]
    figures = {
        "outputs": len(rows),
        "breaches": sum(1 for r in rows if r["payload"].get("type") == BREACHED),
        "early_breaches": len(early),
        "earliest_breach_days_before_due": round(most_early, 1),
        "outputs_dated_after_the_clock": len(ahead),
        "most_days_ahead": round(most_ahead, 1),
        "false_breaches": false[:5],
        "skew_days": cfg.clock_skew_days,
        "late_days": cfg.clock_late_days,
    }
    return checks, figures
