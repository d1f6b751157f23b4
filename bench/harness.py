"""What the benchmarks share: a throwaway database per run, a topic set per run, producing,
the machine's description and the statistics.

Only loopback addresses: the embedded broker binds 127.0.0.1 and PostgreSQL is
the local server at 127.0.0.1:5432 (user postgres, trust), where each run gets a
database of its own (``gocluster_bench_<random>``) that is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaProducer
from psycopg import sql
from sqlalchemy.engine import make_url

from consumers.config import Settings
from consumers.kafka_admin import create_topics, delete_topics
from consumers.logs import configure_logging
from tests.brokers import Broker, make_broker
from tests.dbutil import ADMIN_URL as TEST_ADMIN_URL
from tests.machine import machine as tests_machine
from tests.workload import APPLICATIONS, Record
from workflows.store.database import create_db_engine, upgrade

# The test role of scripts/ensure-test-machine.sh, as a plain libpq URL for psycopg.
ADMIN_URL = (
    make_url(TEST_ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)
)
DB_PREFIX = "gocluster_bench_"
BACKENDS = ("sqlite", "postgres")
INPUT_PARTITIONS = 6
OUTPUT_PARTITIONS = 6
RESULTS = Path(__file__).resolve().parent / "results"

# Bench-only client timings: a short session so that a run's group settles quickly.
# Everything else is the service's default.
FAST_GROUP = {
    "kafka_session_timeout_ms": 2000,
    "kafka_heartbeat_interval_ms": 300,
    "kafka_max_poll_interval_ms": 60_000,
}


# -- databases -----------------------------------------------------------------


@contextlib.contextmanager
def database(backend: str, directory: Path) -> Iterator[str]:
    """A fresh, migrated database for one run; yields its URL and removes it afterwards."""
    if backend == "sqlite":
        path = directory / f"bench-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
        _migrate(url)
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r}")
    name = f"{DB_PREFIX}{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        _migrate(url)
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _migrate(url: str) -> None:
    engine = create_db_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def postgres_version() -> str | None:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None


def cpu_seconds(stat: Path) -> float:
    """User + system CPU seconds from a Linux /proc stat file (a process's or a thread's),
    0 where it cannot be read."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def bench_broker(scratch: Path) -> Iterator[Broker]:
    """The broker the benchmarks measure against: Apache Kafka (GOCLUSTER_TEST_BROKER)."""
    with make_broker(scratch / "kafka") as broker:
        yield broker


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gocluster-bench-") as name:
        yield Path(name)


# -- topics --------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSet:
    """One run's private topics on the broker: every run starts from empty topics."""

    bootstrap: str
    suffix: str

    @property
    def applications(self) -> str:
        return f"bench.applications.{self.suffix}"

    @property
    def interviews(self) -> str:
        return f"bench.interviews.{self.suffix}"

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.applications, self.interviews)

    @property
    def outputs(self) -> dict[str, str]:
        return {
            stream: f"bench.{stream}.{self.suffix}"
            for stream in ("labels", "deadlines", "membership", "dlq")
        }

    def topic(self, record: Record) -> str:
        return self.applications if record.stream == APPLICATIONS else self.interviews

    def settings(self, database_url: str, group: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap": self.bootstrap,
            "database_url": database_url,
            "group_id": f"bench-{group}-{self.suffix}",
            "topic_applications": self.applications,
            "topic_interviews": self.interviews,
            "topic_labels": self.outputs["labels"],
            "topic_deadlines": self.outputs["deadlines"],
            "topic_membership": self.outputs["membership"],
            "topic_dlq": self.outputs["dlq"],
            **FAST_GROUP,
        }
        return Settings(**(values | overrides))

    def env(self, settings: Settings) -> dict[str, str]:
        """The same settings as GOCLUSTER_* variables, for a `gocluster run` subprocess."""
        names = (
            "kafka_bootstrap",
            "database_url",
            "group_id",
            "topic_applications",
            "topic_interviews",
            "topic_labels",
            "topic_deadlines",
            "topic_membership",
            "topic_dlq",
            *FAST_GROUP,
        )
        return {f"GOCLUSTER_{name.upper()}": str(getattr(settings, name)) for name in names}


@contextlib.contextmanager
def topic_set(bootstrap: str) -> Iterator[TopicSet]:
    topics = TopicSet(bootstrap, uuid.uuid4().hex[:10])
    wanted = dict.fromkeys(topics.inputs, INPUT_PARTITIONS)
    wanted |= dict.fromkeys(topics.outputs.values(), OUTPUT_PARTITIONS)
    admin = {"bootstrap_servers": bootstrap}
    create_topics(admin, wanted)
    try:
        yield topics
    finally:
        # The broker keeps everything in memory: free each run's records.
        with contextlib.suppress(Exception):
            delete_topics(admin, list(wanted))


def producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    """An upstream producer: idempotent, acks=all, like the service's own."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "bench-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
    }
    return KafkaProducer(**(config | overrides))


def produce_all(topics: TopicSet, records: Sequence[Record], timeout_s: float = 120) -> float:
    """Send every record and wait for every acknowledgement; returns the seconds it took."""
    started = time.perf_counter()
    client = producer(topics.bootstrap, batch_size=256 * 1024, linger_ms=20)
    try:
        futures = [
            client.send(topics.topic(r), key=r.key, value=r.value, headers=r.headers)
            for r in records
        ]
        client.flush(timeout=timeout_s)
        failed = [f for f in futures if not f.is_done or f.failed()]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(futures)} records were not acknowledged")
    finally:
        client.close(timeout=10)
    return time.perf_counter() - started


# -- the rest ------------------------------------------------------------------


def quiet_service_logs() -> None:
    """The service logs one JSON line per event; render them as in production, to /dev/null."""
    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    configure_logging(sink)
    # kafka-python's network loop warns when a busy process keeps it from running for
    # over 100 ms, which a CPU-bound benchmark does all the time; it is not a result.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)


def machine() -> dict[str, Any]:
    """What the numbers were measured on, with the shared PostgreSQL server's version."""
    return tests_machine() | {"postgres": postgres_version()}


def spread(values: Iterable[float | None], digits: int = 1) -> dict[str, float]:
    """Median, min and max of the runs (None values, from runs that had none, left out)."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return {}
    return {
        "median": round(statistics.median(data), digits),
        "min": round(data[0], digits),
        "max": round(data[-1], digits),
        "n": len(data),
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]
