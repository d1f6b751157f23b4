"""Which instance publishes the outbox: the holder of a lease in PostgreSQL.

A session advisory lock would stay held by a paused process (SIGSTOP, a frozen
VM) for as long as its connection lives, and nobody would publish. A lease
expires instead: the leader renews it every third of its length, another
instance takes it over once it has expired, and the leader confirms it still
holds it before each batch and in the very transaction that marks rows sent.
A leader that wakes up after losing the lease therefore stops at once; at most
the batch it was publishing when it was frozen goes out a second time.

While the database refuses writes (read-only failover, full disk) the lease
cannot be renewed; it still counts until it expires by the database's clock,
and then nobody publishes, since nobody could mark anything sent.

SQLite is one instance by construction: always the leader.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from workflows.store import leases

log = structlog.get_logger("gocluster.relay")

LEASE_NAME = "outbox-relay"


class LostLease(RuntimeError):
    """Another instance holds the relay's lease now."""


class Leadership:
    def __init__(self, db: Engine, lease_s: float) -> None:
        self.db = db
        self.lease_s = lease_s
        self.shared = db.dialect.name == "postgresql"
        self.holder = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.leader = False
        self.renewed_at = float("-inf")
        self.renewal_failing = False

    @property
    def standby_wait_s(self) -> float:
        """How long a standby waits between attempts to take the lease over."""
        return min(1.0, self.lease_s / 3)

    def held(self) -> bool:
        """Before each batch: renew the lease when a third of it has passed, else check it."""
        if not self.shared:
            return True
        try:
            if not self.leader or time.monotonic() - self.renewed_at >= self.lease_s / 3:
                return self._renew()
            with self.db.connect() as conn:
                return self._still(leases.holds(conn, LEASE_NAME, self.holder))
        except SQLAlchemyError as exc:
            return self._unrenewable(exc)

    def confirm(self, conn: Connection) -> None:
        """In a transaction that acts as the leader: renew the lease or raise LostLease.

        The renewal's row lock makes a takeover wait until this transaction ends.
        """
        if not self.shared:
            return
        started = time.monotonic()
        if not leases.acquire(conn, LEASE_NAME, self.holder, self.lease_s):
            self._still(False)
            raise LostLease(LEASE_NAME)
        self.renewed_at = started

    def release(self) -> None:
        if not (self.shared and self.leader):
            return
        with contextlib.suppress(SQLAlchemyError), self.db.begin() as conn:
            leases.release(conn, LEASE_NAME, self.holder)
        self.leader = False
        log.info("outbox relay leadership released")

    def _renew(self) -> bool:
        started = time.monotonic()
        with self.db.begin() as conn:
            got = leases.acquire(conn, LEASE_NAME, self.holder, self.lease_s)
        if got:
            self.renewed_at = started
        self.renewal_failing = False
        return self._still(got)

    def _unrenewable(self, exc: SQLAlchemyError) -> bool:
        """The database refused the renewal: the lease still counts until it expires."""
        try:
            with self.db.connect() as conn:
                held = leases.holds(conn, LEASE_NAME, self.holder)
        except SQLAlchemyError:
            held = False
        if self.leader and not self.renewal_failing:
            log.warning(
                "outbox relay could not renew its lease",
                error=str(exc).splitlines()[0],
                still_held=held,
            )
        self.renewal_failing = True
        return self._still(held)

    def _still(self, held: bool) -> bool:
        if held and not self.leader:
            log.info("outbox relay leadership acquired", lease_s=self.lease_s)
        elif self.leader and not held:
            log.warning("outbox relay leadership lost", lease_s=self.lease_s)
        self.leader = held
        return held
