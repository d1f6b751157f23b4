"""The output topics read back: each output id with its distinct contents and copies,
compared with what the outbox (or a reference) says should be there, and the DLQ
compared with the bad records that were published."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.kafka_fixtures import KafkaTopics
from tests.service_process import read_topics

__all__ = [
    "TopicOutputs",
    "compare_dlq",
    "compare_outputs",
    "dlq_origin",
    "read_outputs",
    "topic_outputs",
]


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


def read_outputs(topics: KafkaTopics, expected: int, timeout_s: float = 120) -> TopicOutputs:
    """The labels, deadlines and membership topics from the start, once at least
    `expected` records are in and 2 s have passed without a new one."""
    outputs = [topics.labels, topics.deadlines, topics.membership]
    return topic_outputs(read_topics(topics.bootstrap, outputs, expected, timeout_s, settle_s=2.0))


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
) -> dict[str, Any]:
    """Output events in the topics against the expected outbox items (stream, payload text).

    `order` (event id -> outbox seq) checks that, per topic, partition and cluster,
    the events first appeared in the order they were decided.
    """
    want = {i: json.loads(v[0][1]) for i, v in expected.items()}
    got = published.contents
    changed = sorted(i for i, c in got.items() if len(c) > 1)
    mismatched = sorted(
        i
        for i in want.keys() & got.keys()
        if i not in changed and json.loads(next(iter(got[i]))) != want[i]
    )
    violations = 0
    if order is not None:
        for lane in published.first_order.values():
            seqs = [order[i] for i in lane if i in order]
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


def dlq_origin(record: Any) -> tuple[tuple[str, int, int], str | None]:
    """A DLQ record's original (topic, partition, offset), and its error.class."""
    headers = {k: v.decode() for k, v in record.headers or ()}
    where = (
        headers.get("original.topic", ""),
        int(headers.get("original.partition", -1)),
        int(headers.get("original.offset", -1)),
    )
    return where, headers.get("error.class")


def compare_dlq(
    expected: Mapping[tuple[str, int, int], dict[str, Any]], records: Iterable[Any]
) -> dict[str, Any]:
    """DLQ records against the bad records published: each once (identical copies allowed),
    with the original key and value unchanged and the expected error class."""
    seen: dict[tuple[str, int, int], set[tuple[Any, ...]]] = {}
    copies = 0
    for record in records:
        where, error_class = dlq_origin(record)
        content = (record.key, record.value, error_class)
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
