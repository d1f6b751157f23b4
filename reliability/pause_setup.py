"""The pause phase's set-up: a database, six input partitions, `gocluster` processes whose
database sessions carry their role as `application_name` (so pg_stat_activity says
which process is inside a transaction), and the settings the fixes announce."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from reliability.context import Context
from reliability.probes import Probe
from reliability.processes import Fleet, Proc
from reliability.stream import Stream, build_stream
from tests.kafka_fixtures import KafkaTopics, create_topic_set
from tests.service_process import inbox_outcomes, migrate, service_env, wait_until
from tests.workload import cloud_events

__all__ = [
    "CONSUMER",
    "RELAY",
    "PauseRun",
    "catch_in_transaction",
    "fix_settings",
    "pause_run",
    "wait_split",
    "with_application_name",
]

CONSUMER = ["run", "--clock", "event", "--only", "consumer"]
RELAY = ["run", "--clock", "event", "--only", "relay"]
INPUT_PARTITIONS = 6


def fix_settings(cfg: Any) -> dict[str, str]:
    """The settings the pause and lock fixes announce, by their environment names (a
    service that does not know them ignores them)."""
    return {
        "GOCLUSTER_RELAY_LEASE_S": str(cfg.relay_lease_s),
        "GOCLUSTER_DB_LOCK_TIMEOUT_MS": str(cfg.db_lock_timeout_ms),
        "GOCLUSTER_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": str(cfg.db_idle_in_transaction_timeout_ms),
    }


def with_application_name(url: str, name: str) -> str:
    return make_url(url).update_query_dict({"application_name": name}).render_as_string(False)


@dataclass
class PauseRun:
    url: str
    topics: KafkaTopics
    fleet: Fleet
    probe: Probe
    stream: Stream
    lock_waiters: int | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.stream.events

    @property
    def inputs(self) -> dict[str, str]:
        return {"applications": self.topics.applications, "interviews": self.topics.interviews}

    def inbox(self) -> dict[tuple[str, str], str]:
        return inbox_outcomes(self.url)


@contextlib.contextmanager
def pause_run(
    ctx: Context, case: str, roles: dict[str, list[str]], max_poll_records: int
) -> Iterator[PauseRun]:
    """Start the roles (named processes), wait until the consumers split the inputs; at
    the end every process still there is killed, whatever happened."""
    cfg = ctx.cfg
    url = ctx.new_database(f"pause_{case}")
    migrate(url)
    topics = create_topic_set(ctx.bootstrap, input_partitions=INPUT_PARTITIONS, prefix="pause")
    session = cfg.pause_session_timeout_ms
    env = service_env(
        topics.env(),
        {
            "GOCLUSTER_DATABASE_URL": url,
            "GOCLUSTER_KAFKA_SESSION_TIMEOUT_MS": str(session),
            "GOCLUSTER_KAFKA_HEARTBEAT_INTERVAL_MS": str(max(100, session // 10)),
            "GOCLUSTER_KAFKA_MAX_POLL_RECORDS": str(max_poll_records),
        },
        fix_settings(cfg),
    )
    fleet = Fleet(env, ctx.logs(f"pause-{case}"))
    for role, args in roles.items():
        name = with_application_name(url, f"gocluster-{role}")
        fleet.start(role, args, {"GOCLUSTER_DATABASE_URL": name})
    seed = cfg.seed + 3003
    events = cloud_events(max(2, cfg.pause_events // 10), cfg.pause_events, seed=seed)
    run = PauseRun(url, topics, fleet, Probe(url), build_stream(events, seed, 0.0, 0))
    try:
        wait_split(run)
        yield run
    finally:
        fleet.close()
        run.probe.close()


def wait_split(run: PauseRun) -> None:
    """Until every consumer of the run owns input partitions, and together all of them."""
    fleet = run.fleet
    consumers = [r for r, p in fleet.procs.items() if "consumer" in p.args]
    every = {f"{t}/{p}" for t in run.topics.inputs for p in range(INPUT_PARTITIONS)}

    def split() -> bool:
        fleet.check()
        owned = [fleet.procs[r].partitions() for r in consumers]
        return all(owned) and set().union(*owned) == every and sum(map(len, owned)) == len(every)

    wait_until(split, 120, "the consumers to split the input partitions")


_IN_TRANSACTION = """
    SELECT state FROM pg_stat_activity
    WHERE application_name IN (%s, %s) AND backend_xid IS NOT NULL
      AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')
"""


def catch_in_transaction(run: PauseRun, proc: Proc, timeout_s: float) -> dict[str, Any]:
    """SIGSTOP `proc` at a moment its session is inside a transaction that holds row locks
    (it has a transaction id): watch pg_stat_activity, stop it, check it is still there
    (else let it go on and try again). `ready` is None if that never happened."""
    # The name the campaign gives its sessions, or the one the service may set itself.
    names = (f"gocluster-{proc.name.rsplit('-', 1)[0]}", f"gocluster/{proc.pid}")
    libpq = make_url(run.url).set(drivername="postgresql").render_as_string(False)
    attempts = 0
    with psycopg.connect(libpq, autocommit=True) as conn:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not conn.execute(_IN_TRANSACTION, names).fetchall():
                time.sleep(0.002)
                continue
            proc.pause()
            attempts += 1
            time.sleep(0.3)
            states = [r[0] for r in conn.execute(_IN_TRANSACTION, names).fetchall()]
            if "idle in transaction" in states:
                return {"ready": "idle in transaction, holding row locks", "attempts": attempts}
            proc.resume()
    return {"ready": None, "attempts": attempts}
