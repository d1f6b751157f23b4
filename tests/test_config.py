"""Settings: environment mapping, kafka-python keywords, clear errors, no leaked secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from pydantic import ValidationError

from consumers.config import REDACTED, Settings

SECRETS = ("db-hunter2", "query-hunter2", "sasl-hunter2", "key-hunter2")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own GOCLUSTER_* variables must not change what these tests see."""
    for name in list(os.environ):
        if name.upper().startswith("GOCLUSTER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "client.key"
    path.write_text("not a real key")
    return path


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch, key_file: Path) -> None:
    env = {
        "GOCLUSTER_DATABASE_URL": "postgresql+psycopg://gc:db-hunter2@db:5432/gc?password=query-hunter2",
        "GOCLUSTER_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "GOCLUSTER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "GOCLUSTER_KAFKA_SASL_USERNAME": "svc-gocluster",
        "GOCLUSTER_KAFKA_SASL_PASSWORD": "sasl-hunter2",
        "GOCLUSTER_KAFKA_SSL_CAFILE": str(key_file),
        "GOCLUSTER_KAFKA_SSL_KEYFILE": str(key_file),
        "GOCLUSTER_KAFKA_SSL_PASSWORD": "key-hunter2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_defaults_are_the_contract_defaults() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite:///gocluster.db"
    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.policy is None
    assert settings.input_topics == ("gocluster.applications", "gocluster.interviews")
    assert (settings.topic_labels, settings.topic_deadlines) == (
        "gocluster.labels",
        "gocluster.deadlines",
    )
    assert (settings.topic_membership, settings.topic_dlq) == (
        "gocluster.membership",
        "gocluster.dlq",
    )
    assert settings.service_source == "/gocluster/membership"


def test_environment_variables_map_to_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    topics = ("applications", "interviews", "labels", "deadlines", "membership", "dlq")
    for topic in topics:
        monkeypatch.setenv(f"GOCLUSTER_TOPIC_{topic.upper()}", f"prod.{topic}")
    monkeypatch.setenv("GOCLUSTER_DATABASE_URL", "sqlite:////var/lib/gc.db")
    monkeypatch.setenv("GOCLUSTER_KAFKA_BOOTSTRAP", "k1:9092, k2:9092")
    monkeypatch.setenv("GOCLUSTER_POLICY", "/etc/gocluster/policy.yaml")
    monkeypatch.setenv("GOCLUSTER_SERVICE_SOURCE", "/gocluster/prod")
    monkeypatch.setenv("GOCLUSTER_GROUP_ID", "gc-prod")
    monkeypatch.setenv("GOCLUSTER_MAX_RECORD_BYTES", "2048")
    monkeypatch.setenv("GOCLUSTER_KAFKA_MAX_POLL_RECORDS", "50")

    settings = Settings()

    assert [getattr(settings, f"topic_{topic}") for topic in topics] == [
        f"prod.{topic}" for topic in topics
    ]
    assert settings.database_url == "sqlite:////var/lib/gc.db"
    assert settings.policy == Path("/etc/gocluster/policy.yaml")
    assert settings.service_source == "/gocluster/prod"
    assert settings.max_record_bytes == 2048
    consumer = settings.consumer_config()
    assert consumer["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert (consumer["group_id"], consumer["max_poll_records"]) == ("gc-prod", 50)


def test_secrets_never_appear_in_repr_str_or_summary(secret_env: None) -> None:
    settings = Settings()
    summary = settings.safe_summary()
    for text in (repr(settings), str(settings), str(summary)):
        for secret in SECRETS:
            assert secret not in text
    assert summary["kafka_sasl_password"] == REDACTED
    assert summary["kafka_ssl_password"] == REDACTED
    assert summary["database_url"] == "postgresql+psycopg://gc:***@db:5432/gc?password=***"
    assert "svc-gocluster" in summary["kafka_sasl_username"]


def test_kafka_configs_pass_security_settings_under_kafka_python_names(
    secret_env: None, key_file: Path
) -> None:
    settings = Settings()
    expected = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc-gocluster",
        "sasl_plain_password": "sasl-hunter2",
        "ssl_cafile": str(key_file),
        "ssl_keyfile": str(key_file),
        "ssl_password": "key-hunter2",
    }
    for config, client in (
        (settings.consumer_config(), KafkaConsumer),
        (settings.producer_config(), KafkaProducer),
        (settings.admin_config(), KafkaAdminClient),
    ):
        assert expected.items() <= config.items()
        assert "ssl_certfile" not in config  # only what is set
        assert set(config) <= set(client.DEFAULT_CONFIG)


def test_plaintext_configs_carry_no_security_extras() -> None:
    config = Settings().producer_config()
    assert config["security_protocol"] == "PLAINTEXT"
    assert not [key for key in config if key.startswith(("sasl_", "ssl_"))]
    assert (config["acks"], config["enable_idempotence"]) == ("all", True)


def test_consumer_config_commits_by_hand_from_the_earliest_offset() -> None:
    config = Settings().consumer_config()
    assert (config["enable_auto_commit"], config["auto_offset_reset"]) == (False, "earliest")


def test_output_topics_route_each_output_type() -> None:
    settings = Settings(topic_labels="L", topic_deadlines="D", topic_membership="M")
    assert settings.output_topics == {
        "gocluster.label.": "L",
        "gocluster.deadline.": "D",
        "gocluster.membership.": "M",
    }
    assert settings.topic_for("gocluster.label.expired") == "L"
    assert settings.topic_for("gocluster.deadline.approaching") == "D"
    assert settings.topic_for("gocluster.membership.changed") == "M"
    with pytest.raises(KeyError, match=r"gocluster\.application\.submitted"):
        settings.topic_for("gocluster.application.submitted")


@pytest.mark.parametrize(
    ("variable", "value", "field", "reason"),
    [
        ("GOCLUSTER_KAFKA_MAX_POLL_RECORDS", "many", "kafka_max_poll_records", "valid integer"),
        ("GOCLUSTER_MAX_RECORD_BYTES", "-5", "max_record_bytes", "greater than 0"),
        ("GOCLUSTER_TOPIC_DLQ", "dead letters", "topic_dlq", "Kafka topic name"),
        ("GOCLUSTER_KAFKA_SECURITY_PROTOCOL", "TLS", "kafka_security_protocol", "SASL_SSL"),
        ("GOCLUSTER_KAFKA_SSL_CAFILE", "/no/such/ca.pem", "kafka_ssl_cafile", "file"),
        ("GOCLUSTER_DATABASE_URL", "pw=db-hunter2", "database_url", "SQLAlchemy database URL"),
    ],
)
def test_a_bad_value_is_reported_by_name_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as error:
        Settings()
    message = str(error.value)
    assert field in message
    assert reason in message
    assert value not in message


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"GOCLUSTER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs kafka_sasl_mechanism"),
        (
            {
                "GOCLUSTER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "GOCLUSTER_KAFKA_SASL_MECHANISM": "PLAIN",
            },
            "needs kafka_sasl_username and kafka_sasl_password",
        ),
        ({"GOCLUSTER_KAFKA_SASL_PASSWORD": "x"}, "has no SASL"),
        ({"GOCLUSTER_KAFKA_SSL_PASSWORD": "x"}, "has no SSL"),
        ({"GOCLUSTER_TOPIC_LABELS": "gocluster.applications"}, "both input and output"),
        ({"GOCLUSTER_KAFKA_HEARTBEAT_INTERVAL_MS": "45000"}, "below kafka_session_timeout_ms"),
    ],
)
def test_incoherent_settings_are_rejected_at_start_up(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], reason: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=reason):
        Settings()


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOCLUSTER_KAFKA_SASL_MECHANISM", "")
    monkeypatch.setenv("GOCLUSTER_POLICY", "")
    settings = Settings()
    assert (settings.kafka_sasl_mechanism, settings.policy) == (None, None)


def test_misspelt_variables_are_reported_so_they_can_be_warned_about() -> None:
    environ = {"GOCLUSTER_TOPIC_APLICATIONS": "x", "GOCLUSTER_GROUP_ID": "g", "PATH": "/bin"}
    assert Settings.unknown_env(environ) == ["GOCLUSTER_TOPIC_APLICATIONS"]
