"""deploy/compose.yaml's topology run as real processes (no container engine here).

The services, their commands and their GOCLUSTER_* environment are read from the
compose file and run as they stand, with only the addresses swapped for this
machine's (broker, database, HTTP host and ports, the office token): Apache
Kafka, a fresh PostgreSQL database, the one-shot migration, two `gocluster run`
instances in one consumer group (they create the topics, as compose lets them)
and `gocluster serve`. So this test breaks when the compose file and the real
command line drift apart.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumers.config import Settings
from tests import stories
from tests.brokers import ApacheKafka, Broker
from tests.deploy_files import COMPOSE, dockerfile_stages
from tests.http_probe import free_port, get
from tests.kafka_fixtures import produce
from tests.service_process import (
    ServiceProcess,
    inbox_count,
    inbox_outcomes,
    read_topics,
    replay,
    run_cli,
    service_env,
    unique_outputs,
    unsent_count,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

TOKEN = secrets.token_urlsafe(24)  # replaces compose's local-only default
# ${VAR:-default} / ${VAR-default} / ${VAR}: the test takes the file's defaults, never
# the developer's shell.
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
TOPIC_SETTINGS = {
    f: f"GOCLUSTER_{f.upper()}" for f in Settings.model_fields if f.startswith("topic_")
}
# Generous: four Python processes, Kafka and PostgreSQL share a loaded machine.
START_S = 120.0
FLOW_S = 180.0


# -- the compose file, read ------------------------------------------------------------


@dataclass(frozen=True)
class ComposeService:
    """One service of the gocluster image: its arguments to the entrypoint, its variables."""

    name: str
    args: tuple[str, ...]
    environment: Mapping[str, str]

    def env(self, **addresses: str) -> dict[str, str]:
        """The service's environment with these variables (all of which compose sets) swapped."""
        missing = sorted(set(addresses) - set(self.environment))
        assert not missing, f"compose service {self.name} sets no {missing}"
        return service_env(dict(self.environment) | addresses, fast=False)

    def command(self, **options: str) -> list[str]:
        """The arguments with these options' values (`port="0"` for --port) swapped."""
        args = list(self.args)
        for option, value in options.items():
            flag = f"--{option.replace('_', '-')}"
            assert flag in args, f"compose service {self.name} has no {flag} in {args}"
            args[args.index(flag) + 1] = value
        return args


def interpolated(value: object) -> str:
    return INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def gocluster_services() -> dict[str, list[ComposeService]]:
    """The services built from the Dockerfile, by their first argument (db, run, serve)."""
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    found: dict[str, list[ComposeService]] = {}
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        environment = {k: interpolated(v) for k, v in service.get("environment", {}).items()}
        args = tuple(interpolated(a) for a in service["command"])
        found.setdefault(args[0], []).append(ComposeService(name, args, environment))
    return found


def image_entrypoint() -> list[str]:
    entrypoints = [i["value"] for i in dockerfile_stages()[-1] if i["instruction"] == "ENTRYPOINT"]
    assert entrypoints, "the image has no ENTRYPOINT"
    parsed: list[str] = json.loads(entrypoints[-1])
    return parsed


def topic_names(environment: Mapping[str, str]) -> dict[str, str]:
    """Setting name -> topic, as the services will see them (compose's or the defaults)."""
    return {
        field: environment.get(variable, str(Settings.model_fields[field].default))
        for field, variable in TOPIC_SETTINGS.items()
    }


def unknown_variables(services: Sequence[ComposeService]) -> list[str]:
    """GOCLUSTER_* names that no setting reads (Settings ignores them silently)."""
    known = {f"GOCLUSTER_{field.upper()}" for field in Settings.model_fields}
    return sorted(
        f"{s.name}: {key}"
        for s in services
        for key in s.environment
        if key.startswith("GOCLUSTER_") and key not in known
    )


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
def topology_broker(fresh_broker: Broker) -> Broker:
    """Compose's own Kafka: Apache Kafka with nothing on it but what the topology creates."""
    if not isinstance(fresh_broker, ApacheKafka):
        pytest.skip(f"the deployment topology runs on Apache Kafka, not {fresh_broker.name}")
    return fresh_broker


@contextlib.contextmanager
def running(processes: Sequence[ServiceProcess]) -> Iterator[None]:
    """Start them all; whatever happens, every one still alive is killed on the way out."""
    with contextlib.ExitStack() as stack:
        for process in processes:
            stack.enter_context(process)
        yield


# -- helpers --------------------------------------------------------------------------


def produce_story(bootstrap: str, topics: Mapping[str, str], story: stories.Story) -> None:
    """Applications in structured mode, interviews in binary mode (both bindings in use)."""
    produce(
        bootstrap,
        topics["topic_applications"],
        [stories.structured_record(e) for e in story.on("applications")],
    )
    produce(
        bootstrap,
        topics["topic_interviews"],
        [stories.binary_record(e) for e in story.on("interviews")],
    )


def answers(url: str, status: int = 200, headers: Mapping[str, str] | None = None) -> bool:
    return get(url, headers=headers)[0] == status


def split_assignment(instances: Sequence[ServiceProcess], partitions: set[str]) -> bool:
    """Every input partition assigned to exactly one instance, and each instance has some."""
    assigned = [instance.assigned() for instance in instances]
    every = [p for part in assigned for p in part]
    return all(assigned) and len(every) == len(set(every)) and set(every) == partitions


def application_outputs(
    events: Mapping[str, dict[str, Any]], story: stories.Story
) -> dict[str, dict[str, Any]]:
    """The outputs caused by the story's application events (applied, admitted, rejected).

    They come before any deadline of their cluster exists, so no clock changes them.
    """
    causes = {e["id"] for e in story.on("applications")}
    return {i: e for i, e in events.items() if e["data"].get("cause_id") in causes}


def awards(events: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (e["subject"], e["data"]["level"], e["data"]["awarded_on"])
        for e in events
        if e["type"] == "gocluster.label.awarded"
    }


# -- the test -------------------------------------------------------------------------


def test_compose_topology_applies_a_story_once_serves_it_and_outlives_one_instance(
    topology_broker: Broker, postgres_url: str, tmp_path: Path
) -> None:
    """Under compose's `--clock wall` deadlines of this historical story fire as soon as
    they are due by the wall clock, in whatever order the two instances get to a
    cluster's events, so the deadline outputs depend on processing speed (CONTRACT.md
    section 6) and are not compared with an offline replay; what no clock changes is.
    """
    services = gocluster_services()
    assert image_entrypoint() == ["gocluster"], "compose's commands are arguments to gocluster"
    (migration,) = services["db"]
    runs = services["run"]
    (office,) = services["serve"]
    assert len(runs) == 2, [s.name for s in runs]
    assert not unknown_variables([migration, *runs, office])
    assert "--create-topics" in runs[0].args, "the topology's topics are created by `run`"
    partitions = int(runs[0].args[runs[0].args.index("--partitions") + 1])
    topics = topic_names(runs[0].environment)
    inputs = {
        f"{topics[name]}/{n}"
        for name in ("topic_applications", "topic_interviews")
        for n in range(partitions)
    }
    bootstrap = topology_broker.bootstrap
    addresses = {"GOCLUSTER_DATABASE_URL": postgres_url, "GOCLUSTER_KAFKA_BOOTSTRAP": bootstrap}
    logs = tmp_path / "logs"

    # The one-shot migration, as compose runs it, before anything else starts.
    done = run_cli(migration.args, migration.env(**addresses), check=False)
    assert done.returncode == 0, f"{' '.join(migration.args)}: {done.stderr[-2000:]}"

    health = {s.name: f"http://127.0.0.1:{free_port()}" for s in runs}
    instances = [
        ServiceProcess(
            s.env(
                **addresses,
                GOCLUSTER_HTTP_HOST="127.0.0.1",
                GOCLUSTER_HTTP_PORT=health[s.name].rsplit(":", 1)[1],
            ),
            s.args,
            name=s.name,
            log_dir=logs,
        )
        for s in runs
    ]
    office_port = free_port()
    serve = ServiceProcess(
        office.env(**addresses, GOCLUSTER_HTTP_TOKEN=TOKEN),
        office.command(host="127.0.0.1", port=str(office_port)),
        name=office.name,
        log_dir=logs,
    )
    office_url = f"http://127.0.0.1:{office_port}"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    story = stories.generate(clusters=16, seed=23, prefix="topo")
    later = stories.generate(clusters=3, seed=5, prefix="late")
    outputs_on = [topics[f"topic_{name}"] for name in ("labels", "deadlines", "membership")]

    with running([*instances, serve]):
        wait_until(
            lambda: split_assignment(instances, inputs),
            START_S,
            f"both instances to share the {len(inputs)} input partitions",
            0.5,
        )
        for name, base in health.items():
            wait_until(lambda b=base: answers(f"{b}/healthz"), START_S, f"{name} /healthz", 0.5)
            wait_until(lambda b=base: answers(f"{b}/readyz"), START_S, f"{name} /readyz", 0.5)

        produce_story(bootstrap, topics, story)
        wait_until(
            lambda: (
                set(inbox_outcomes(postgres_url).values()) == {"applied"}
                and inbox_count(postgres_url) == len(story.events)
            ),
            FLOW_S,
            f"all {len(story.events)} events of the story applied",
            0.5,
        )
        assert set(inbox_outcomes(postgres_url)) == story.event_keys
        applied = {i.name: i.count("event applied") for i in instances}
        assert sum(applied.values()) == len(story.events), applied
        assert all(applied.values()), f"an instance applied nothing: {applied}"
        wait_until(lambda: unsent_count(postgres_url) == 0, FLOW_S, "the outbox to drain", 0.5)

        reference, _ = replay(list(story.events), tmp_path / "replay")
        records = read_topics(bootstrap, outputs_on, len(reference), FLOW_S, settle_s=2.0)
        published = unique_outputs(records)
        assert awards(published.values()), "no label.awarded on the labels topic"
        assert awards(published.values()) == awards(reference)
        expected = application_outputs({e["id"]: e for e in reference}, story)
        assert application_outputs(published, story) == expected
        assert {e["subject"] for e in expected.values()} == set(story.clusters)
        dlq = read_topics(bootstrap, [topics["topic_dlq"]], 0, timeout_s=10, settle_s=1.0)
        assert dlq == []

        serve.wait_for_log("office serving", timeout_s=START_S)
        assert answers(f"{office_url}/healthz")
        assert answers(f"{office_url}/", 401), "the office answers without its token"
        assert answers(f"{office_url}/", 200, bearer)
        status, page = get(f"{office_url}/clusters", headers=bearer)
        assert status == 200
        assert [c for c in story.clusters if c not in page] == []

        # One instance goes (a rolling restart, a node drained): the other carries on.
        survivor, leaving = instances
        assert leaving.terminate() == 0
        wait_until(
            lambda: survivor.assigned() == inputs,
            START_S,
            f"{survivor.name} to take every input partition",
            0.5,
        )
        before = survivor.count("event applied")
        produce_story(bootstrap, topics, later)
        survivor.wait_for_log("event applied", FLOW_S, count=before + len(later.events))
        total = len(story.events) + len(later.events)
        assert inbox_count(postgres_url) == total
        wait_until(lambda: unsent_count(postgres_url) == 0, FLOW_S, "the outbox to drain", 0.5)
        records = read_topics(bootstrap, outputs_on, len(records), FLOW_S, settle_s=2.0)
        subjects = {e["subject"] for e in unique_outputs(records).values()}
        assert set(later.clusters) <= subjects
        assert answers(f"{health[survivor.name]}/readyz")
        assert survivor.terminate() == 0
        assert serve.terminate() == 0
