"""OpenTelemetry: one trace from an input record through its application to its outputs.

Spans go to the SDK's in-memory exporter, so the service runs in this process
(consumers.service.Service, as tests/test_loop_policy.py builds it) against
Apache Kafka.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from sqlalchemy import Engine

from consumers.bootstrap import build
from consumers.event_consumer import decode
from consumers.outbox_relay import OutboxRelay
from consumers.service import Service
from consumers.tracing import Tracing, TracingError, from_environment
from schemas.validate import validate_output
from tests.kafka_fixtures import KafkaTopics, produce, read_all
from tests.test_outbox_relay import NOW, TOPICS, FakeProducer
from workflows.dates import FixedClock
from workflows.store import messages

CLUSTER = "cluster-traced"
UPSTREAM = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider.get_tracer("test"), provider), exporter
    provider.shutdown()


def submitted(event_id: str = "portal-t-1", **extensions: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/go-cluster/portal",
        "type": "gocluster.application.submitted",
        "subject": CLUSTER,
        "time": "2025-05-12T09:30:00+02:00",
        "datacontenttype": "application/json",
        **extensions,
        "data": {
            "cluster_id": CLUSTER,
            "cluster_name": "Traced",
            "organisation": "Traced e.V.",
            "federal_state": "DE-BY",
        },
    }


def record(value: dict[str, Any] | bytes, headers: list[tuple[str, bytes]]) -> Any:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return SimpleNamespace(
        topic="in", partition=0, offset=5, key=CLUSTER.encode(), value=raw, headers=headers
    )


def _binary(event: dict[str, Any], extra: list[tuple[str, bytes]]) -> Any:
    headers = [(f"ce_{k}", str(v).encode()) for k, v in event.items() if k not in ("data",)]
    headers = [(n, v) for n, v in headers if n != "ce_datacontenttype"]
    return record(
        json.dumps(event["data"]).encode(),
        [("content-type", b"application/json"), *headers, *extra],
    )


def _parent_trace(tracing: Tracing, exporter: InMemorySpanExporter, rec: Any) -> str | None:
    item = decode(rec, 1 << 20)
    applying = tracing.applying([rec], [item])
    applying.end(None, error="test")
    (span,) = exporter.get_finished_spans()
    exporter.clear()
    (traced,) = applying.items
    assert traced.trace is not None
    assert traced.trace.split("-")[1] == format_trace_id(span.context.trace_id)
    return format_span_id(span.parent.span_id) if span.parent else None


def test_the_apply_span_continues_the_trace_of_the_header_or_the_event_attribute(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    upstream_span = UPSTREAM.split("-")[2]
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    structured = [("content-type", b"application/cloudevents+json")]
    # binary mode: the traceparent header
    assert (
        _parent_trace(tracing, exporter, _binary(submitted(), [("traceparent", UPSTREAM.encode())]))
        == upstream_span
    )
    # structured mode: the extension attribute, before a header of the transport
    with_attribute = record(
        submitted(traceparent=UPSTREAM), [*structured, ("traceparent", other.encode())]
    )
    assert _parent_trace(tracing, exporter, with_attribute) == upstream_span
    # structured mode without the attribute: the header
    assert (
        _parent_trace(
            tracing,
            exporter,
            record(submitted(), [*structured, ("traceparent", UPSTREAM.encode())]),
        )
        == upstream_span
    )
    # a malformed context is no parent: a trace of its own, and the record is still applied
    assert (
        _parent_trace(tracing, exporter, record(submitted(traceparent="00-abc-01"), structured))
        is None
    )
    assert (
        _parent_trace(tracing, exporter, record(b"{not json", [("traceparent", b"garbage")]))
        is None
    )


def test_tracing_off_leaves_the_batch_as_it_is() -> None:
    rec = record(submitted(traceparent=UPSTREAM), [])
    items = [decode(rec, 1 << 20)]
    applying = Tracing().applying([rec], items)
    assert applying.items == items
    assert applying.items[0].trace is None
    applying.end(None)


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_off_unless_an_exporter_is_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], enabled: bool
) -> None:
    _environment(monkeypatch, env)
    assert from_environment().enabled is enabled


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_an_unsupported_otel_setting_is_one_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    _environment(monkeypatch, env)
    with pytest.raises(TracingError, match=f"^{named}: "):
        from_environment()


def _environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_the_otlp_exporter_is_configured_from_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _environment(monkeypatch, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "gc-test"})
    tracing = from_environment()
    try:
        assert tracing.enabled
        assert tracing.provider.resource.attributes["service.name"] == "gc-test"
    finally:
        tracing.shutdown()


def _output(event_id: str, **extensions: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/gocluster/membership",
        "type": "gocluster.membership.changed",
        "subject": CLUSTER,
        "time": "2025-05-12T09:30:00+02:00",
        "datacontenttype": "application/json",
        "dataschema": "https://gocluster.example/schemas/gocluster.membership.changed.json",
        **extensions,
        "data": {
            "cluster_id": CLUSTER,
            "from": None,
            "to": "applied",
            "cause_id": "t",
            "cause_source": "/p",
        },
    }


def test_the_relay_continues_the_trace_of_an_output_and_starts_one_for_a_timer_output(
    db_engine: Engine, spans: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = spans
    rows = [_output("caused", traceparent=UPSTREAM), _output("timer")]
    with db_engine.begin() as conn:
        messages.enqueue(
            conn,
            [
                {
                    "event_id": r["id"],
                    "cluster_id": CLUSTER,
                    "stream": "membership",
                    "payload": r,
                    "created_at": NOW,
                    "sent_at": None,
                }
                for r in rows
            ],
        )
    producer = FakeProducer()
    relay = OutboxRelay(
        db_engine, lambda: producer, TOPICS, FixedClock(NOW), threading.Event(), tracing=tracing
    )  # type: ignore[arg-type,return-value]
    assert relay.drain() == 2

    caused, timer = exporter.get_finished_spans()
    assert caused.kind == timer.kind == SpanKind.PRODUCER
    assert caused.parent is not None
    assert format_span_id(caused.parent.span_id) == UPSTREAM.split("-")[2]
    assert format_trace_id(caused.context.trace_id) == UPSTREAM.split("-")[1]
    assert timer.parent is None
    for span, (_, _, value, headers) in zip((caused, timer), producer.sent, strict=True):
        header = dict(headers)["traceparent"].decode()
        assert header.split("-")[1:3] == [
            format_trace_id(span.context.trace_id),
            format_span_id(span.context.span_id),
        ]
        validate_output(json.loads(value or b""))


def _chain(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context.trace_id == trace_id]


@pytest.mark.kafka
def test_one_trace_runs_from_an_input_record_through_apply_to_its_output_record(
    kafka_topics: KafkaTopics, tmp_path: Path, spans: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = spans
    upstream = tracing.tracer.start_span("portal send", kind=SpanKind.PRODUCER)  # type: ignore[union-attr]
    trace_id = upstream.get_span_context().trace_id
    traceparent = (
        f"00-{format_trace_id(trace_id)}-{format_span_id(upstream.get_span_context().span_id)}-01"
    )
    upstream.end()

    app = build(
        kafka_topics.settings(database_url=f"sqlite:///{tmp_path / 'traced.db'}"), tracing=tracing
    )
    stop = threading.Event()
    service = Service(app, stop, clock_mode="event", loops=frozenset({"consumer", "relay"}))
    service.start()
    try:
        produce(
            kafka_topics.bootstrap,
            kafka_topics.applications,
            [
                (
                    CLUSTER.encode(),
                    json.dumps(submitted()).encode(),
                    [
                        ("content-type", b"application/cloudevents+json"),
                        ("traceparent", traceparent.encode()),
                    ],
                )
            ],
        )
        (output,) = read_all(kafka_topics.bootstrap, kafka_topics.membership, 1, timeout_s=90)
    finally:
        stop.set()
        service.join()
        app.close()

    header = dict(output.headers)["traceparent"].decode()
    assert header.split("-")[1] == format_trace_id(trace_id)
    chain = _chain(list(exporter.get_finished_spans()), trace_id)
    by_name = {s.name: s for s in chain}
    assert set(by_name) == {
        "portal send",
        "gocluster apply gocluster.application.submitted",
        "gocluster publish gocluster.membership.changed",
    }
    send, apply, publish = (
        by_name[n] for n in ("portal send", *sorted(set(by_name) - {"portal send"}))
    )
    assert apply.kind == SpanKind.CONSUMER
    assert publish.kind == SpanKind.PRODUCER
    assert apply.parent is not None
    assert apply.parent.span_id == send.context.span_id
    assert publish.parent is not None
    assert publish.parent.span_id == apply.context.span_id
    assert header.split("-")[2] == format_span_id(publish.context.span_id)
    attributes = dict(apply.attributes or {})
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.destination.name"] == kafka_topics.applications
    assert attributes["cloudevents.event_id"] == "portal-t-1"
    assert attributes["gocluster.outcome"] == "applied"
    event = json.loads(output.value)
    validate_output(event)
    assert event["traceparent"].split("-")[1:3] == [
        format_trace_id(trace_id),
        format_span_id(apply.context.span_id),
    ]
