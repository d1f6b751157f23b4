"""The report's sections on the fault phases that check bounds and rules (pause, readonly,
adversarial, clock, parked, soak): each check with its figure and bound, and, when
the result carries a `before_fixes` record, the same checks before the fixes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from reliability.markdown import n, table

__all__ = ["FAULT_SECTIONS", "fault_phases_table"]

TITLES = {
    "pause": "Pause phase: SIGSTOP of a member past its session timeout, inside its "
    "transaction, and of the relay leader",
    "readonly": "Readonly phase: a database that refuses writes while a relay has outputs",
    "adversarial": "Adversarial phase: ids and sources built to collide or break storage",
    "clock": "Clock phase: a producer clock years ahead, results published late",
    "parked": "Parked phase: many parked events for one cluster, then its admission",
    "soak": "Soak phase: table sizes under a steady stream with short retention horizons",
}
INTROS = {
    "pause": "Six input partitions, two `run --only consumer` members and `run --only relay` "
    "processes on PostgreSQL; each case SIGSTOPs one process (it keeps its sockets, "
    "sessions and locks), measures how long the others take to apply (or publish) what "
    "arrives meanwhile, SIGCONTs it, and checks nothing was lost, applied twice or written "
    "stale (history chains and versions). The member inside its transaction is caught with "
    "pg_stat_activity (`idle in transaction` with a transaction id, "
    "GOCLUSTER_KAFKA_MAX_POLL_RECORDS=5).",
    "readonly": "`ALTER DATABASE … SET default_transaction_read_only = on` and every session "
    "ended, while the consumer has applied a backlog the relay has not published; a relay "
    "starts, more input arrives, and after some seconds writes are allowed again. Identical "
    "copies are counted on the output topics per episode.",
    "adversarial": "Applications with ids and sources that join to the same key "
    "(`/portal\\x1fx`+`1` and `/portal`+`x\\x1f1`), control characters (also NUL, which "
    "JSON escapes allow), the longest ids and sources the schema allows, Unicode "
    "look-alikes (Cyrillic o, NFC/NFD, fullwidth digits, zero-width space), a lone "
    "surrogate; each in structured and binary mode, then ordinary events behind them.",
    "clock": "`gocluster run --clock wall`: admitted clusters get an interview from a "
    "producer whose clock is years ahead, fresh clusters an application from it; clusters "
    "whose Bronze interview was held on its due date get the result days later, after the "
    "timer loop has passed over them. Rules without a reference run, on every output "
    "decided (the outbox row's `created_at` is the service clock).",
    "parked": "Interviews scheduled for a cluster that has applied and is not admitted park; "
    "then the admission releases them all.",
    "soak": "A paced stream through `gocluster run --clock event`, horizons by "
    "GOCLUSTER_RETENTION_INBOX/_OUTBOX/_TIMERS/_HISTORY and `gocluster prune` every few "
    "seconds; rows (and bytes on PostgreSQL) of each table sampled over time.",
}


def fault_phases_table(result: dict[str, Any]) -> list[str]:
    phases = {k: v for k, v in result.get("phases", {}).items() if k in TITLES}
    if not phases:
        return []
    before = result.get("before_fixes", {})
    out = [
        "## Fault phases: bounds and rules",
        "",
        "These phases need no reference run: each checks bounds (time to apply or publish, "
        "copies, rebalances, table growth) and rules that hold whatever the timing.",
        "",
    ]
    rows = []
    for name, phase in phases.items():
        now = phase.get("summary") or phase.get("error") or phase.get("skipped", "")
        earlier = before.get("phases", {}).get(name, {})
        same = earlier.get("recorded") == result.get("started")
        rows.append(
            (name, _verdict(phase), now, "this run" if same else earlier.get("summary", "–"))
        )
    label = before.get("label", "before the fixes")
    out += table(("phase", "verdict", "this run", f"{label}"), rows)
    return out


def _verdict(phase: dict[str, Any]) -> str:
    if "skipped" in phase:
        return "skipped"
    return "**PASS**" if phase.get("passed") else "**FAIL**"


def _section(name: str) -> Callable[[dict[str, Any], dict[str, Any] | None], list[str]]:
    def render(phase: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
        out = [f"## {TITLES[name]}", "", INTROS[name], ""]
        if "skipped" in phase:
            return [*out, f"Skipped: {phase['skipped']}.", ""]
        if "error" in phase:
            return [*out, f"**Failed to run:** {phase['error']}", ""]
        out += [f"{_verdict(phase)} (phase took {n(phase.get('duration_s'))} s).", ""]
        out += _checks(phase.get("checks", []))
        if before and before.get("checks") and before.get("recorded"):
            out += [f"Before the fixes (recorded {before['recorded']}):", ""]
            out += _checks(before["checks"])
        out += EXTRAS.get(name, _figures)(phase)
        return out

    return render


def _checks(checks: list[dict[str, Any]]) -> list[str]:
    rows = [
        (c["check"], n(c["value"]), c["bound"], "pass" if c["passed"] else "**FAIL**", c["said"])
        for c in checks
    ]
    return table(("check", "measured", "bound", "verdict", "what was seen"), rows)


def _figures(phase: dict[str, Any]) -> list[str]:
    figures = phase.get("figures", {})
    lines = [f"- {k.replace('_', ' ')}: {_short(v)}" for k, v in figures.items()]
    return ["Figures:", "", *lines, ""] if lines else []


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 400 else text[:400] + " …"


def _readonly(phase: dict[str, Any]) -> list[str]:
    episodes = phase.get("figures", {}).get("episodes", [])
    rows = [
        (
            e["n"],
            e["unsent_at_switch"],
            e["read_only_s"],
            e["copies_while_read_only"],
            e["copies"],
            e["recovered_after_s"],
            ", ".join(f"“{k}” ×{v}" for k, v in e.get("relay_log_lines", {}).items()) or "none",
        )
        for e in episodes
    ]
    head = ["episode", "unsent at the switch", "read-only s", "copies while read-only"]
    head += ["copies in all", "all out after s", "relay log lines"]
    return table(head, rows)


def _soak(phase: dict[str, Any]) -> list[str]:
    samples = phase.get("samples", [])
    step = max(1, len(samples) // 12)
    shown = samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else [])
    tables = list(samples[0]["rows"]) if samples else []
    rows = [(s["t"], *[s["rows"].get(t) for t in tables]) for s in shown]
    start, end = phase.get("figures", {}).get("stream_s", ["?", "?"])
    out = [
        f"Rows per table over time (s since sampling began; the stream ran {start}-{end} s):",
        "",
    ]
    out += table(("s", *tables), rows)
    if samples and samples[0].get("bytes"):
        rows = [(s["t"], *[_kib(s["bytes"].get(t)) for t in tables]) for s in shown]
        out += ["KiB per table (pg_total_relation_size):", ""]
        out += table(("s", *tables), rows)
    return out + _figures({"figures": {k: v for k, v in phase["figures"].items() if k != "final"}})


def _kib(value: Any) -> Any:
    return round(value / 1024) if isinstance(value, int) else value


EXTRAS: dict[str, Callable[[dict[str, Any]], list[str]]] = {"readonly": _readonly, "soak": _soak}
FAULT_SECTIONS = {name: _section(name) for name in TITLES}
