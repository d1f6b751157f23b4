"""A PostgreSQL server of the campaign's own, on a free loopback port, to stop and restart.

The reliability campaign restarts PostgreSQL mid-stream and starts the service
while it is down. Doing that to the shared server on 127.0.0.1:5432 would break
whatever else runs against it (the benchmarks, the test suite), so the campaign
runs `initdb` into a temporary folder and drives that server with `pg_ctl`.
It listens on 127.0.0.1 only, trusts local connections, and is removed at the end.
As root (where `initdb` refuses to run) the binaries run as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

__all__ = ["PostgresUnavailable", "PrivatePostgres", "postgres_bindir"]

START_TIMEOUT_S = 60.0


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the private server would not start."""


def postgres_bindir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (Debian layout or PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class PrivatePostgres:
    """`with PrivatePostgres() as pg: url = pg.create_database()`; `pg.restart("immediate")`."""

    def __init__(self, folder: Path | None = None) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found")
        self.bindir = bindir
        self._as_postgres = os.geteuid() == 0
        # As root the server runs as `postgres`, which must reach its folder: a folder
        # under a private (0700) directory such as pytest's would not do, /tmp does.
        self._own_folder = folder is None or self._as_postgres
        self.folder = Path(tempfile.mkdtemp(prefix="gocluster-pg-") if self._own_folder else folder)
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.port = _free_port()
        self.stops = 0

    # -- lifecycle -------------------------------------------------------------------

    def _run(self, *args: str, timeout_s: float = START_TIMEOUT_S) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{args[0]} exited {done.returncode}: {(done.stderr or done.stdout)[-800:]}"
            )

    def init(self) -> PrivatePostgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        return self

    def start(self) -> None:
        # The soak phase samples table bytes: space of pruned rows is reused only after a
        # vacuum, and with the default naptime (1 min) a steady state shows only late.
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} "
            f"-c unix_socket_directories={self.folder} -c max_connections=200 "
            "-c shared_buffers=64MB -c autovacuum_naptime=5s"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """`fast`: clean shutdown, sessions ended; `immediate`: a crash (recovery on start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.stops += 1

    def restart(self, mode: str = "fast", down_s: float = 0.0) -> None:
        self.stop(mode)
        time.sleep(down_s)
        self.start()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.libpq("postgres"), connect_timeout=3) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                if time.monotonic() > deadline:
                    raise PostgresUnavailable(f"not ready after {timeout_s:g} s: {exc}") from exc
                time.sleep(0.2)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.running:
            with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        self.init()
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- databases -------------------------------------------------------------------

    def libpq(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def set_read_only(self, database: str, read_only: bool) -> int:
        """Make `database` refuse (or accept again) writes while it still serves reads, as
        a failed-over replica or a full disk does: the default for new transactions, then
        every session of it ended so that each reconnects under the new default.
        Returns how many sessions were ended."""
        value = sql.SQL("on" if read_only else "off")
        with psycopg.connect(self.libpq("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
                    sql.Identifier(database), value
                )
            )
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchone()
        return int(ended[0]) if ended else 0

    def create_database(self, prefix: str = "campaign") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.libpq("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)
