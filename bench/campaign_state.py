"""What the reliability campaign compares: a canonical dump of the database and of the
output topics, and the invariants that must hold whatever the timing.

Every effect the service can have is an item with an identity and a content:
a cluster's state, a label, an obligation, a timer, a history row (one per
cause: an input event or a fired timer), an inbox outcome, an outbox event.
Comparing a campaign's database with an uninterrupted reference gives, per
kind of item:

- lost: in the reference, missing from the campaign;
- unexpected: in the campaign, not in the reference;
- mismatched: in both, with different content (a lost update shows up here);
- duplicated: an identity present more than once in the campaign (a cause
  applied twice, an output id published with two different contents).

Bookkeeping that legitimately differs between runs (when a row was written or
sent, the cluster's version counter, which counts transactions and so depends
on batching) is left out of the contents; the version has its own check.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select

from workflows.store.database import create_db_engine
from workflows.store.tables import (
    clusters,
    history,
    inbox,
    labels,
    obligations,
    outbox,
    parked,
    timers,
)

__all__ = [
    "Comparison",
    "Snapshot",
    "compare",
    "compare_dlq",
    "compare_outputs",
    "history_invariants",
    "snapshot",
    "topic_outputs",
]

KINDS = ("clusters", "labels", "obligations", "timers", "history", "inbox", "outbox")


def _plain(value: Any) -> Any:
    """Dates and times as ISO text, JSON as canonical text: comparable across backends."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _row(mapping: Mapping[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(_plain(mapping[c]) for c in columns)


@dataclass
class Snapshot:
    """A database's effects, as identity -> list of contents (more than one = duplicated)."""

    items: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    transactions: dict[str, int] = field(default_factory=dict)  # distinct history recorded_at
    history_chains: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    outbox_seq: dict[str, int] = field(default_factory=dict)  # event id -> seq
    dlq_rows: list[dict[str, Any]] = field(default_factory=list)
    parked: int = 0
    unsent: int = 0

    def count(self, kind: str) -> int:
        return sum(len(v) for v in self.items.get(kind, {}).values())


def snapshot(url: str) -> Snapshot:
    engine = create_db_engine(url)
    snap = Snapshot(items={kind: defaultdict(list) for kind in KINDS})
    try:
        with engine.connect() as conn:
            _read(conn, snap)
    finally:
        engine.dispose()
    snap.items = {kind: dict(v) for kind, v in snap.items.items()}
    return snap


def _read(conn: Any, snap: Snapshot) -> None:
    items = snap.items
    cluster_cols = ("state", "cycle", "cluster_name", "organisation", "federal_state")
    for row in conn.execute(select(clusters)).mappings():
        content = (*_row(row, cluster_cols), _plain(row["admitted_on"]))
        items["clusters"][row["cluster_id"]].append(content)
        snap.versions[row["cluster_id"]] = row["version"]
    label_cols = (
        "cluster_id",
        "level",
        "awarded_on",
        "valid_until",
        "interview_id",
        "renewal",
        "status",
        "cause_id",
    )
    for row in conn.execute(select(labels)).mappings():
        items["labels"][row["label_id"]].append(_row(row, label_cols))
    obligation_cols = ("cluster_id", "kind", "cycle", "due_on", "status", "cause_id", "closed_by")
    for row in conn.execute(select(obligations)).mappings():
        items["obligations"][row["obligation_id"]].append(_row(row, obligation_cols))
    timer_cols = ("cluster_id", "kind", "due_at", "ref", "days_left", "status")
    for row in conn.execute(select(timers)).mappings():
        items["timers"][row["timer_id"]].append(_row(row, timer_cols))
    history_cols = ("at", "cause_type", "from_state", "to_state", "note")
    recorded: dict[str, set[Any]] = defaultdict(set)
    for row in conn.execute(select(history).order_by(history.c.id)).mappings():
        key = f"{row['cluster_id']}|{row['cause_id']}"
        content = _row(row, history_cols)
        items["history"][key].append(content)
        snap.history_chains.setdefault(row["cluster_id"], []).append(
            (row["cause_id"], row["from_state"], row["to_state"])
        )
        recorded[row["cluster_id"]].add(row["recorded_at"])
    snap.transactions = {k: len(v) for k, v in recorded.items()}
    for row in conn.execute(select(inbox)).mappings():
        key = f"{row['source']}|{row['event_id']}"
        items["inbox"][key].append(_row(row, ("cluster_id", "digest", "outcome")))
    for row in conn.execute(select(outbox).order_by(outbox.c.seq)).mappings():
        if row["sent_at"] is None:
            snap.unsent += 1
        if row["stream"] == "dlq":
            snap.dlq_rows.append(dict(row["payload"]))
            continue
        items["outbox"][row["event_id"]].append((row["stream"], _plain(row["payload"])))
        snap.outbox_seq[row["event_id"]] = row["seq"]
    snap.parked = len(conn.execute(select(parked.c.id)).all())


@dataclass
class Comparison:
    """Per kind of item: how many were lost, unexpected, mismatched, duplicated (+ examples)."""

    per_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, what: str, keys: Iterable[Any]) -> None:
        found = sorted(str(k) for k in keys)
        self.per_kind.setdefault(kind, {}).setdefault(what, 0)
        self.per_kind[kind][what] += len(found)
        if found:
            self.examples.setdefault(f"{kind} {what}", []).extend(found[:5])

    def total(self, what: str) -> int:
        return sum(counts.get(what, 0) for counts in self.per_kind.values())

    @property
    def clean(self) -> bool:
        return all(self.total(w) == 0 for w in ("lost", "unexpected", "mismatched", "duplicated"))

    def to_json(self) -> dict[str, Any]:
        return {
            "lost": self.total("lost"),
            "duplicated": self.total("duplicated"),
            "mismatched": self.total("mismatched"),
            "unexpected": self.total("unexpected"),
            "per_kind": self.per_kind,
            "examples": {k: v[:5] for k, v in self.examples.items()},
        }


def compare(reference: Snapshot, campaign: Snapshot, kinds: Sequence[str] = KINDS) -> Comparison:
    """The campaign's database against the reference's, kind by kind."""
    result = Comparison()
    for kind in kinds:
        ref, got = reference.items.get(kind, {}), campaign.items.get(kind, {})
        result.add(kind, "lost", ref.keys() - got.keys())
        result.add(kind, "unexpected", got.keys() - ref.keys())
        result.add(kind, "duplicated", [k for k, v in got.items() if len(v) > 1])
        single = [k for k in ref.keys() & got.keys() if len(got[k]) == 1]
        result.add(kind, "mismatched", [k for k in single if ref[k][0] != got[k][0]])
    result.add("parked", "lost", [f"{campaign.parked} still parked"] if campaign.parked else [])
    return result


# -- output topics -------------------------------------------------------------------


@dataclass
class TopicOutputs:
    """The output events read back from Kafka: id -> the distinct contents and copies."""

    contents: dict[str, set[bytes]] = field(default_factory=dict)
    copies: Counter[str] = field(default_factory=Counter)
    first_order: dict[tuple[str, int, bytes], list[str]] = field(default_factory=dict)

    @property
    def republished(self) -> int:
        """Extra identical copies (at-least-once publication, allowed by the contract)."""
        return sum(n - 1 for n in self.copies.values())


def topic_outputs(records: Iterable[Any]) -> TopicOutputs:
    """Group structured-mode output records (sorted by topic, partition, offset) by event id."""
    found = TopicOutputs()
    for record in records:
        event_id = json.loads(record.value)["id"]
        found.contents.setdefault(event_id, set()).add(record.value)
        if found.copies[event_id] == 0:
            lane = (record.topic, record.partition, record.key or b"")
            found.first_order.setdefault(lane, []).append(event_id)
        found.copies[event_id] += 1
    return found


def compare_outputs(
    expected: Mapping[str, list[Any]],
    published: TopicOutputs,
    order: Mapping[str, int] | None = None,
    only: set[str] | None = None,
) -> dict[str, Any]:
    """Output events in the topics against the expected outbox items (stream, payload text).

    `only` restricts the check to these ids (after a broker restart lost the
    earlier topics); `order` (event id -> outbox seq) checks that, per topic,
    partition and cluster, the events first appeared in the order they were decided.
    """
    want = {i: json.loads(v[0][1]) for i, v in expected.items() if only is None or i in only}
    got = {i: c for i, c in published.contents.items() if only is None or i in only}
    changed = sorted(i for i, c in got.items() if len(c) > 1)
    mismatched = sorted(
        i
        for i in want.keys() & got.keys()
        if i not in changed and json.loads(next(iter(got[i]))) != want[i]
    )
    violations = 0
    if order is not None:
        for lane in published.first_order.values():
            seqs = [order[i] for i in lane if i in order and (only is None or i in only)]
            violations += sum(1 for a, b in itertools.pairwise(seqs) if b < a)
    return {
        "expected": len(want),
        "published_ids": len(got),
        "lost": len(want.keys() - got.keys()),
        "unexpected": len(got.keys() - want.keys()),
        "duplicated": len(changed),
        "mismatched": len(mismatched),
        "republished_identical_copies": sum(
            published.copies[i] - 1 for i in got if published.copies[i] > 1
        ),
        "order_violations": violations,
        "examples": {
            "lost": sorted(want.keys() - got.keys())[:5],
            "duplicated": changed[:5],
            "mismatched": mismatched[:5],
        },
    }


def compare_dlq(
    expected: Mapping[tuple[str, int, int], dict[str, Any]], records: Iterable[Any]
) -> dict[str, Any]:
    """DLQ records against the bad records published: each once (identical copies allowed),
    with the original key and value unchanged and the expected error class."""
    seen: dict[tuple[str, int, int], set[tuple[Any, ...]]] = {}
    copies = 0
    for record in records:
        headers = {k: v.decode() for k, v in record.headers or ()}
        where = (
            headers.get("original.topic", ""),
            int(headers.get("original.partition", -1)),
            int(headers.get("original.offset", -1)),
        )
        content = (record.key, record.value, headers.get("error.class"))
        copies += where in seen
        seen.setdefault(where, set()).add(content)
    wrong = []
    for where, bad in expected.items():
        got = seen.get(where)
        if got is None or len(got) != 1:
            continue
        key, value, error_class = next(iter(got))
        if (key, value) != (bad["key"], bad["value"]) or error_class != bad["error_class"]:
            wrong.append(f"{where}: got {error_class}, expected {bad['error_class']}")
    return {
        "expected": len(expected),
        "in_dlq": len(seen),
        "lost": len(expected.keys() - seen.keys()),
        "unexpected": len(seen.keys() - expected.keys()),
        "duplicated": sum(1 for v in seen.values() if len(v) > 1),
        "mismatched": len(wrong),
        "republished_identical_copies": copies,
        "examples": {
            "lost": [str(w) for w in sorted(expected.keys() - seen.keys())[:5]],
            "mismatched": wrong[:5],
        },
    }


# -- invariants that hold whatever the timing ----------------------------------------------


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
