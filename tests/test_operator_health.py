"""/healthz and /readyz of `gocluster run` on Apache Kafka: the broker stops and comes
back, the broker refuses our password.

Real subprocesses over real connections; the figures the tests measure (seconds for
/readyz to fail and to recover) are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from tests import stories
from tests.brokers import ApacheKafka, Broker, selected_broker
from tests.builders import submitted
from tests.http_probe import free_port, get, get_json
from tests.kafka_fixtures import KafkaTopics, create_topic_set, produce
from tests.service_process import ServiceProcess, service_env, wait_until

pytestmark = pytest.mark.kafka


def _env(topics: KafkaTopics, db_url: str, port: int, **extra: str) -> dict[str, str]:
    return service_env(
        topics.env(),
        {
            "GOCLUSTER_DATABASE_URL": db_url,
            "GOCLUSTER_HTTP_PORT": str(port),
            "GOCLUSTER_GAUGE_INTERVAL_S": "2",
        },
        extra,
    )


def _ready(base: str) -> bool:
    return get(f"{base}/readyz")[0] == 200


def test_readyz_fails_within_a_minute_when_the_broker_stops_and_recovers_when_it_returns_while_healthz_stays_200(  # noqa: E501
    restartable_broker: Broker, sqlite_url: str, tmp_path: Path
) -> None:
    topics = create_topic_set(restartable_broker.bootstrap)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with ServiceProcess(_env(topics, sqlite_url, port), name="service", log_dir=tmp_path) as svc:
        wait_until(lambda: _ready(base), 90, "/readyz to answer 200 at start")
        assert get(f"{base}/healthz")[0] == 200

        # Measured from the SIGTERM: the broker's clean shutdown itself takes seconds.
        stopping = threading.Thread(target=restartable_broker.stop)
        stopped = time.monotonic()
        stopping.start()
        health_codes: set[int] = set()
        while _ready(base):
            health_codes.add(get(f"{base}/healthz")[0])
            assert time.monotonic() - stopped < 60, "/readyz still 200 a minute after the stop"
            time.sleep(0.25)
        failed_after = time.monotonic() - stopped
        stopping.join(90)
        broker_gone_after = time.monotonic() - stopped
        status, body = get_json(f"{base}/readyz")
        assert status == 503
        assert body["checks"]["kafka"] != "ok"
        assert body["checks"]["database"] == "ok"

        # The broker stays away for a while: the process is alive and well all along.
        outage_end = time.monotonic() + 20
        while time.monotonic() < outage_end:
            health_codes.add(get(f"{base}/healthz")[0])
            assert not _ready(base)
            time.sleep(0.5)
        assert health_codes <= {200}, health_codes

        starting = time.monotonic()
        restartable_broker.start()
        returned = time.monotonic()
        wait_until(
            lambda: _ready(base), 120, "/readyz to answer 200 after the broker returned", 0.25
        )
        recovered_after = time.monotonic() - returned
        assert get(f"{base}/healthz")[0] == 200

        # Back to work: an event produced now is applied.
        event = submitted(date(2026, 3, 1), cluster_id="cluster-after-outage")
        produce(topics.bootstrap, topics.applications, [stories.record(event, "structured")])
        svc.wait_for_log("event applied", timeout_s=90)
        print(
            f"\n/readyz failed {failed_after:.1f} s after the broker's SIGTERM (the broker was "
            f"gone after {broker_gone_after:.1f} s); the broker answered again "
            f"{returned - starting:.1f} s after its start and /readyz answered 200 "
            f"{recovered_after:.1f} s later; /healthz answered {sorted(health_codes)} throughout"
        )
        assert svc.terminate() == 0


@pytest.fixture
def sasl_broker(tmp_path: Path) -> Iterator[ApacheKafka]:
    if selected_broker() != "apache":
        pytest.skip("needs Apache Kafka's SASL listener (scripts/apache-kafka)")
    broker = ApacheKafka(tmp_path / "sasl-broker", sasl_users={"alice": "alice-secret"})
    broker.start()
    yield broker
    broker.kill()


def test_a_refused_sasl_login_fails_readiness_with_its_own_line_and_exits_77_after_the_bound(
    sasl_broker: ApacheKafka, tmp_path: Path
) -> None:
    assert sasl_broker.sasl_bootstrap is not None
    topics = create_topic_set(sasl_broker.bootstrap)

    def env(password: str, port: int, db: str) -> dict[str, str]:
        return _env(
            topics,
            f"sqlite:///{tmp_path / db}",
            port,
            GOCLUSTER_KAFKA_BOOTSTRAP=sasl_broker.sasl_bootstrap or "",
            GOCLUSTER_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
            GOCLUSTER_KAFKA_SASL_MECHANISM="PLAIN",
            GOCLUSTER_KAFKA_SASL_USERNAME="alice",
            GOCLUSTER_KAFKA_SASL_PASSWORD=password,
            GOCLUSTER_KAFKA_AUTH_FAILURE_EXIT_S="25",
        )

    # The right password works on this listener: what follows is about the password.
    good_port = free_port()
    with ServiceProcess(env("alice-secret", good_port, "good.db"), name="good") as good:
        wait_until(
            lambda: _ready(f"http://127.0.0.1:{good_port}"), 90, "the good login to be ready"
        )
        assert good.terminate() == 0

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    began = time.monotonic()
    with ServiceProcess(env("wrong-secret", port, "bad.db"), name="bad", log_dir=tmp_path) as bad:
        line = bad.wait_for_log(
            "kafka authentication failed: the broker refuses these credentials", timeout_s=60
        )
        assert line["username"] == "alice"
        assert "wrong-secret" not in bad.stdout + bad.stderr
        assert "Authentication failed" in line["error"]

        def refused() -> bool:
            status, body = get_json(f"{base}/readyz")
            return status == 503 and body["checks"]["kafka"].startswith("authentication failed")

        wait_until(refused, 30, "/readyz to name the authentication failure")
        assert get(f"{base}/healthz")[0] == 200
        assert bad.process is not None
        code = bad.process.wait(timeout=120)
        exited_after = time.monotonic() - began
    assert code == 77
    assert bad.count("giving up: kafka authentication has failed for too long") == 1
    assert bad.count("kafka authentication failed: the broker refuses these credentials") == 1
    assert bad.count("kafka unreachable, retrying") == 0
    assert exited_after >= 25
    print(f"\nrefused login: exit 77 after {exited_after:.1f} s (bound 25 s)")
