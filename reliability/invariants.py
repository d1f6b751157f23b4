"""Invariants of a database that hold whatever the timing of the faults: no lost update,
no cause applied twice, no timer fired twice."""

from __future__ import annotations

from collections import Counter
from typing import Any

from reliability.snapshot import Snapshot

__all__ = ["history_invariants"]


def history_invariants(snap: Snapshot) -> dict[str, Any]:
    """No lost update, no cause applied twice, no timer fired twice.

    Per cluster, in commit order, each history row starts from the state the
    previous one left (a lost update would break the chain: two transactions
    starting from the same state), and the cluster row ends in the last
    state. Each cause (input event or timer) has one history row; each fired
    timer has exactly one. The version counts the cluster's transactions, so
    it is at least the number of distinct write times in its history.
    """
    broken, final_wrong, version_low = [], [], []
    for cluster_id, chain in snap.history_chains.items():
        previous = None
        for cause_id, before, after in chain:
            if before is not None and previous is not None and before != previous:
                broken.append(f"{cluster_id}: {cause_id} starts from {before}, not {previous}")
            previous = after
        state = snap.items["clusters"].get(cluster_id, [(None,)])[0][0]
        if previous is not None and state != previous:
            final_wrong.append(f"{cluster_id}: row says {state}, history ends in {previous}")
        if snap.versions.get(cluster_id, 0) < snap.transactions.get(cluster_id, 0):
            version_low.append(
                f"{cluster_id}: version {snap.versions.get(cluster_id)} < "
                f"{snap.transactions[cluster_id]} transactions"
            )
    causes = snap.items["history"]
    twice = [k for k, v in causes.items() if len(v) > 1]
    fired = {k for k, v in snap.items["timers"].items() if v[0][-1] == "fired"}
    timer_rows = Counter(
        k.split("|", 1)[1] for k, v in causes.items() for c in v if str(c[1]).startswith("timer.")
    )
    fired_twice = [t for t, n in timer_rows.items() if n > 1]
    fired_without_row = sorted(fired - timer_rows.keys())
    rows_without_fired = sorted(timer_rows.keys() - fired)
    return {
        "clusters": len(snap.history_chains),
        "history_rows": sum(len(c) for c in snap.history_chains.values()),
        "chain_breaks": len(broken),
        "final_state_mismatches": len(final_wrong),
        "version_below_transactions": len(version_low),
        "causes_applied_twice": len(twice),
        "timers_fired": len(fired),
        "timers_fired_twice": len(fired_twice),
        "fired_timers_without_history": len(fired_without_row),
        "timer_history_without_fired_timer": len(rows_without_fired),
        "examples": (broken + final_wrong + version_low + twice + fired_twice)[:5]
        + fired_without_row[:3]
        + rows_without_fired[:3],
    }
