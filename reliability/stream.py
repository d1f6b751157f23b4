"""The input stream of a phase: events in publication order with upstream re-deliveries
and bad records, and the paced producer that plays the upstream systems."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer

from tests import stories
from tests.kafka_fixtures import KafkaTopics, produce

__all__ = ["BadRecord", "Producer", "Stream", "build_stream", "publish"]


@dataclass(frozen=True)
class BadRecord:
    topic: str  # "applications" | "interviews"
    key: bytes
    value: bytes
    error_class: str


@dataclass
class Stream:
    """Records in publication order: (input topic, key, value, headers, kind)."""

    records: list[tuple[str, bytes, bytes, list[tuple[str, bytes]], Any]]
    events: list[dict[str, Any]]  # the good events in publication order, duplicates included
    distinct: int
    duplicates: int
    bad: list[BadRecord]
    clusters: int

    def replay_lines(self) -> list[dict[str, Any]]:
        return self.events


def _bad_records(rng: random.Random, events: Sequence[dict[str, Any]], n: int) -> list[BadRecord]:
    """Records the service must send to the DLQ unchanged, one class after another."""
    made: list[BadRecord] = []
    for i in range(n):
        victim = dict(rng.choice(events))
        victim["id"] = f"bad-{i:04d}"
        topic = stories.topic_of(victim)
        key = victim["subject"].encode()
        kind = i % 4
        if kind == 0:
            value, error_class = b'{"specversion": "1.0", "id": "bad-' + str(i).encode(), "decode"
        elif kind == 1:
            victim.pop("time")
            value, error_class = json.dumps(victim).encode(), "schema"
        elif kind == 2:
            victim["type"] = "gocluster.application.renamed"
            value, error_class = json.dumps(victim).encode(), "unknown_type"
        else:
            key, value, error_class = b"not-" + key, json.dumps(victim).encode(), "conflict"
        made.append(BadRecord(topic, key, value, error_class))
    return made


def build_stream(
    events: Sequence[dict[str, Any]], seed: int, duplicate_share: float, bad: int
) -> Stream:
    """The events in publication order, each in a seeded binding mode, with upstream
    re-deliveries (an event sent again a little later, same content) and bad records."""
    rng = random.Random(f"{seed}:stream")
    order: list[dict[str, Any]] = list(events)
    for _ in range(round(duplicate_share * len(events))):
        at = rng.randrange(len(order))
        order.insert(min(len(order), at + rng.randrange(1, 200)), order[at])
    records: list[tuple[str, bytes, bytes, list[tuple[str, bytes]], Any]] = []
    for event in order:
        key, value, headers = stories.record(event, rng.choice(("structured", "binary")))
        records.append((stories.topic_of(event), key, value, headers, "event"))
    bad_records = _bad_records(rng, events, bad)
    for record in bad_records:
        at = rng.randrange(len(records) + 1)
        headers = [("content-type", b"application/cloudevents+json")]
        records.insert(at, (record.topic, record.key, record.value, headers, record))
    return Stream(
        records,
        order,
        len(events),
        len(order) - len(events),
        bad_records,
        len({e["subject"] for e in events}),
    )


class Producer(threading.Thread):
    """Publishes a stream at a steady rate (the upstream systems), with the service's
    producer guarantees; remembers where each bad record landed."""

    def __init__(
        self, bootstrap: str, topics: Mapping[str, str], stream: Stream, rate: float
    ) -> None:
        super().__init__(name="producer", daemon=True)
        self.bootstrap = bootstrap
        self.topics = topics
        self.stream = stream
        self.rate = rate
        self.sent = 0
        self.error: BaseException | None = None
        self.bad_at: dict[tuple[str, int, int], dict[str, Any]] = {}

    @property
    def fraction(self) -> float:
        return self.sent / max(1, len(self.stream.records))

    def run(self) -> None:
        try:
            self._publish()
        except BaseException as exc:  # reported by the campaign, which then stops
            self.error = exc

    def _publish(self) -> None:
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        pending: list[tuple[Any, BadRecord]] = []
        try:
            began = time.monotonic()
            step = max(1, int(self.rate / 20))
            records = self.stream.records
            for start in range(0, len(records), step):
                for topic, key, value, headers, kind in records[start : start + step]:
                    future = producer.send(
                        self.topics[topic], key=key, value=value, headers=headers
                    )
                    if isinstance(kind, BadRecord):
                        pending.append((future, kind))
                self.sent = min(len(records), start + step)
                ahead = began + self.sent / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            producer.flush(timeout=60)
            for future, bad in pending:
                meta = future.get(timeout=60)
                self.bad_at[(meta.topic, meta.partition, meta.offset)] = {
                    "key": bad.key,
                    "value": bad.value,
                    "error_class": bad.error_class,
                }
        finally:
            producer.close(timeout=10)


def publish(topics: KafkaTopics, events: list[dict[str, Any]], seed: int) -> None:
    for name, topic in (("applications", topics.applications), ("interviews", topics.interviews)):
        on_topic = [e for e in events if stories.topic_of(e) == name]
        if on_topic:
            produce(topics.bootstrap, topic, stories.mixed_records(on_topic, seed), timeout_s=60)
