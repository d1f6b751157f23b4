"""OpenTelemetry spans of the consumer and the outbox relay, configured from `OTEL_*`.

Off unless `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`): then an
SDK TracerProvider is installed with the standard variables (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_*`, `OTEL_TRACES_SAMPLER`,
`OTEL_BSP_*`), read by the SDK itself. Off, nothing is created per record: each
hook returns after one test of `enabled`, per batch.

One trace runs from the producer of an input record to the records it caused:

- the consumer starts one span per input record (`gocluster apply <type>`, kind
  CONSUMER), whose parent is the record's W3C trace context: the event's
  `traceparent` attribute (structured mode, or `ce_traceparent` in binary mode),
  else the record's `traceparent` header;
- the engine stamps that span's context, as data (`Inbound.trace`), on the
  outputs the record's application decides, as the CloudEvents distributed-tracing
  extension attribute `traceparent`: it is stored with the event in the outbox, so
  it survives a crash;
- the relay starts one span per published output (`gocluster publish <type>`,
  kind PRODUCER) whose parent is that context, and writes its context as the
  record's `traceparent` header. Outputs of the timer loop carry no context: their
  publish span starts a trace of its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from workflows.engine import BatchResult, Inbound

__all__ = ["TRACEPARENT", "Applying", "Tracing", "TracingError", "from_environment"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_PROPAGATOR = TraceContextTextMapPropagator()
_EXPORTERS = frozenset({"otlp", "console", "none"})


class TracingError(ValueError):
    """An `OTEL_*` variable this service cannot honour; the message names it."""


@dataclass
class Applying:
    """The apply spans of one batch, ended with the batch's result."""

    items: list[Inbound]
    spans: list[tuple[Span, tuple[str, int, int]]] = field(default_factory=list)

    def end(self, result: BatchResult | None, error: str | None = None) -> None:
        """End every span: with its record's outcome, or with `error` (batch retried)."""
        if not self.spans:
            return
        outcomes: dict[tuple[Any, Any, Any], tuple[str, str | None]] = {}
        for o in result.outcomes if result else ():
            transition = f"{o.from_state or 'null'}->{o.to_state}" if o.to_state else None
            outcomes[_where(o.origin)] = (o.outcome, transition)
        rejected = {_where(r.origin): r for r in (result.rejections if result else ())}
        for span, where in self.spans:
            if error is not None:
                span.set_attribute("gocluster.outcome", "retried")
                span.set_status(Status(StatusCode.ERROR, error))
            elif (rejection := rejected.get(where)) is not None:
                span.set_attribute("gocluster.outcome", "rejected")
                span.set_attribute("error.type", rejection.error_class.value)
                span.set_status(Status(StatusCode.ERROR, rejection.message[:300]))
            elif where in outcomes:
                outcome, transition = outcomes[where]
                span.set_attribute("gocluster.outcome", outcome)
                if transition is not None:
                    span.set_attribute("gocluster.transition", transition)
            span.end()


class Tracing:
    """The spans of `gocluster run`; `Tracing()` is off."""

    def __init__(self, tracer: Tracer | None = None, provider: Any = None) -> None:
        self.tracer = tracer
        self.provider = provider  # the SDK provider to flush at shutdown, when we made it

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()

    # -- the consumer ----------------------------------------------------------------------

    def applying(self, records: Sequence[Any], items: Sequence[Inbound]) -> Applying:
        """Start one apply span per record; the items come back carrying its context."""
        if self.tracer is None:
            return Applying(list(items))
        traced: list[Inbound] = []
        applying = Applying(traced)
        for record, item in zip(records, items, strict=True):
            span = self.tracer.start_span(
                f"gocluster apply {item.event.type.value}" if item.event else "gocluster apply",
                context=_parent(record, item),
                kind=SpanKind.CONSUMER,
                attributes=_apply_attributes(record, item),
            )
            applying.spans.append((span, (record.topic, record.partition, record.offset)))
            traced.append(replace(item, trace=_traceparent(trace.set_span_in_context(span))))
        return applying

    # -- the relay -------------------------------------------------------------------------

    def publishing(
        self, event: Mapping[str, Any], topic: str, headers: list[tuple[str, bytes]]
    ) -> Span | None:
        """Start the publish span of an output record and add its `traceparent` header.

        Off, the event's own `traceparent` (written while tracing was on) is passed on.
        """
        stamped = event.get(TRACEPARENT)
        if self.tracer is None:
            if isinstance(stamped, str):
                headers.append((TRACEPARENT, stamped.encode("ascii", "replace")))
            return None
        parent = _context({TRACEPARENT: stamped}) if isinstance(stamped, str) else None
        span = self.tracer.start_span(
            f"gocluster publish {event.get('type')}",
            context=parent or Context(),  # no context: a trace of its own (timer outputs)
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": topic,
                "cloudevents.event_id": str(event.get("id")),
                "cloudevents.event_type": str(event.get("type")),
                "cloudevents.event_source": str(event.get("source")),
                "cloudevents.event_subject": str(event.get("subject")),
            },
        )
        if (own := _traceparent(trace.set_span_in_context(span))) is not None:
            headers.append((TRACEPARENT, own.encode("ascii")))
        return span

    @staticmethod
    def published(spans: Sequence[Span | None], futures: Sequence[Any]) -> None:
        """End the publish spans of a round: acknowledged, or failed."""
        for i, span in enumerate(spans):
            if span is None:
                continue
            future = futures[i] if i < len(futures) else None
            if future is not None and future.is_done and not future.failed():
                metadata = getattr(future, "value", None)  # kafka-python's RecordMetadata
                if metadata is not None:
                    partition = str(metadata.partition)
                    span.set_attribute("messaging.destination.partition.id", partition)
                    span.set_attribute("messaging.kafka.offset", metadata.offset)
            else:
                error = getattr(future, "exception", None) if future is not None else None
                span.set_status(Status(StatusCode.ERROR, repr(error) if error else "not sent"))
            span.end()


def from_environment() -> Tracing:
    """The tracing `OTEL_*` asks for; off when no exporter is named (or the SDK is disabled).

    The OpenTelemetry default exporter is `otlp`; here it is `none`, so that a
    service nobody configured for tracing sends nothing anywhere.
    """
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Tracing()
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n and n != "none"]
    if unknown := sorted(set(names) - _EXPORTERS):
        raise TracingError(
            f"OTEL_TRACES_EXPORTER: unsupported exporter(s) {', '.join(unknown)}; "
            "use otlp, console or none"
        )
    if not names:
        return Tracing()
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "gocluster"}))
    provider = TracerProvider(resource=resource)
    for name in names:
        exporter = _otlp_exporter(env) if name == "otlp" else ConsoleSpanExporter(out=sys.stderr)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return Tracing(provider.get_tracer("gocluster"), provider)


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(variable, "").strip()
        if protocol and protocol != "http/protobuf":
            raise TracingError(f"{variable}: {protocol!r} is not supported; use http/protobuf")
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise TracingError(
            "OTEL_TRACES_EXPORTER: otlp needs the OTLP exporter: pip install 'gocluster[otlp]'"
        ) from None
    return OTLPSpanExporter()


# -- trace context ------------------------------------------------------------------------


def _parent(record: Any, item: Inbound) -> Context | None:
    """The producer's context: the event's `traceparent` attribute, else the header."""
    raw = item.event.raw if item.event is not None else {}
    if isinstance(attribute := raw.get(TRACEPARENT), str):
        state = raw.get(TRACESTATE)
        found = _context(
            {TRACEPARENT: attribute} | ({TRACESTATE: state} if isinstance(state, str) else {})
        )
        if found is not None:
            return found
    carrier = {
        name.lower(): value.decode("ascii", "replace")
        for name, value in record.headers or ()
        if name.lower() in (TRACEPARENT, TRACESTATE) and value
    }
    return _context(carrier) if TRACEPARENT in carrier else None


def _context(carrier: Mapping[str, str]) -> Context | None:
    """The W3C context in `carrier`, or None where it is absent or malformed."""
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def _traceparent(context: Context) -> str | None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier.get(TRACEPARENT)


def _apply_attributes(record: Any, item: Inbound) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
    }
    if item.event is not None:
        attributes["cloudevents.event_id"] = item.event.id
        attributes["cloudevents.event_type"] = item.event.type.value
        attributes["cloudevents.event_source"] = item.event.source
        attributes["cloudevents.event_subject"] = item.event.subject
    return attributes


def _where(origin: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return (origin.get("topic"), origin.get("partition"), origin.get("offset"))
