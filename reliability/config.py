"""The campaign's sizes and bounds: one dataclass, defaults for the full run, every field an
option of `python -m reliability`."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FAULT_PHASES", "PHASES", "Config", "split_kills"]

# The phases that compare with an uninterrupted reference, then those that check bounds
# and rules needing no reference (stalls, copies, adversarial ids, clock, size).
REFERENCE_PHASES = ("crash", "broker", "concurrency")
FAULT_PHASES = ("pause", "readonly", "adversarial", "clock", "parked", "soak")
PHASES = REFERENCE_PHASES + FAULT_PHASES


@dataclass
class Config:
    events: int = 10_000
    clusters: int = 1_000
    kills: int = 24
    seed: int = 1
    backend: str = "postgres"
    pg_restarts: int = 3
    duplicate_share: float = 0.02
    bad_records: int = 20
    max_poll_records: int = 100
    phases: tuple[str, ...] = PHASES
    broker_events: int = 2_000
    broker_clusters: int = 200
    concurrency_events: int = 3_000
    concurrency_clusters: int = 300
    concurrency_seconds: float = 20.0
    # pause: SIGSTOP of a member past its session timeout, of a member inside its batch
    # transaction, of the relay leader; each bound is the time from the pause until
    # the input is applied (or the outputs published) again by the others.
    pause_events: int = 600
    pause_session_timeout_ms: int = 3_000
    pause_bound_s: float = 30.0
    relay_lease_s: int = 5
    db_lock_timeout_ms: int = 2_000
    db_idle_in_transaction_timeout_ms: int = 5_000
    # readonly: episodes of a database that refuses writes while a relay has unsent rows;
    # bound: identical copies re-published per episode, at most one relay batch.
    readonly_events: int = 1_500
    readonly_seconds: float = 20.0
    readonly_episodes: int = 2
    relay_batch: int = 500
    # adversarial: ids and sources that collide when joined, control characters, the
    # longest ids the schema allows, look-alikes; bound: every record accounted for.
    adversarial_followers: int = 300
    adversarial_bound_s: float = 60.0
    # clock: clusters per scenario (future-dated, late result, on time).
    clock_clusters: int = 12
    clock_skew_days: int = 4 * 365
    clock_late_days: int = 3
    # parked: events parked for one cluster, then its admission.
    parked_events: int = 100_000
    parked_bound_s: float = 300.0
    parked_max_poll_interval_ms: int = 60_000
    # soak: a steady stream with short retention horizons; table sizes sampled.
    soak_seconds: float = 180.0
    soak_rate: float = 60.0
    # Short stories (a few years from 2016) keep every timer's due time in the past, so
    # that closed timers are prunable; the number of clusters grows with the stream.
    soak_events_per_cluster: int = 6
    soak_horizon_s: int = 20
    soak_sample_s: float = 5.0
    soak_prune_every_s: float = 10.0
    soak_growth_bound: float = 0.25
    out: str | None = "reliability/results/campaign.json"
    report: str | None = "docs/RELIABILITY.md"
    bad_input: str | None = "reliability/results/bad_input.json"
    record_before_fixes: str | None = None
    command: str = ""
    kill_split: dict[str, int] = field(default_factory=dict)


def split_kills(total: int) -> dict[str, int]:
    """Where the SIGKILLs go: the stream (consumer, relay), the timers (tick, loop), the drain."""
    split = {
        "consumer": round(0.4 * total),
        "relay": round(0.2 * total),
        "tick": round(0.15 * total),
        "timer_loop": round(0.1 * total),
    }
    split["drain"] = max(0, total - sum(split.values()))
    return split
