"""Typed service configuration, read from ``GOCLUSTER_*`` environment variables.

One object holds every knob so the composition root can build the engine,
producer and consumers from it, and so operators get one clear error naming
the bad variable at start-up instead of a late failure deep in a client.

Secrets (database password, SASL and key passwords) must never reach a log:
pydantic is told to hide input values in validation errors, ``repr``/``str``
show only redacted values, and :meth:`Settings.safe_summary` is the one thing
meant to be logged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from schemas.published import DEFAULT_SCHEMA_BASE_URL, check_base_url
from schemas.uri import is_uri_reference
from workflows.store.database import SessionLimits
from workflows.store.retention import Horizons

__all__ = ["REDACTED", "SecurityProtocol", "Settings"]

REDACTED = "***"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
# OAUTHBEARER is left out: kafka-python needs a token-provider object for it,
# which an environment variable cannot carry.
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"]

# Kafka's own rule for topic names (kafka.common.internals.Topic).
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# Query parameters that some drivers accept as credentials (libpq's ``password``).
_SECRET_QUERY_KEY = re.compile(r"pass|secret|token", re.IGNORECASE)

_TOPIC_FIELDS = (
    "topic_applications",
    "topic_interviews",
    "topic_labels",
    "topic_deadlines",
    "topic_membership",
    "topic_dlq",
)
_SECRET_FIELDS = ("kafka_sasl_password", "kafka_ssl_password", "http_token")
# What the migrations and tests cover ("postgres" is an alias that normalise_url maps).
_DATABASE_BACKENDS = frozenset({"sqlite", "postgresql", "postgres"})
# Room in a DLQ record for the five error headers (error.message is at most 1000
# characters) and the record batch framing, beyond the largest accepted input.
DLQ_HEADROOM_BYTES = 65_536
_LIMITS = SessionLimits()
_RETENTION_FIELDS = ("retention_inbox", "retention_outbox", "retention_timers", "retention_history")


class Settings(BaseSettings):
    """Everything the service reads from its environment (see CONTRACT.md section 6)."""

    model_config = SettingsConfigDict(
        env_prefix="GOCLUSTER_",
        extra="ignore",
        frozen=True,
        # Deployment templates often render an unset optional as VAR="".
        env_ignore_empty=True,
        # A failed value may be a password or a URL with one; the error still
        # names the variable and the reason.
        hide_input_in_errors=True,
    )

    database_url: str = Field(default="sqlite:///gocluster.db", repr=False)
    kafka_bootstrap: str = "localhost:9092"
    policy: Path | None = None

    topic_applications: str = "gocluster.applications"
    topic_interviews: str = "gocluster.interviews"
    topic_labels: str = "gocluster.labels"
    topic_deadlines: str = "gocluster.deadlines"
    topic_membership: str = "gocluster.membership"
    topic_dlq: str = "gocluster.dlq"

    service_source: str = Field(default="/gocluster/membership", min_length=1)
    group_id: str = Field(default="gocluster", min_length=1)
    max_record_bytes: int = Field(default=1_048_576, gt=0)
    # Superseded by http_port/http_host (the same server now also answers /healthz and
    # /readyz): read in their place when they are unset; see `http_address`.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str | None = None
    # /healthz, /readyz and /metrics of `gocluster run`; None (the default) serves nothing.
    http_port: int | None = Field(default=None, ge=1, le=65535)
    http_host: str | None = None
    # How often the operator gauges (lag, outbox, parked, timers) and the readiness
    # probes of the database and broker are refreshed.
    gauge_interval_s: float = Field(default=10.0, gt=0, le=3600)
    # /healthz fails when a loop made no progress for this long (or died).
    liveness_timeout_s: float = Field(default=300.0, gt=0)
    # /readyz fails when the consumer has not polled in its group for this long, or when
    # the last database or broker probe failed or is older than this.
    readiness_timeout_s: float = Field(default=60.0, gt=0)
    # A Kafka authentication failure that lasts this long stops `run` (exit code 77).
    kafka_auth_failure_exit_s: float = Field(default=300.0, gt=0)

    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: FilePath | None = None
    kafka_ssl_certfile: FilePath | None = None
    kafka_ssl_keyfile: FilePath | None = None
    kafka_ssl_password: SecretStr | None = None
    kafka_client_id: str = Field(default="gocluster", min_length=1)

    kafka_session_timeout_ms: int = Field(default=45_000, gt=0)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, gt=0)
    kafka_max_poll_interval_ms: int = Field(default=300_000, gt=0)
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=0)
    kafka_max_poll_records: int = Field(default=500, gt=0)
    kafka_request_timeout_ms: int = Field(default=30_000, gt=0)

    # `gocluster serve`: the bearer token clients must send (required off loopback),
    # and a fixed "today" for the office's views (default: the wall clock's date).
    http_token: SecretStr | None = Field(default=None, min_length=16)
    office_today: date | None = None
    # Outbox relay leadership on PostgreSQL: a paused leader is replaced after this long.
    relay_lease_s: float = Field(default=15.0, ge=1.0, le=3600.0)
    # PostgreSQL session limits (workflows/store/database.py SessionLimits); 0 is off.
    db_lock_timeout_ms: int = Field(default=_LIMITS.lock_timeout_ms, ge=0)
    db_idle_in_transaction_timeout_ms: int = Field(
        default=_LIMITS.idle_in_transaction_timeout_ms, ge=0
    )
    db_keepalives_idle_s: int = Field(default=_LIMITS.keepalives_idle_s, gt=0)
    db_keepalives_interval_s: int = Field(default=_LIMITS.keepalives_interval_s, gt=0)
    db_keepalives_count: int = Field(default=_LIMITS.keepalives_count, gt=0)
    # Retention horizons (ISO 8601 durations; "keep" keeps for ever). The inbox keeps
    # 30 days: beyond Kafka's default 7-day retention (a group reset re-reads that far)
    # plus a park TTL and a DLQ topic's 7 days before an operator's redrive.
    retention_inbox: timedelta | None = timedelta(days=30)
    retention_outbox: timedelta | None = timedelta(days=7)
    retention_timers: timedelta | None = timedelta(days=30)
    retention_history: timedelta | None = None  # the audit trail
    retention_interval_s: float = Field(default=600.0, gt=0)
    retention_batch: int = Field(default=1000, gt=0, le=100_000)
    # Outputs' `dataschema` is this base + the schema's file name; `gocluster serve`
    # publishes the files under /schemas/, so point it there (docs/contract.md section 4).
    schema_base_url: str = DEFAULT_SCHEMA_BASE_URL

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        # Operators write "sasl_ssl" as often as "SASL_SSL"; both mean the same.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(*_RETENTION_FIELDS, mode="before")
    @classmethod
    def _keep(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() == "keep" else value

    @field_validator(*_RETENTION_FIELDS)
    @classmethod
    def _not_negative(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(0):
            raise ValueError("a retention horizon cannot be negative")
        return value

    @field_validator("database_url")
    @classmethod
    def _parseable_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            # SQLAlchemy's message repeats the URL, password included, and a bad
            # port's ValueError quotes the URL's tail (part of a password with an
            # unencoded '@'): neither message is passed on.
            raise ValueError("not a SQLAlchemy database URL (dialect://...)") from None
        if url.host is not None and "@" in url.host:
            # "user:p@ss@db" parses as password "p", host "ss@db": the host (part
            # of the password) would be shown in the start-up log.
            raise ValueError("has an '@' in the host: percent-encode it in the password as %40")
        if url.get_backend_name() not in _DATABASE_BACKENDS:
            # Another dialect would fail only at connect time, where `gocluster run`
            # retries it as "database unreachable".
            raise ValueError(
                f"database {url.get_backend_name()[:40]!r} is not supported: use sqlite:// "
                "or postgresql://"
            )
        return value

    @field_validator("service_source")
    @classmethod
    def _uri_reference(cls, value: str) -> str:
        # It is the `source` of every output (and their `cause_source` for timers).
        if not is_uri_reference(value):
            raise ValueError("must be a URI-reference such as /gocluster/membership")
        return value

    @field_validator("schema_base_url")
    @classmethod
    def _schema_base(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("kafka_bootstrap")
    @classmethod
    def _non_empty_hosts(cls, value: str) -> str:
        if not [host for host in value.split(",") if host.strip()]:
            raise ValueError("needs at least one host[:port]")
        return value

    @field_validator(*_TOPIC_FIELDS)
    @classmethod
    def _legal_topic(cls, value: str) -> str:
        if not _TOPIC_NAME.match(value) or value in {".", ".."}:
            raise ValueError("a Kafka topic name is 1-249 characters of [A-Za-z0-9._-]")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        inputs = set(self.input_topics)
        outputs = {self.topic_labels, self.topic_deadlines, self.topic_membership, self.topic_dlq}
        if clash := inputs & outputs:
            # The service would consume its own output, forever.
            raise ValueError(f"topic(s) {sorted(clash)} configured as both input and output")
        if self.kafka_heartbeat_interval_ms >= self.kafka_session_timeout_ms:
            raise ValueError("kafka_heartbeat_interval_ms must be below kafka_session_timeout_ms")
        if None not in (self.http_port, self.metrics_port) and self.http_port != self.metrics_port:
            raise ValueError(
                "metrics_port is superseded by http_port: set only http_port "
                "(one server answers /healthz, /readyz and /metrics)"
            )
        self._check_security()
        return self

    def _check_security(self) -> None:
        """Reject security settings that would be silently ignored or fail at connect time."""
        sasl = self.kafka_security_protocol.startswith("SASL_")
        ssl = self.kafka_security_protocol.endswith("SSL")
        if sasl and self.kafka_sasl_mechanism is None:
            raise ValueError(f"{self.kafka_security_protocol} needs kafka_sasl_mechanism")
        needs_login = sasl and self.kafka_sasl_mechanism != "GSSAPI"
        if needs_login and (not self.kafka_sasl_username or self.kafka_sasl_password is None):
            raise ValueError(
                f"SASL {self.kafka_sasl_mechanism} needs kafka_sasl_username and "
                "kafka_sasl_password"
            )
        sasl_set = [name for name in self._sasl_fields() if getattr(self, name) is not None]
        if sasl_set and not sasl:
            raise ValueError(f"{sasl_set} set but kafka_security_protocol has no SASL")
        ssl_set = [name for name in self._ssl_fields() if getattr(self, name) is not None]
        if ssl_set and not ssl:
            raise ValueError(f"{ssl_set} set but kafka_security_protocol has no SSL")

    @staticmethod
    def _sasl_fields() -> tuple[str, ...]:
        return ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")

    @staticmethod
    def _ssl_fields() -> tuple[str, ...]:
        return ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "kafka_ssl_password")

    # -- derived views -------------------------------------------------------

    @property
    def input_topics(self) -> tuple[str, str]:
        return (self.topic_applications, self.topic_interviews)

    @property
    def output_topics(self) -> dict[str, str]:
        """Output event type prefix -> topic, as in CONTRACT.md section 2."""
        return {
            "gocluster.label.": self.topic_labels,
            "gocluster.deadline.": self.topic_deadlines,
            "gocluster.membership.": self.topic_membership,
        }

    def topic_for(self, event_type: str) -> str:
        """The output topic of an event type; a type with no topic is a bug, so it raises."""
        for prefix, topic in self.output_topics.items():
            if event_type.startswith(prefix):
                return topic
        raise KeyError(f"no output topic for event type {event_type!r}")

    @classmethod
    def unknown_env(cls, environ: Mapping[str, str] | None = None) -> list[str]:
        """GOCLUSTER_* variables that set nothing: a typo would otherwise go unnoticed."""
        known = {f"GOCLUSTER_{name.upper()}" for name in cls.model_fields}
        names = os.environ if environ is None else environ
        return sorted(
            n for n in names if n.upper().startswith("GOCLUSTER_") and n.upper() not in known
        )

    def http_address(self) -> tuple[str, int] | None:
        """Where `run` serves /healthz, /readyz and /metrics: GOCLUSTER_HTTP_*, else the
        superseded GOCLUSTER_METRICS_*, else nowhere."""
        port = self.http_port if self.http_port is not None else self.metrics_port
        if port is None:
            return None
        return (self.http_host or self.metrics_host or "127.0.0.1", port)

    def redacted_database_url(self) -> str:
        url = make_url(self.database_url)
        query = {
            key: (REDACTED if _SECRET_QUERY_KEY.search(key) else value)
            for key, value in url.query.items()
        }
        rendered = url.set(query=query).render_as_string(hide_password=True)
        return rendered.replace("%2A%2A%2A", REDACTED)

    # -- kafka-python keyword arguments --------------------------------------

    def _common_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap_servers": [h.strip() for h in self.kafka_bootstrap.split(",") if h.strip()],
            "client_id": self.kafka_client_id,
            "request_timeout_ms": self.kafka_request_timeout_ms,
            "security_protocol": self.kafka_security_protocol,
        }
        optional: dict[str, Any] = {
            "sasl_mechanism": self.kafka_sasl_mechanism,
            "sasl_plain_username": self.kafka_sasl_username,
            "sasl_plain_password": _reveal(self.kafka_sasl_password),
            "ssl_cafile": _path(self.kafka_ssl_cafile),
            "ssl_certfile": _path(self.kafka_ssl_certfile),
            "ssl_keyfile": _path(self.kafka_ssl_keyfile),
            "ssl_password": _reveal(self.kafka_ssl_password),
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        return config

    def consumer_config(self) -> dict[str, Any]:
        """Offsets are committed by hand after the database commit, never automatically."""
        return self._common_config() | {
            "group_id": self.group_id,
            "enable_auto_commit": False,
            # Nothing that enters an input topic may be skipped.
            "auto_offset_reset": "earliest",
            "session_timeout_ms": self.kafka_session_timeout_ms,
            "heartbeat_interval_ms": self.kafka_heartbeat_interval_ms,
            "max_poll_interval_ms": self.kafka_max_poll_interval_ms,
            "fetch_max_wait_ms": self.kafka_fetch_max_wait_ms,
            "max_poll_records": self.kafka_max_poll_records,
        }

    def producer_config(self) -> dict[str, Any]:
        """Idempotent, fully acknowledged: the outbox marks a row sent only once it is durable.

        Records up to the DLQ topic's size may be sent: a rejected input of the
        largest accepted size goes to the DLQ unchanged.
        """
        return self._common_config() | {
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            "retries": 2_147_483_647,
            "max_in_flight_requests_per_connection": 5,
            "delivery_timeout_ms": 120_000,
            "max_request_size": self.dlq_max_message_bytes,
        }

    @property
    def dlq_max_message_bytes(self) -> int:
        """The DLQ topic's `max.message.bytes`: the largest accepted input plus DLQ headers.

        At least Kafka's default 1 MiB plus headers, even with a smaller
        GOCLUSTER_MAX_RECORD_BYTES: a record over our limit but within the input
        topic's is rejected as `decode`, and its DLQ copy should still fit.
        """
        return max(1_048_576, self.max_record_bytes) + DLQ_HEADROOM_BYTES

    def topic_configs(self) -> dict[str, dict[str, str]]:
        """Topic settings `gocluster run --create-topics` gives the topics it creates."""
        return {self.topic_dlq: {"max.message.bytes": str(self.dlq_max_message_bytes)}}

    def session_limits(self) -> SessionLimits:
        return SessionLimits(
            lock_timeout_ms=self.db_lock_timeout_ms,
            idle_in_transaction_timeout_ms=self.db_idle_in_transaction_timeout_ms,
            keepalives_idle_s=self.db_keepalives_idle_s,
            keepalives_interval_s=self.db_keepalives_interval_s,
            keepalives_count=self.db_keepalives_count,
        )

    def retention(self) -> Horizons:
        return Horizons(
            inbox=self.retention_inbox,
            outbox=self.retention_outbox,
            timers=self.retention_timers,
            history=self.retention_history,
        )

    def admin_config(self) -> dict[str, Any]:
        return self._common_config()

    def safe_summary(self) -> dict[str, Any]:
        """Every setting, JSON-friendly, with secrets replaced by ``***``: the thing to log."""
        summary = self.model_dump(mode="json")
        summary["database_url"] = self.redacted_database_url()
        for name in _SECRET_FIELDS:
            if summary[name] is not None:
                summary[name] = REDACTED
        return summary

    def __repr_args__(self) -> Any:
        # database_url is repr=False; show the redacted form in its place.
        yield "database_url", self.redacted_database_url()
        yield from super().__repr_args__()


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


# The loops of `gocluster run` (consumers/service.py), here so that the command line
# can offer them without importing the service.
LOOPS = frozenset({"consumer", "relay", "timers", "retention"})
