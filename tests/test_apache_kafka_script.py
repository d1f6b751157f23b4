"""scripts/apache-kafka: a broker that keeps topics, offsets and groups across stop and kill."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata

from consumers.kafka_admin import create_topics
from tests.brokers import SCRIPT, ApacheKafka, selected_broker
from tests.kafka_fixtures import produce, read_all

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(selected_broker() != "apache", reason="tests the Apache Kafka script"),
]


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, check=False)


def _committed(bootstrap: str, group: str, partitions: list[TopicPartition]) -> list[int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return [consumer.committed(tp) for tp in partitions]
    finally:
        consumer.close()


def test_a_stopped_or_killed_broker_comes_back_with_its_topics_offsets_and_groups(
    tmp_path: Path,
) -> None:
    broker = ApacheKafka(tmp_path / "kafka").start()
    try:
        bootstrap = broker.bootstrap
        assert bootstrap.startswith("127.0.0.1:")
        assert broker.version.startswith("4.")
        # Starting a running folder again is a no-op that prints the same address.
        again = _script("start", str(broker.folder))
        assert (again.returncode, again.stdout.strip()) == (0, bootstrap)

        create_topics({"bootstrap_servers": bootstrap}, {"kept": 2})
        produce(bootstrap, "kept", [(f"k{i}".encode(), f"v{i}".encode(), []) for i in range(20)])
        partitions = [TopicPartition("kept", 0), TopicPartition("kept", 1)]
        committer = KafkaConsumer(bootstrap_servers=bootstrap, group_id="kept-group")
        committer.commit(
            {
                partitions[0]: OffsetAndMetadata(3, "", -1),
                partitions[1]: OffsetAndMetadata(4, "", -1),
            }
        )
        committer.close()

        broker.stop()
        assert not broker.running
        assert _script("status", str(broker.folder)).returncode == 1
        broker.start()
        assert broker.bootstrap == bootstrap
        assert _committed(bootstrap, "kept-group", partitions) == [3, 4]

        broker.kill()
        broker.start()
        assert broker.bootstrap == bootstrap
        assert len(read_all(bootstrap, "kept", 20, timeout_s=20)) == 20
        assert _committed(bootstrap, "kept-group", partitions) == [3, 4]
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            assert "kept-group" in {group["group_id"] for group in admin.list_groups()}
        finally:
            admin.close()
    finally:
        broker.kill()
    assert not broker.running


def test_bad_arguments_and_an_unknown_folder_get_one_clear_line() -> None:
    bad = _script("launch")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "bad arguments" in bad.stderr
    # Stopping what does not run is not an error; asking for its status says "not running".
    assert _script("stop", "/nonexistent/kafka").returncode == 0
    assert _script("status", "/nonexistent/kafka").returncode == 1


def test_an_opt_in_sasl_listener_refuses_a_wrong_password_as_an_authentication_failure(
    tmp_path: Path,
) -> None:
    import logging

    from kafka.errors import IllegalSaslStateError, KafkaError, SaslAuthenticationFailedError

    from consumers.kafka_auth import AuthWatch

    broker = ApacheKafka(tmp_path / "kafka", sasl_users={"alice": "alice-secret"}).start()
    try:
        assert broker.sasl_bootstrap is not None
        assert broker.sasl_bootstrap != broker.bootstrap
        printed = _script("start", str(broker.folder)).stdout.split()
        assert printed == ["SASL_PLAINTEXT", broker.sasl_bootstrap, broker.bootstrap]

        def login(password: str) -> list[type[BaseException]]:
            """The exception types kafka-python logs while it tries to log in."""
            seen: list[type[BaseException]] = []

            class Collect(AuthWatch):
                def emit(self, record: logging.LogRecord) -> None:
                    args = record.args if isinstance(record.args, tuple) else ()
                    seen.extend(type(a) for a in args if isinstance(a, BaseException))

            watch = Collect()
            logging.getLogger("kafka").addHandler(watch)
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=broker.sasl_bootstrap,
                    security_protocol="SASL_PLAINTEXT",
                    sasl_mechanism="PLAIN",
                    sasl_plain_username="alice",
                    sasl_plain_password=password,
                    # The broker's answer races its close: give the client many attempts.
                    bootstrap_timeout_ms=20_000,
                )
                admin.describe_cluster()
                admin.close()
            except KafkaError:
                pass
            finally:
                logging.getLogger("kafka").removeHandler(watch)
            return seen

        assert not any(issubclass(t, SaslAuthenticationFailedError) for t in login("alice-secret"))
        refused = login("wrong")
        assert SaslAuthenticationFailedError in refused
        assert IllegalSaslStateError not in refused

        broker.stop()
        # Started again without the variable: the folder keeps the listener and its users.
        again = ApacheKafka(broker.folder).start()
        assert again.sasl_bootstrap == broker.sasl_bootstrap
        assert SaslAuthenticationFailedError in login("wrong")
    finally:
        broker.kill()
