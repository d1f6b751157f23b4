"""After a fault phase: nothing lost, nothing applied twice, no stale write, whatever the
timing. These need no reference run: they hold for any interleaving."""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from reliability.checks import at_most, fmt
from reliability.invariants import history_invariants
from reliability.outputs import compare_outputs, read_outputs
from reliability.processes import Fleet, applied_twice_in_logs
from reliability.snapshot import snapshot
from tests.kafka_fixtures import KafkaTopics

__all__ = ["integrity", "integrity_checks"]


def integrity(url: str, topics: KafkaTopics, fleet: Fleet, expected: Set[str]) -> dict[str, Any]:
    """`expected`: the input events ("source|id") that must be in the inbox."""
    camp = snapshot(url)
    published = read_outputs(topics, camp.count("outbox"))
    outputs = compare_outputs(camp.items["outbox"], published, order=camp.outbox_seq)
    invariants = history_invariants(camp)
    twice = applied_twice_in_logs(fleet)
    missing = sorted(expected - camp.items["inbox"].keys())
    return {
        "inputs_lost": len(missing),
        "outputs_lost": outputs["lost"],
        "applied_twice": len(twice)
        + invariants["causes_applied_twice"]
        + invariants["timers_fired_twice"],
        "outputs_with_two_contents": outputs["duplicated"],
        "stale_writes": invariants["chain_breaks"]
        + invariants["final_state_mismatches"]
        + invariants["version_below_transactions"],
        "identical_copies": outputs["republished_identical_copies"],
        "unsent_at_end": camp.unsent,
        "parked_at_end": camp.parked,
        "outputs": outputs,
        "invariants": invariants,
        "examples": {"inputs_lost": missing[:5], "applied_twice_in_logs": twice[:5]},
    }


def integrity_checks(prefix: str, found: dict[str, Any]) -> list[dict[str, Any]]:
    lost = found["inputs_lost"] + found["outputs_lost"] + found["unsent_at_end"]
    twice = found["applied_twice"] + found["outputs_with_two_contents"]
    return [
        at_most(
            f"{prefix}: lost",
            lost,
            0,
            f"{fmt(found['inputs_lost'])} inputs not applied, {fmt(found['outputs_lost'])} "
            f"outputs not published, {fmt(found['unsent_at_end'])} not marked sent",
        ),
        at_most(f"{prefix}: applied twice", twice, 0, f"{fmt(twice)} effects had twice"),
        at_most(
            f"{prefix}: stale writes",
            found["stale_writes"],
            0,
            f"{fmt(found['stale_writes'])} broken state chains or versions",
        ),
    ]
