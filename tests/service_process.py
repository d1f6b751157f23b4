"""`gocluster` as a real subprocess: start it, watch its JSON log, stop or kill it.

The service logs one JSON object per line on stdout (structlog, not a TTY);
a reader thread collects them so a test can wait for a log event ("consumer
subscribed", "event applied") without the pipe ever filling up. Every wait
is bounded and says what it waited for when it gives up, with the tail of
the process's output.

Also here, shared by the Kafka tests: short CLI runs (`replay` as the
reference, `tick`, `db upgrade`) and reading results back from the output
topics (assign, not subscribe: no group join) and from the database.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import func, select

from workflows.store.database import create_db_engine, upgrade
from workflows.store.tables import clusters, inbox, labels, obligations, outbox

__all__ = [
    "FAST_SERVICE_ENV",
    "ServiceProcess",
    "decode_output",
    "final_state",
    "gocluster_command",
    "header",
    "inbox_count",
    "inbox_outcomes",
    "migrate",
    "outbox_count",
    "read_topics",
    "replay",
    "run_cli",
    "service_env",
    "unique_outputs",
    "unsent_count",
    "wait_until",
]

T = TypeVar("T")

# Test-only consumer timings (KAFKA_TESTING.md): a group join takes ~1 s, not ~23 s.
FAST_SERVICE_ENV = {
    "GOCLUSTER_KAFKA_SESSION_TIMEOUT_MS": "2000",
    "GOCLUSTER_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
    "GOCLUSTER_KAFKA_MAX_POLL_INTERVAL_MS": "10000",
    "GOCLUSTER_KAFKA_FETCH_MAX_WAIT_MS": "100",
    # A broker that is down must not stall a request (and a test) for the default 30 s.
    "GOCLUSTER_KAFKA_REQUEST_TIMEOUT_MS": "10000",
}


def gocluster_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m consumers.cli`."""
    script = Path(sys.executable).with_name("gocluster")
    if script.exists():
        return [str(script)]
    found = shutil.which("gocluster")
    return [found] if found else [sys.executable, "-m", "consumers.cli"]


def service_env(*parts: Mapping[str, str], fast: bool = True) -> dict[str, str]:
    """This process's environment without any GOCLUSTER_* of the developer's shell, plus parts.

    `fast` adds the test-only consumer timings; without it the service keeps its defaults
    (a deployment's environment as it stands).
    """
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GOCLUSTER_")}
    env |= (FAST_SERVICE_ENV if fast else {}) | {"PYTHONUNBUFFERED": "1"}
    for part in parts:
        env |= dict(part)
    return env


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    stdin: str | None = None,
    timeout_s: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run one short `gocluster` command (replay, tick, db upgrade, show) to completion."""
    done = subprocess.run(
        [*gocluster_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout_s,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"gocluster {' '.join(args)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        )
    return done


def replay(
    events: Sequence[Mapping[str, Any]], folder: Path, now: str | None = None
) -> tuple[list[dict[str, Any]], str]:
    """`gocluster replay` of these events (one partition, in this order) on a fresh SQLite.

    Returns the output events it printed and the URL of its database.
    """
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "replay.jsonl"
    file.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events), "utf-8")
    url = f"sqlite:///{folder / 'replay.db'}"
    args = ["replay", str(file)] + (["--now", now] if now else [])
    done = run_cli(args, service_env({"GOCLUSTER_DATABASE_URL": url}))
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()], url


def wait_until(probe: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy; raise TimeoutError naming `what`
    at the deadline (the tests and the reliability campaign both wait with this)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


class ServiceProcess:
    """One `gocluster` subprocess (by default `gocluster run`) and its collected output."""

    def __init__(
        self,
        env: Mapping[str, str],
        args: Sequence[str] = ("run", "--clock", "event"),
        *,
        name: str = "service",
        log_dir: Path | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.env = dict(env)
        self.command = list(command) if command is not None else gocluster_command()
        self.args = list(args)
        self.name = name
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._lines: list[str] = []
        self._stderr: list[str] = []
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> ServiceProcess:
        if self.process is not None:
            raise RuntimeError(f"{self.name} already started")
        self.process = subprocess.Popen(
            [*self.command, *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self._lines)),
            threading.Thread(target=self._read, args=(self.process.stderr, self._stderr)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait for the exit code; SIGKILL (and fail) if it does not exit in time."""
        return self._stop(signal.SIGTERM, timeout_s)

    def kill(self, timeout_s: float = 30.0) -> int:
        return self._stop(signal.SIGKILL, timeout_s)

    def pause(self) -> None:
        """SIGSTOP: its threads and heartbeats freeze; its connections stay open.

        A paused process handles SIGTERM only after `resume`; `kill` ends it at once.
        """
        assert self.alive, f"{self.name} is not running"
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: it wakes up where it stopped, unaware that time passed."""
        assert self.process is not None, f"{self.name} was never started"
        os.kill(self.pid, signal.SIGCONT)

    def _stop(self, sig: signal.Signals, timeout_s: float) -> int:
        assert self.process is not None, f"{self.name} was never started"
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.returncode = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            self._finish()
            raise AssertionError(
                f"{self.name} did not exit within {timeout_s:g} s of {sig.name}\n{self.tail()}"
            ) from None
        self._finish()
        return self.returncode

    def _finish(self) -> None:
        for reader in self._readers:
            reader.join(timeout=10)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"{self.name}.stdout.log").write_text(self.stdout, "utf-8")
            (self.log_dir / f"{self.name}.stderr.log").write_text(self.stderr, "utf-8")

    def __enter__(self) -> ServiceProcess:
        """Starts the process unless it already runs; on exit it is killed if still alive."""
        return self if self.process is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.alive:
            with contextlib.suppress(AssertionError):
                self.kill()  # SIGKILL also ends a paused (SIGSTOPped) process
        if exc_type is not None and self.process is not None:
            print(self.tail())  # pytest shows captured output with the failure

    # -- output ------------------------------------------------------------------

    def _read(self, stream: IO[bytes], into: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                into.append(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    @property
    def stdout(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "\n".join(self._stderr)

    def logs(self, event: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines so far (optionally only those whose `event` is `event`)."""
        with self._lock:
            lines = list(self._lines)
        parsed = []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and (event is None or entry.get("event") == event):
                parsed.append(entry)
        return parsed

    def count(self, event: str) -> int:
        return len(self.logs(event))

    def wait_for_log(self, event: str, timeout_s: float = 60.0, count: int = 1) -> dict[str, Any]:
        """The `count`-th log line with this event; fails early if the process exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.logs(event)
            if len(found) >= count:
                return found[count - 1]
            if not self.alive:
                time.sleep(0.2)  # let the reader threads drain the pipes
                found = self.logs(event)
                if len(found) >= count:
                    return found[count - 1]
                raise AssertionError(
                    f"{self.name} exited ({self.process and self.process.poll()}) before "
                    f"logging {event!r} x{count} (saw {len(found)})\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} did not log {event!r} x{count} within {timeout_s:g} s "
                    f"(saw {len(found)})\n{self.tail()}"
                )
            time.sleep(0.1)

    def assigned(self) -> set[str]:
        """The input partitions ("topic/n") of the latest assignment this process logged."""
        logged = self.logs("partitions assigned")
        return set(logged[-1]["partitions"]) if logged else set()

    def wait_joined(self, timeout_s: float = 60.0) -> set[str]:
        """In the group with at least one input partition assigned; returns them."""
        return wait_until(self.assigned, timeout_s, f"{self.name} to be assigned partitions")

    def tail(self, lines: int = 40) -> str:
        with self._lock:
            out = self._lines[-lines:]
            err = self._stderr[-lines:]
        return (
            f"--- {self.name} stdout (last {len(out)} lines) ---\n"
            + "\n".join(out)
            + f"\n--- {self.name} stderr (last {len(err)} lines) ---\n"
            + "\n".join(err)
        )


# -- reading results back ------------------------------------------------------------


def read_topics(
    bootstrap: str,
    topics: Sequence[str],
    expected_count: int,
    timeout_s: float = 60.0,
    settle_s: float = 1.0,
) -> list[Any]:
    """Every record of these topics from the start, sorted by (topic, partition, offset).

    Waits until at least `expected_count` records are in and then `settle_s`
    longer without a new one (to catch unwanted extras), or until the
    timeout; the caller asserts what came. Assigns rather than subscribes: no
    group join, no committed offsets, no end offsets (Tansu reports them wrong).
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    try:
        deadline = time.monotonic() + timeout_s
        parts: list[TopicPartition] = []
        for topic in topics:
            found = wait_until(
                functools.partial(consumer.partitions_for_topic, topic),
                min(10.0, timeout_s),
                f"partitions of {topic}",
                0.05,
            )
            parts += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list[Any] = []
        quiet_since = time.monotonic()
        while (now := time.monotonic()) < deadline:
            if len(records) >= expected_count and now - quiet_since >= settle_s:
                break
            fresh = [r for batch in consumer.poll(timeout_ms=100).values() for r in batch]
            if fresh:
                records += fresh
                quiet_since = time.monotonic()
        return sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
    finally:
        consumer.close()


def unique_outputs(records: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """id -> event of output records; a duplicate must be byte-identical to its first copy.

    Re-publication (after a crash, or by two relays at once) is allowed by the
    contract only as the same event: same id, same content.
    """
    copies: dict[str, set[bytes]] = {}
    for record in records:
        copies.setdefault(decode_output(record)["id"], set()).add(record.value)
    changed = {i: v for i, v in copies.items() if len(v) > 1}
    assert not changed, f"output ids published with different content: {changed}"
    return {i: json.loads(next(iter(v))) for i, v in copies.items()}


def decode_output(record: Any) -> dict[str, Any]:
    """A structured-mode output record's CloudEvent."""
    event: dict[str, Any] = json.loads(record.value)
    return event


def header(record: Any, name: str) -> str | None:
    """The (last) value of a Kafka header as text."""
    values = [v for k, v in (record.headers or ()) if k == name]
    return values[-1].decode("utf-8") if values else None


def migrate(url: str) -> None:
    """What `gocluster db upgrade` does, in-process (PostgreSQL is never migrated implicitly)."""
    engine = create_db_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def db_scalar(url: str, query: Any) -> Any:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(query).scalar_one()
    finally:
        engine.dispose()


def inbox_count(url: str) -> int:
    """Rows in the inbox: one per distinct input event (source, id) ever received."""
    return int(db_scalar(url, select(func.count()).select_from(inbox)))


def unsent_count(url: str) -> int:
    return int(db_scalar(url, select(func.count()).where(outbox.c.sent_at.is_(None))))


def outbox_count(url: str) -> int:
    return int(db_scalar(url, select(func.count()).select_from(outbox)))


def inbox_outcomes(url: str) -> dict[tuple[str, str], str]:
    """(source, id) -> outcome (applied, parked, rejected) of every event received."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            query = select(inbox.c.source, inbox.c.event_id, inbox.c.outcome)
            return {(s, i): o for s, i, o in conn.execute(query)}
    finally:
        engine.dispose()


def final_state(url: str) -> dict[str, dict[str, Any]]:
    """Per cluster: state, cycle, admission, labels and obligations (not timestamps of work)."""
    engine = create_db_engine(url)
    facts: dict[str, dict[str, Any]] = {}
    try:
        with engine.connect() as conn:
            for row in conn.execute(select(clusters)).mappings():
                facts[row["cluster_id"]] = {
                    "state": row["state"],
                    "cycle": row["cycle"],
                    "admitted_on": row["admitted_on"],
                    "labels": [],
                    "obligations": [],
                }
            for row in conn.execute(select(labels)).mappings():
                facts[row["cluster_id"]]["labels"].append(
                    (row["level"], row["awarded_on"], row["valid_until"], row["status"])
                )
            for row in conn.execute(select(obligations)).mappings():
                facts[row["cluster_id"]]["obligations"].append(
                    (row["kind"], row["due_on"], row["status"], row["closed_by"])
                )
    finally:
        engine.dispose()
    for fact in facts.values():
        fact["labels"].sort(key=repr)
        fact["obligations"].sort(key=repr)
    return facts
