"""What the reliability campaign compares: a canonical dump of the database.

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

import json
from collections import defaultdict
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

__all__ = ["KINDS", "Comparison", "Snapshot", "compare", "snapshot"]

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
    # A timer set and cancelled in one transaction leaves no row, so which cancelled rows
    # exist depends on how events were split into transactions: pending and fired count.
    for row in conn.execute(select(timers).where(timers.c.status != "cancelled")).mappings():
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
