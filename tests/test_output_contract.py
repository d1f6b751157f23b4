"""Outputs a consumer can route and check: `dataschema`, the `ce_*` headers, open schemas.

The service writes exactly the documented fields (docs/contract.md section 4),
while the published output schemas let a consumer tolerate a later additive
field. Every output names its data schema by an absolute URI, and `gocluster
serve` publishes that schema, so a consumer can fetch it and validate.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest
from pydantic import ValidationError
from referencing import Registry, Resource
from sqlalchemy import Engine

from consumers.cli_support import config_problems
from consumers.config import Settings
from consumers.outbox_relay import OutboxRelay
from consumers.records import output_headers
from schemas.messages import OutputType
from schemas.published import schema_file, schema_files
from schemas.validate import validate_output
from tests.office_support import office_server
from tests.service_process import run_cli, service_env
from tests.test_outbox_relay import NOW, TOPICS, FakeProducer
from workflows.dates import FixedClock
from workflows.store import messages

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "workflows" / "samples" / "cluster_automotive.jsonl"
CONTRACT = ROOT / "docs" / "contract.md"
SCHEMA_DIR = ROOT / "schemas" / "data"
BASE = "https://office.example.org/schemas/"
TOKEN = "office-token-0123456789"  # noqa: S105 - a test token


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, Any]]]:
    """The sample story replayed to 2030 (its Bronze label expires in 2027): every output
    type, with GOCLUSTER_SCHEMA_BASE_URL set. Returns the database URL and the outputs."""
    url = f"sqlite:///{tmp_path_factory.mktemp('story') / 'story.db'}"
    env = service_env({"GOCLUSTER_DATABASE_URL": url, "GOCLUSTER_SCHEMA_BASE_URL": BASE})
    done = run_cli(["replay", str(SAMPLE), "--now", "2030-01-01T00:00:00Z"], env)
    outputs = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert {o["type"] for o in outputs} == set(OutputType)
    return url, outputs


@pytest.fixture(scope="module")
def office(story: tuple[str, list[dict[str, Any]]]) -> Iterator[str]:
    """`gocluster serve` on the story's database, with a token and the same schema base."""
    url, _ = story
    env = service_env(
        {
            "GOCLUSTER_DATABASE_URL": url,
            "GOCLUSTER_SCHEMA_BASE_URL": BASE,
            "GOCLUSTER_HTTP_TOKEN": TOKEN,
        }
    )
    with office_server(url, env) as base:
        yield base


def test_every_output_type_names_its_schema_file_under_the_configured_base(
    story: tuple[str, list[dict[str, Any]]],
) -> None:
    _, outputs = story
    for output in outputs:
        assert output["dataschema"] == f"{BASE}{output['type']}.json"
        assert (SCHEMA_DIR / schema_file(output["type"])).is_file()
        validate_output(output)


def test_the_dataschema_of_every_output_resolves_at_gocluster_serve_and_validates_its_data(
    story: tuple[str, list[dict[str, Any]]], office: str
) -> None:
    """Fetched without the token: the schemas are the public contract (office/app.py)."""
    _, outputs = story
    fetched: dict[str, Any] = {}

    def fetch(uri: str) -> Resource[Any]:
        assert uri.startswith(BASE), uri
        response = httpx.get(office + urlsplit(uri).path, timeout=30)
        assert response.status_code == 200, (uri, response.status_code, response.text[:300])
        assert response.headers["content-type"] == "application/schema+json"
        fetched[uri] = response.json()
        return Resource.from_contents(fetched[uri])

    registry: Registry[Any] = Registry(retrieve=fetch)
    for output in outputs:
        schema = registry.get_or_retrieve(output["dataschema"]).value.contents
        assert schema["$id"] == output["dataschema"]  # relative $refs resolve to this server
        validator = jsonschema.Draft7Validator(schema, registry=registry)
        validator.validate(output["data"])
        assert not validator.is_valid({**output["data"], "level": 7, "cluster_id": ""})
    assert f"{BASE}common.json" in fetched  # the shared definitions came from the server too


def test_schema_files_are_open_to_anyone_and_the_api_still_needs_the_token(office: str) -> None:
    assert httpx.get(f"{office}/api/clusters", timeout=30).status_code == 401
    for name in sorted(schema_files()):
        response = httpx.get(f"{office}/schemas/{name}", timeout=30)
        assert response.status_code == 200, name
        assert response.json()["$id"] == BASE + name
    assert httpx.get(f"{office}/schemas/nothing.json", timeout=30).status_code == 404
    assert httpx.get(f"{office}/schemas/..%2Fdecode.py", timeout=30).status_code == 404


def _documented_fields() -> dict[str, set[str]]:
    """Section 4's table of docs/contract.md: type -> its `data` fields, plus the cause."""
    section = CONTRACT.read_text("utf-8").split("## 4. Output events")[1].split("\n## ")[0]
    fields: dict[str, set[str]] = {}
    for row in re.findall(r"^\| `(gocluster\.[a-z.]+)` \| ([^|]+) \|", section, re.MULTILINE):
        fields[row[0]] = set(re.findall(r"`([a-z_]+)`", row[1])) | {"cause_id", "cause_source"}
    return fields


def test_outputs_carry_exactly_the_documented_fields_although_the_schemas_are_open(
    story: tuple[str, list[dict[str, Any]]],
) -> None:
    documented = _documented_fields()
    assert set(documented) == set(OutputType)
    _, outputs = story
    for output in outputs:
        assert set(output["data"]) == documented[output["type"]], output["type"]
    for output_type in OutputType:
        schema = json.loads((SCHEMA_DIR / schema_file(output_type)).read_text("utf-8"))
        assert set(schema["properties"]) == set(schema["required"]) == documented[output_type]


def test_a_consumer_validating_with_a_published_output_schema_tolerates_an_added_field(
    story: tuple[str, list[dict[str, Any]]],
) -> None:
    """The consumer side is open; the producer's own check (validate_output) stays exact."""
    _, outputs = story
    registry: Registry[Any] = Registry().with_resources(
        (
            f"https://gocluster.example/schemas/{p.name}",
            Resource.from_contents(json.loads(p.read_text())),
        )
        for p in SCHEMA_DIR.glob("*.json")
    )
    for output in outputs:
        schema = registry.get_or_retrieve(
            f"https://gocluster.example/schemas/{schema_file(output['type'])}"
        )
        added = {**output["data"], "added_in_a_later_version": "x"}
        jsonschema.Draft7Validator(schema.value.contents, registry=registry).validate(added)
        with pytest.raises(Exception, match="unexpected field"):
            validate_output({**output, "data": added})


# -- records ---------------------------------------------------------------------------------


def test_output_record_headers_repeat_id_type_source_and_subject() -> None:
    event = {
        "id": "7f2c",
        "type": "gocluster.label.expired",
        "source": "/gocluster/membership",
        "subject": "cluster-ä",
        "data": {},
    }
    assert output_headers(event) == [
        ("content-type", b"application/cloudevents+json"),
        ("ce_id", b"7f2c"),
        ("ce_type", b"gocluster.label.expired"),
        ("ce_source", b"/gocluster/membership"),
        ("ce_subject", "cluster-ä".encode()),
    ]


def _row(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": payload["id"],
        "cluster_id": payload["subject"],
        "stream": "labels",
        "payload": payload,
        "created_at": NOW,
        "sent_at": None,
    }


def test_a_row_stored_before_outputs_had_a_dataschema_is_published_with_one(
    db_engine: Engine, story: tuple[str, list[dict[str, Any]]]
) -> None:
    """An upgrade in the middle of a backlog: the old rows still publish valid outputs."""
    _, outputs = story
    awarded = next(o for o in outputs if o["type"] == OutputType.LABEL_AWARDED)
    old = {k: v for k, v in awarded.items() if k != "dataschema"}
    current = {**awarded, "id": "other-id"}
    with db_engine.begin() as conn:
        messages.enqueue(conn, [_row(old), _row(current)])
    producer = FakeProducer()
    relay = OutboxRelay(
        db_engine,
        lambda: producer,  # type: ignore[arg-type,return-value]
        TOPICS,
        FixedClock(NOW),
        threading.Event(),
        schema_base="https://relay.example/s/",
    )
    assert relay.drain() == 2

    published = [json.loads(value or b"") for _, _, value, _ in producer.sent]
    assert published[0]["dataschema"] == "https://relay.example/s/gocluster.label.awarded.json"
    assert published[1]["dataschema"] == awarded["dataschema"]  # as stored, never re-stamped
    for (topic, key, _, headers), event in zip(producer.sent, published, strict=True):
        validate_output(event)
        assert (topic, key) == ("l", event["subject"].encode())
        assert headers == output_headers(event)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("/schemas/", "absolute http:// or https:// URL"),
        ("ftp://host/schemas/", "absolute http:// or https:// URL"),
        ("https://host/schemas", "must end in /"),
        ("https://host/sch emas/", "without spaces, query or fragment"),
        ("https://host/schemas/?v=1/", "without spaces, query or fragment"),
    ],
)
def test_a_bad_schema_base_url_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("GOCLUSTER_SCHEMA_BASE_URL", value)
    with pytest.raises(ValidationError) as error:
        Settings()
    message = config_problems(error.value)
    assert message.startswith("GOCLUSTER_SCHEMA_BASE_URL: "), message
    assert reason in message
