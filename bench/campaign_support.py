"""The reliability campaign's moving parts: the input stream and its paced producer, the
`gocluster` processes it starts and kills, and cheap probes of the database.

Processes are `tests.service_process.ServiceProcess` (the same helper the fault
tests use) with an incremental view of their JSON log, because a campaign
process writes one line per applied event and is polled many times a second.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import Engine, column, func, or_, select, table
from sqlalchemy.exc import SQLAlchemyError

from tests import stories
from tests.service_process import ServiceProcess, run_cli, service_env
from workflows.store.database import create_db_engine
from workflows.store.tables import inbox, outbox, parked, timers

__all__ = [
    "BadRecord",
    "Context",
    "Fleet",
    "OutputWatcher",
    "Probe",
    "Proc",
    "Producer",
    "Stream",
    "applied_twice_in_logs",
    "build_stream",
    "reference_snapshot_run",
    "say",
    "wait_for",
]

# Service log events that say a dependency is gone (CONTRACT.md: clear log lines).
DEPENDENCY_LOG_EVENTS = (
    "database unreachable at start, retrying",
    "database unavailable, batch will be retried",
    "database unavailable for timers",
    "database unavailable for the outbox",
    "outbox relay lost its database session",
    "could not mark rows sent; they will be re-sent with the same ids",
    "kafka unreachable, retrying",
    "kafka unreachable while creating topics, retrying",
    "broker did not acknowledge; retrying",
    "publishing failed",
    "recreating the Kafka producer",
    "offset commit failed; records will be re-delivered and skipped",
    "partitions revoked",
    "partitions assigned",
)


def wait_for(probe: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Poll until `probe()` is truthy; raise TimeoutError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


# -- processes -------------------------------------------------------------------------


class Proc(ServiceProcess):
    """A `gocluster` subprocess whose JSON log is scanned incrementally."""

    def __init__(
        self,
        env: Mapping[str, str],
        args: Sequence[str],
        *,
        name: str,
        log_dir: Path | None,
        log_stream: str = "stdout",
    ) -> None:
        super().__init__(env, args, name=name, log_dir=log_dir)
        self.log_stream = log_stream
        self.events: Counter[str] = Counter()
        self.last: dict[str, dict[str, Any]] = {}
        self.applied: Counter[str] = Counter()  # event id -> "event applied" lines
        self.timers_fired = 0  # by its timer loop ("timers fired" lines)
        self.started_at = 0.0
        self.killed = False
        self._scanned = 0

    def start(self) -> Proc:
        super().start()
        self.started_at = time.monotonic()
        return self

    def scan(self) -> None:
        with self._lock:
            lines = self._lines if self.log_stream == "stdout" else self._stderr
            fresh = lines[self._scanned :]
            self._scanned += len(fresh)
        for line in fresh:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(entry, dict):
                continue
            event = str(entry.get("event"))
            self.events[event] += 1
            self.last[event] = entry
            if event == "event applied":
                self.applied[str(entry.get("event_id"))] += 1
            elif event == "timers fired":
                self.timers_fired += int(entry.get("count", 0))

    def n(self, event: str) -> int:
        self.scan()
        return self.events[event]

    def partitions(self) -> set[str]:
        """The input partitions of its latest assignment ("topic/n")."""
        self.scan()
        entry = self.last.get("partitions assigned")
        return set(entry["partitions"]) if entry else set()

    def holds_relay_lock(self) -> bool:
        """It logged leadership of the outbox relay and has not lost it since."""
        self.scan()
        got = self.last.get("outbox relay leadership acquired")
        lost = self.last.get("outbox relay lost its database session")
        held = got is not None and (lost is None or lost["timestamp"] < got["timestamp"])
        return held and self.alive

    def sigkill(self) -> None:
        self.killed = True
        self.kill()


@dataclass
class Fleet:
    """The named processes of one phase: start, kill, restart, and notice crashes."""

    env: dict[str, str]
    log_dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    args: dict[str, list[str]] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    finished: list[Proc] = field(default_factory=list)
    max_crashes: int = 10

    def start(self, role: str, args: Sequence[str] | None = None) -> Proc:
        if args is not None:
            self.args[role] = list(args)
        self.starts[role] += 1
        proc = Proc(
            self.env, self.args[role], name=f"{role}-{self.starts[role]}", log_dir=self.log_dir
        )
        self.procs[role] = proc.start()
        return proc

    def kill(self, role: str) -> Proc:
        proc = self.procs.pop(role)
        proc.sigkill()
        proc.scan()
        self.finished.append(proc)
        return proc

    def terminate(self, role: str, timeout_s: float = 60.0) -> int:
        """SIGTERM, once the process has installed its handler (it logs "gocluster starting"
        right after): a SIGTERM during interpreter start-up kills it with -15."""
        proc = self.procs[role]
        if proc.args[0] == "run":
            wait_for(lambda: proc.n("gocluster starting") or not proc.alive, 60, "start-up")
        del self.procs[role]
        code = proc.terminate(timeout_s)
        proc.scan()
        self.finished.append(proc)
        return code

    def check(self) -> None:
        """A process that exited on its own is a crash: record it and start it again."""
        for role, proc in list(self.procs.items()):
            if proc.alive:
                continue
            proc.returncode = proc.process.poll() if proc.process else None
            with contextlib.suppress(AssertionError):
                proc.kill(timeout_s=5)
            proc.scan()
            self.crashes.append(
                {"process": proc.name, "returncode": proc.returncode, "tail": proc.tail(15)}
            )
            self.finished.append(proc)
            del self.procs[role]
            if len(self.crashes) > self.max_crashes:
                raise RuntimeError(f"crash loop: {len(self.crashes)} unexpected exits")
            self.start(role)

    def all_procs(self) -> list[Proc]:
        return [*self.finished, *self.procs.values()]

    def close(self) -> None:
        for role in list(self.procs):
            with contextlib.suppress(AssertionError):
                self.kill(role)

    @property
    def runs(self) -> int:
        return sum(self.starts.values())


def applied_twice_in_logs(fleet: Fleet) -> list[str]:
    """Event ids that two "event applied" log lines name, across every process of a fleet:
    the log line follows the commit, so a re-delivered event must log "duplicate" instead."""
    seen: Counter[str] = Counter()
    for proc in fleet.all_procs():
        proc.scan()
        seen.update(proc.applied)
    return sorted(i for i, n in seen.items() if n > 1)


# -- the input stream ----------------------------------------------------------------------


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


# -- database probes -----------------------------------------------------------------------


class Probe:
    """Counts from the campaign's database; None while the database is down."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_db_engine(url)

    def _scalar(self, query: Any) -> int | None:
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(query).scalar_one())
        except SQLAlchemyError:
            return None

    def inbox(self) -> int | None:
        return self._scalar(select(func.count()).select_from(inbox))

    def parked(self) -> int | None:
        return self._scalar(select(func.count()).select_from(parked))

    def unsent(self) -> int | None:
        return self._scalar(select(func.count()).where(outbox.c.sent_at.is_(None)))

    def outbox(self) -> int | None:
        return self._scalar(select(func.count()).select_from(outbox))

    def last_seq(self) -> int | None:
        return self._scalar(select(func.coalesce(func.max(outbox.c.seq), 0)))

    def sent_events(self) -> int | None:
        """Output events (not DLQ records) the relay has marked sent."""
        query = select(func.count()).where(outbox.c.sent_at.is_not(None), outbox.c.stream != "dlq")
        return self._scalar(query)

    def dlq_rows(self) -> int | None:
        return self._scalar(select(func.count()).where(outbox.c.stream == "dlq"))

    def fired(self) -> int | None:
        return self._scalar(select(func.count()).where(timers.c.status == "fired"))

    def pending_due(self, until: datetime) -> int | None:
        query = select(func.count()).where(timers.c.status == "pending", timers.c.due_at <= until)
        return self._scalar(query)

    def busy_sessions(self, tables: Sequence[str] = ("timers", "clusters")) -> int | None:
        """Other sessions of this database inside a statement or transaction on these tables
        (PostgreSQL; start-up's schema check does not count)."""
        if self.engine.dialect.name != "postgresql":
            return None
        activity = table(
            "pg_stat_activity", column("datname"), column("state"), column("pid"), column("query")
        )
        query = (
            select(func.count())
            .select_from(activity)
            .where(activity.c.datname == func.current_database())
            .where(activity.c.pid != func.pg_backend_pid())
            .where(activity.c.state.in_(("active", "idle in transaction")))
            .where(or_(*[activity.c.query.contains(name) for name in tables]))
        )
        return self._scalar(query)

    def lock_waiters(self) -> int | None:
        """Sessions of this database waiting for a lock another one holds (PostgreSQL)."""
        if self.engine.dialect.name != "postgresql":
            return None
        activity = table("pg_stat_activity", column("datname"), column("wait_event_type"))
        query = (
            select(func.count())
            .select_from(activity)
            .where(activity.c.datname == func.current_database())
            .where(activity.c.wait_event_type == "Lock")
        )
        return self._scalar(query)

    def pending_due_times(self, until: datetime) -> list[datetime]:
        query = (
            select(timers.c.due_at)
            .where(timers.c.status == "pending", timers.c.due_at <= until)
            .order_by(timers.c.due_at)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def close(self) -> None:
        self.engine.dispose()


# -- the reference -------------------------------------------------------------------------


def reference_snapshot_run(
    steps: Sequence[tuple[str, Any]], folder: Path, name: str
) -> tuple[str, dict[str, float]]:
    """An uninterrupted run without Kafka on a fresh SQLite: `("replay", events)` and
    `("tick", iso_time)` steps in order, the same CLI code paths as the service.
    Returns the database URL and the seconds each step took."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    env = service_env({"GOCLUSTER_DATABASE_URL": url})
    took: dict[str, float] = {}
    for n, (kind, arg) in enumerate(steps):
        began = time.monotonic()
        if kind == "replay":
            file = stories.write_jsonl(arg, folder / f"{name}-{n}.jsonl")
            run_cli(["replay", str(file)], env, timeout_s=900)
        else:
            run_cli(["tick", "--now", arg, "--no-publish"], env, timeout_s=900)
        took[f"{n}:{kind}"] = round(time.monotonic() - began, 2)
    return url, took


# -- the campaign's context ----------------------------------------------------------------


@dataclass
class Context:
    """What every phase shares: configuration, the broker, the private PostgreSQL, the
    record of faults, a seeded random source per phase."""

    cfg: Any
    work: Path
    bootstrap: str
    pg: Any  # PrivatePostgres | None (SQLite backend)
    began: float = field(default_factory=time.monotonic)
    faults: list[dict[str, Any]] = field(default_factory=list)

    def at(self) -> float:
        return round(time.monotonic() - self.began, 2)

    def rng(self, phase: str) -> random.Random:
        return random.Random(f"{self.cfg.seed}:{phase}")

    def new_database(self, name: str) -> str:
        if self.pg is not None:
            return str(self.pg.create_database(name))
        folder = self.work / "db"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / name}.db"

    def record(self, phase: str, kind: str, **details: Any) -> dict[str, Any]:
        fault = {"n": len(self.faults) + 1, "phase": phase, "kind": kind, "at_s": self.at()}
        fault |= details
        self.faults.append(fault)
        say(f"fault {fault['n']}: {phase} {kind} {details.get('target', '')}".rstrip())
        return fault


def say(message: str) -> None:
    """Progress on stderr: the campaign runs for minutes."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class OutputWatcher(threading.Thread):
    """Reads the output topics as they fill (assign, not subscribe): which event ids the
    broker already has. With the outbox's sent marks this shows when a relay has
    published rows it has not marked yet, the moment a kill makes it publish them again."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        super().__init__(name="output-watcher", daemon=True)
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.ids: set[str] = set()
        self.records = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def seen(self) -> int:
        with self._lock:
            return len(self.ids)

    def run(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
        )
        try:
            parts = []
            for topic in self.topics:
                found = wait_for(lambda t=topic: consumer.partitions_for_topic(t), 30, topic)
                parts += [TopicPartition(topic, p) for p in sorted(found)]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            while not self.stop.is_set():
                polled = consumer.poll(timeout_ms=5)
                fresh = [json.loads(r.value)["id"] for batch in polled.values() for r in batch]
                with self._lock:
                    self.ids.update(fresh)
                    self.records += len(fresh)
        finally:
            consumer.close()
