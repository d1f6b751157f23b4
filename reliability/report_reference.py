"""The report's sections on the phases compared with a reference (crash, broker,
concurrency) and the table of every fault injected."""

from __future__ import annotations

from typing import Any

from reliability.markdown import n, table

__all__ = ["broker_section", "concurrency_section", "crash_section", "faults_table"]

FIGURES = ("lost", "duplicated", "mismatched", "unexpected")


def faults_table(faults: list[dict[str, Any]]) -> list[str]:
    out = ["## Faults, in order", ""]
    rows = []
    for f in faults:
        what = f.get("target", "")
        if f.get("args"):
            what += " (`gocluster " + " ".join(f["args"]) + "`)"
        detail = _fault_detail(f)
        rows.append((f["n"], f["at_s"], f["phase"], f["kind"], what, detail))
    out += table(("#", "at s", "phase", "fault", "target", "when and what it interrupted"), rows)
    return out


def _fault_detail(f: dict[str, Any]) -> str:
    if f["kind"] == "SIGSTOP":
        after = f.get("others_applied_after_s", f.get("others_published_after_s"))
        verb = "published" if "others_published_after_s" in f else "applied"
        return (
            f"stopped while {f.get('ready') or 'never caught where wanted'}, for "
            f"{f.get('stopped_s')} s; the others {verb} again "
            + (f"{after} s after the stop" if after is not None else "not while it was stopped")
        )
    if f["kind"] == "database read-only":
        return (
            f"read-only {f.get('read_only_s')} s, {f.get('sessions_ended')} sessions ended, "
            f"{n(f.get('unsent_at_switch'))} outputs unsent at the switch, "
            f"{n(f.get('copies'))} identical copies published; log lines: "
            f"{_lines(f.get('log_lines', {}))}"
        )
    if f["kind"] == "SIGKILL":
        state = f.get("state", {})
        bits = [f"killed {f.get('delay_s')} s after: {f.get('ready', 'started')}"]
        bits += [f"{k.replace('_', ' ')} {n(v)}" for k, v in state.items() if v is not None]
        if f.get("outbox_busy") is not None:
            bits.append("outbox had unsent rows" if f["outbox_busy"] else "outbox idle")
        if f.get("relay_process"):
            bits.append(f"relay lock holder: {f['relay_process']}")
        return "; ".join(bits)
    if f["kind"] == "PostgreSQL restart":
        return (
            f"`pg_ctl stop -m {f.get('mode')}`, down {f.get('down_s')} s; processes survived: "
            f"{f.get('processes_survived')}; applying again {f.get('resumed_after_s')} s after "
            f"the start; log lines: {_lines(f.get('log_lines', {}))}"
        )
    if f["kind"] == "database unreachable at start":
        return (
            f"down {f.get('down_s')} s while both started; alive: {f.get('processes_alive')}; "
            f"log lines: {_lines(f.get('log_lines', {}))}"
        )
    if f["phase"] == "broker":
        tick = f.get("tick_while_down", {})
        return (
            f"down {f.get('down_s')} s; a tick while down left {tick.get('outputs_pending')} "
            f"outputs unsent; service alive while down: {f.get('service_alive_while_down')}, "
            f"never restarted: {f.get('service_never_restarted')}; re-joined after "
            f"{f.get('rejoined_after_s')} s; all applied and published after "
            f"{f.get('all_applied_and_published_after_s')} s; service log lines from the kill "
            f"to the end: {_lines(f.get('log_lines', {}))}; of which while it was down: "
            f"{_lines({'service': f.get('service_log_lines_while_down', {})})}; kafka-python "
            f"lines on stderr while down: {f.get('library_stderr_lines_while_down')}, e.g. "
            + "; ".join(f"`{x}`" for x in f.get("library_stderr_examples", [])[:2])
        )
    return ""


def _lines(per_process: dict[str, dict[str, int]]) -> str:
    parts = []
    for process, lines in per_process.items():
        said = ", ".join(f"“{event}” ×{n}" for event, n in lines.items())
        parts.append(f"{process}: {said or 'none'}")
    return "; ".join(parts)


def _comparison(phase: dict[str, Any]) -> list[str]:
    per_kind = phase.get("database", {}).get("per_kind", {})
    rows = [(k, *[v.get(f, 0) for f in FIGURES]) for k, v in per_kind.items()]
    out = table(("database item", *FIGURES), rows)
    examples = phase.get("database", {}).get("examples", {})
    if examples:
        out += ["Examples:", "", *[f"- {k}: {v}" for k, v in examples.items()], ""]
    return out


def _outputs(outputs: dict[str, Any], what: str) -> list[str]:
    return table(
        (
            "output events",
            "expected",
            "published ids",
            *FIGURES,
            "identical copies",
            "order violations",
        ),
        [
            (
                what,
                outputs.get("expected"),
                outputs.get("published_ids"),
                *[outputs.get(f) for f in FIGURES],
                outputs.get("republished_identical_copies"),
                outputs.get("order_violations"),
            )
        ],
    )


def _invariants(inv: dict[str, Any]) -> list[str]:
    keys = (
        "history_rows",
        "chain_breaks",
        "final_state_mismatches",
        "version_below_transactions",
        "causes_applied_twice",
        "timers_fired",
        "timers_fired_twice",
        "fired_timers_without_history",
        "timer_history_without_fired_timer",
    )
    return table(("invariant", "count"), [(k.replace("_", " "), inv.get(k)) for k in keys])


def crash_section(p: dict[str, Any], faults: list[dict[str, Any]]) -> list[str]:
    out = ["## Crash phase: kills during the stream, the timers and the relay drain", ""]
    if "error" in p:
        return [*out, f"**Failed:** {p['error']}", ""]
    s = p.get("stream", {})
    kills = p.get("kills", {})
    out += [
        f"{n(s.get('events'))} events over {n(s.get('clusters'))} clusters "
        "(tests/workload.py: applications, assessments, interviews scheduled, cancelled and "
        f"held, renewals), plus {n(s.get('redeliveries'))} upstream re-deliveries and "
        f"{n(s.get('bad_records'))} bad records, published at {s.get('rate_per_s')} records/s "
        "in a seeded mix of structured and binary mode, while `gocluster run --clock event` "
        "and a second process `run --only relay` were killed and restarted. Then the timers: "
        "`tick --now T --no-publish` at several horizons and `run --clock wall --only "
        "timers`, each killed while firing and re-run until nothing was due (the last run "
        "of each tick must fire nothing); then `run --only relay` killed while draining the "
        "outbox. Each kill waits until its target is at work (joined the group, holds the "
        "relay lock with rows to publish, committed or opened its first firing "
        "transaction), then a seeded random delay.",
        "",
        "SIGKILLs: "
        + ", ".join(f"{v} × {k}" for k, v in kills.items())
        + f"; process runs: {n(p.get('runs'))}; unexpected exits: {len(p.get('crashes', []))}; "
        f"exit codes on SIGTERM: {p.get('exit_codes')}.",
        "",
        f"Reference: {p.get('reference', {}).get('how')}; replayed again with another "
        "interleaving of the two topics: agrees "
        f"{p.get('reference', {}).get('second_interleaving_agrees')}. Items in it: "
        + ", ".join(f"{k} {n(v)}" for k, v in p.get("reference", {}).get("items", {}).items())
        + ".",
        "",
        f"**Lost {n(p.get('lost'))}, duplicated {n(p.get('duplicated'))}, mismatched "
        f"{n(p.get('mismatched'))}, unexpected {n(p.get('unexpected'))}** "
        f"(phase took {n(p.get('duration_s'))} s).",
        "",
    ]
    out += _comparison(p)
    out += _outputs(p.get("outputs", {}), "in the output topics vs the reference")
    dlq = p.get("dlq", {})
    out += table(
        ("DLQ", "bad records", "in the DLQ", *FIGURES, "identical copies"),
        [
            (
                "by original topic/partition/offset",
                dlq.get("expected"),
                dlq.get("in_dlq"),
                *[dlq.get(f) for f in FIGURES],
                dlq.get("republished_identical_copies"),
            )
        ],
    )
    out += _invariants(p.get("invariants", {}))
    if p.get("notes"):
        out += ["Notes:", "", *[f"- {n}" for n in p["notes"]], ""]
    return out


def broker_section(p: dict[str, Any]) -> list[str]:
    out = ["## Broker phase: the broker killed and restarted", ""]
    if "error" in p:
        return [*out, f"**Failed:** {p['error']}", ""]
    out += [
        f"{n(p.get('events'))} events over {n(p.get('clusters'))} clusters on an Apache "
        "Kafka broker of this phase's own: the first half applied and published, the broker "
        "SIGKILLed, a `tick --no-publish` while it is down leaves output for the relay, the "
        "broker started again on its data (topics, the group's committed offsets and "
        "producer ids survive), then the second half published. The service process must "
        "never exit, and every output (before and after the kill) must be in the topics "
        "with one content. Reference: "
        f"{p.get('reference')}.",
        "",
        f"**Lost {n(p.get('lost'))}, duplicated {n(p.get('duplicated'))}, mismatched "
        f"{n(p.get('mismatched'))}, unexpected {n(p.get('unexpected'))}** "
        f"(phase took {n(p.get('duration_s'))} s).",
        "",
    ]
    out += _comparison(p)
    out += _outputs(p.get("outputs", {}), "in the output topics vs the reference")
    return out


def concurrency_section(p: dict[str, Any]) -> list[str]:
    out = ["## Concurrency phase: two instances, timers and events on the same clusters", ""]
    if "skipped" in p:
        return [*out, f"Skipped: {p['skipped']}.", ""]
    if "error" in p:
        return [*out, f"**Failed:** {p['error']}", ""]
    ticks = p.get("ticks", [])
    out += [
        f"Two `gocluster run --clock wall` in one group on PostgreSQL (6 input partitions), "
        f"{n(p.get('events'))} events (+{n(p.get('redeliveries'))} re-deliveries) over "
        f"{n(p.get('clusters'))} clusters published while both timer loops fire by the wall "
        f"clock, one instance is SIGKILLed and restarted mid-stream, and "
        f"{len(ticks)} `tick --now 2040-01-01 --no-publish` runs fire the rest alongside. "
        "The outcome depends on timing here, so invariants are checked instead of a "
        "reference: every event in the inbox once, no cause with two history rows, no timer "
        "fired twice or left due, each cluster's history an unbroken chain of states ending "
        "in its current state (a lost update breaks it), its version at least its number of "
        "transactions, every outbox event in the topics with one content.",
        "",
        f"(Phase took {n(p.get('duration_s'))} s.) "
        f"**Lost {n(p.get('lost'))}, duplicated {n(p.get('duplicated'))}, lost updates "
        f"{n(p.get('lost_updates'))}, unexpected {n(p.get('unexpected'))}.** Inbox "
        f"outcomes: {p.get('inbox_outcomes')}; timers pending and due after the last tick: "
        f"{p.get('timers_pending_after_final_tick')}; exit codes on SIGTERM: "
        f"{p.get('exit_codes')}; unexpected exits: {len(p.get('crashes', []))}.",
        "",
        "Timers fired by: "
        + ", ".join(f"{k} {n(v)}" for k, v in p.get("timers_fired_by", {}).items())
        + ". Lock contention (pg_stat_activity sampled every 50 ms): "
        + ", ".join(
            f"{k.replace('_', ' ')} {n(v)}" for k, v in p.get("lock_contention", {}).items()
        )
        + ".",
        "",
    ]
    out += _invariants(p.get("invariants", {}))
    out += _outputs(p.get("outputs", {}), "outbox vs topics")
    return out
