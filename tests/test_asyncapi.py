"""docs/asyncapi.yaml: valid for the official AsyncAPI parser, and equal to the code.

The parser (@asyncapi/parser, pinned in scripts/asyncapi-check) resolves the
document's $refs into schemas/data, so a renamed or broken schema file fails here.
The rest checks the document against what the service really does: its topics,
event types, DLQ error classes, Kafka settings, and examples the service accepts.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumers.config import Settings
from consumers.records import DLQ_ERROR_CLASSES, RecordOrigin, record_to_event_dict
from schemas.errors import ErrorClass
from schemas.messages import EventType, OutputType
from schemas.validate import parse_event, validate_output
from tests.tools import REPO, command, run, unavailable

DOCUMENT = REPO / "docs" / "asyncapi.yaml"
CHECKER = REPO / "scripts" / "asyncapi-check"
SCHEMA_DIR = REPO / "schemas" / "data"
# The settings' defaults, whatever GOCLUSTER_* variables the environment holds.
DEFAULTS = Settings.model_construct()
STRUCTURED = "application/cloudevents+json"
BINARY = "application/json"

# The defects of the deliberately broken copy, and what the parser must say of each.
# One copy holds all three: a parse of the document costs seconds.
BROKEN: dict[str, tuple[str, str]] = {
    "dangling-schema-ref": ("invalid-ref", "gocluster.label.expird.json"),
    "message-of-another-channel": (
        "asyncapi3-operation-messages-from-referred-channel",
        "operations.sendLabels.messages.2",
    ),
    "asyncapi-2-verb": ("asyncapi-document-resolved", "operations.sendDeadlines.action"),
}


def _broken_copy(document: dict[str, Any]) -> dict[str, Any]:
    broken = copy.deepcopy(document)
    data = broken["components"]["messages"]["labelExpired"]["payload"]["schema"]["allOf"][2]
    data["properties"]["data"]["$ref"] = "../schemas/data/gocluster.label.expird.json"
    broken["operations"]["sendLabels"]["messages"].append(
        {"$ref": "#/channels/deadlines/messages/breached"}
    )
    broken["operations"]["sendDeadlines"]["action"] = "publish"
    return broken


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def parser_verdicts(
    document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[str]]:
    """The parser's lines for the real document and the broken copy (one node process).

    The copy sits in a docs/ folder beside a schemas/ link, as the real one does, so
    that its relative $refs reach the real schema files.
    """
    node = command("node", "Node.js 20+; scripts/ensure-test-machine.sh checks for it")
    if not (CHECKER / "node_modules" / "@asyncapi" / "parser").is_dir():
        unavailable(f"the AsyncAPI parser is not installed: run `npm ci` in {CHECKER}")
    root = tmp_path_factory.mktemp("asyncapi")
    (root / "docs").mkdir()
    (root / "schemas").symlink_to(REPO / "schemas", target_is_directory=True)
    broken = root / "docs" / "asyncapi.yaml"
    broken.write_text(yaml.safe_dump(_broken_copy(document), sort_keys=False))
    result = run([node, str(CHECKER / "check.mjs"), "--strict", str(DOCUMENT), str(broken)])
    assert result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    return {
        name: [line for line in lines if line.startswith(f"{path}: ")]
        for name, path in (("real", DOCUMENT), ("broken", broken))
    }


def test_the_official_parser_accepts_the_document_without_a_warning(
    parser_verdicts: dict[str, list[str]],
) -> None:
    assert parser_verdicts["real"] == [
        f"{DOCUMENT}: valid AsyncAPI 3.1.0 (6 channels, 18 messages)"
    ]


@pytest.mark.parametrize("defect", list(BROKEN))
def test_the_parser_rejects_a_broken_copy(
    defect: str, parser_verdicts: dict[str, list[str]]
) -> None:
    code, where = BROKEN[defect]
    verdict = parser_verdicts["broken"]
    assert not any("valid AsyncAPI" in line for line in verdict), verdict
    assert any(f": error: {code}: " in line and where in line for line in verdict), verdict


# -- the document against the code -------------------------------------------------------


def _resolve(document: Mapping[str, Any], node: Any) -> Any:
    """Follow a `#/...` reference inside the document (one level, as the tests need)."""
    if isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        ref: str = node["$ref"]
        if ref.startswith("#/"):
            target: Any = document
            for part in ref[2:].split("/"):
                target = target[part]
            return _resolve(document, target)
    return node


def _messages(document: dict[str, Any], channel: str) -> list[dict[str, Any]]:
    return [
        _resolve(document, message)
        for message in document["channels"][channel]["messages"].values()
    ]


def _content_type(document: dict[str, Any], message: dict[str, Any]) -> str:
    for trait in message.get("traits", []):
        if "contentType" in (resolved := _resolve(document, trait)):
            return str(resolved["contentType"])
    return str(message.get("contentType", document["defaultContentType"]))


def _channel_of(document: dict[str, Any], address: str) -> str:
    (name,) = (n for n, c in document["channels"].items() if c["address"] == address)
    return name


def test_channels_are_the_six_default_topics_both_ways(document: dict[str, Any]) -> None:
    topics = {getattr(DEFAULTS, f) for f in Settings.model_fields if f.startswith("topic_")}
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == topics
    for channel in document["channels"].values():
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]


def test_input_channels_carry_every_input_type_in_both_content_modes(
    document: dict[str, Any],
) -> None:
    for topic, prefix in (
        (DEFAULTS.topic_applications, "gocluster.application."),
        (DEFAULTS.topic_interviews, "gocluster.interview."),
    ):
        channel = _channel_of(document, topic)
        found = {(m["name"], _content_type(document, m)) for m in _messages(document, channel)}
        expected = {
            (t.value, mode)
            for t in EventType
            if t.startswith(prefix)
            for mode in (STRUCTURED, BINARY)
        }
        assert found == expected, topic
    assert {t.value.rsplit(".", 1)[0] + "." for t in EventType} == {
        "gocluster.application.",
        "gocluster.interview.",
    }


def test_output_channels_carry_exactly_the_output_types_in_structured_mode(
    document: dict[str, Any],
) -> None:
    expected: dict[str, set[str]] = {}
    for output in OutputType:
        expected.setdefault(DEFAULTS.topic_for(output), set()).add(output.value)
    for address, types in expected.items():
        messages = _messages(document, _channel_of(document, address))
        assert {m["name"] for m in messages} == types, address
        assert {_content_type(document, m) for m in messages} == {STRUCTURED}


def test_every_event_type_in_the_document_is_one_the_code_knows(document: dict[str, Any]) -> None:
    named = {
        m["name"]
        for m in document["components"]["messages"].values()
        if m["name"] != "rejected-record"
    }
    assert named == {t.value for t in EventType} | {t.value for t in OutputType}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_payloads_reference_the_contract_schema_file_of_their_type(
    document: dict[str, Any],
) -> None:
    for key, message in document["components"]["messages"].items():
        if message["name"] == "rejected-record":
            continue
        payload = message["payload"]
        assert payload["schemaFormat"] == "application/schema+json;version=draft-07", key
        refs = set(_refs(payload["schema"]))
        assert f"../schemas/data/{message['name']}.json" in refs, key
        structured = _content_type(document, message) == STRUCTURED
        assert ("../schemas/data/envelope.json" in refs) == structured, key
        # The type is fixed where the record carries it: value (structured), header (ce_type).
        consts = {
            part["properties"][name]["const"]
            for schema in (payload["schema"], message.get("headers", {}))
            for part in schema.get("allOf", [])
            for name in ("type", "ce_type")
            if name in part.get("properties", {})
        }
        assert consts == {message["name"]}, key


def test_every_schema_file_is_referenced_and_every_reference_exists(
    document: dict[str, Any],
) -> None:
    files = {ref.split("#")[0] for ref in _refs(document) if not ref.startswith("#")}
    for ref in files:
        assert (DOCUMENT.parent / ref).resolve().is_file(), ref
    assert {Path(ref).name for ref in files} == {p.name for p in SCHEMA_DIR.glob("*.json")}


def test_dead_letter_error_classes_match_the_code(document: dict[str, Any]) -> None:
    (message,) = _messages(document, _channel_of(document, DEFAULTS.topic_dlq))
    headers = message["headers"]
    assert set(headers["properties"]["error.class"]["enum"]) == {c.value for c in ErrorClass}
    assert set(headers["properties"]["error.class"]["enum"]) == DLQ_ERROR_CLASSES
    assert set(headers["required"]) == {
        "error.class",
        "error.message",
        "original.topic",
        "original.partition",
        "original.offset",
    }


def test_kafka_bindings_key_by_cluster_id_and_name_the_configured_group(
    document: dict[str, Any],
) -> None:
    key = document["components"]["messageBindings"]["clusterKey"]["kafka"]["key"]
    assert key == {"$ref": "../schemas/data/common.json#/definitions/clusterId"}
    consumer = document["components"]["operationBindings"]["consumer"]["kafka"]
    assert consumer["groupId"]["const"] == DEFAULTS.group_id
    assert consumer["clientId"]["const"] == DEFAULTS.kafka_client_id
    for name, operation in document["operations"].items():
        role = "consumer" if operation["action"] == "receive" else "producer"
        assert operation["bindings"] == {"$ref": f"#/components/operationBindings/{role}"}, name
        channel = _resolve(document, operation["channel"])
        assert (role == "consumer") == (channel["address"] in DEFAULTS.input_topics), name
    for message in document["components"]["messages"].values():
        if message["name"] != "rejected-record":
            bindings = {
                _resolve(document, t).get("bindings", {}).get("$ref") for t in message["traits"]
            }
            assert "#/components/messageBindings/clusterKey" in bindings, message["name"]


def test_the_document_version_is_the_package_version(document: dict[str, Any]) -> None:
    assert document["info"]["version"] == version("gocluster")


# -- the examples are events the service accepts -------------------------------------------


def _examples(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for key, message in document["components"]["messages"].items():
        assert message.get("examples"), f"{key} has no example"
        for example in message["examples"]:
            yield key, message, example


def test_input_examples_are_accepted_by_the_service_decoder(document: dict[str, Any]) -> None:
    checked = 0
    for key, message, example in _examples(document):
        if message["name"] not in set(EventType):
            continue
        headers = {name: str(value).encode() for name, value in example["headers"].items()}
        origin = RecordOrigin(
            topic="gocluster.applications",
            partition=0,
            offset=0,
            key=b"cluster",
            value=json.dumps(example["payload"]).encode(),
            headers=tuple(headers.items()),
        )
        event = parse_event(record_to_event_dict(origin, max_bytes=1 << 20))
        assert event.type == message["name"], key
        mode = STRUCTURED if headers.get("content-type") == STRUCTURED.encode() else BINARY
        assert mode == _content_type(document, message), key
        checked += 1
    assert checked == 2 * len(EventType)


def test_output_examples_pass_the_service_output_check(document: dict[str, Any]) -> None:
    checked = 0
    for key, message, example in _examples(document):
        if message["name"] not in set(OutputType):
            continue
        payload, headers = example["payload"], example["headers"]
        validate_output(payload)
        assert payload["type"] == message["name"], key
        schema_file = SCHEMA_DIR / f"{message['name']}.json"
        assert payload["dataschema"] == json.loads(schema_file.read_text())["$id"], key
        for attribute in ("id", "type", "source", "subject"):
            assert headers[f"ce_{attribute}"] == payload[attribute], key
        assert payload["source"] == DEFAULTS.service_source, key
        checked += 1
    assert checked == len(OutputType)


def test_the_dead_letter_example_has_a_known_error_class(document: dict[str, Any]) -> None:
    (message,) = _messages(document, _channel_of(document, DEFAULTS.topic_dlq))
    for example in message["examples"]:
        assert example["headers"]["error.class"] in DLQ_ERROR_CLASSES
        assert example["headers"]["original.topic"] in DEFAULTS.input_topics
