"""What tracing costs per record on the consumer's and the relay's hot paths.

The consumer decodes a batch of records and hands it to the engine; with
tracing, `Tracing.applying` wraps the batch and `Applying.end` closes it. The
relay builds each output record; with tracing, `Tracing.publishing` adds a span
and a header. This times those steps alone (no broker, no database), per
record, in three configurations:

- before: decoding alone (the consumer path as it was without tracing hooks);
- off: the hooks of `Tracing()` (what runs when no OTEL_TRACES_EXPORTER is set);
- on: an SDK TracerProvider that samples every span and exports nothing.

    .venv/bin/python bench/tracing_overhead.py [--records 500] [--rounds 200]

Numbers move with the machine's load: compare the columns of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from consumers.event_consumer import decode
from consumers.records import output_headers
from consumers.tracing import Tracing
from workflows.unit_of_work import BatchResult

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def records(count: int) -> list[Any]:
    made = []
    for i in range(count):
        event = {
            "specversion": "1.0",
            "id": f"portal-{i}",
            "source": "/go-cluster/portal",
            "type": "gocluster.application.submitted",
            "subject": f"cluster-{i}",
            "time": "2025-05-12T09:30:00+02:00",
            "data": {
                "cluster_id": f"cluster-{i}",
                "cluster_name": "Bench",
                "organisation": "Bench e.V.",
                "federal_state": "DE-BY",
            },
        }
        headers = [("content-type", b"application/cloudevents+json"), ("traceparent", TRACEPARENT)]
        made.append(
            SimpleNamespace(
                topic="gocluster.applications",
                partition=0,
                offset=i,
                key=f"cluster-{i}".encode(),
                value=json.dumps(event).encode(),
                headers=headers,
            )
        )
    return made


def per_record_us(step: Callable[[], None], count: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    batch = records(args.records)
    empty = BatchResult()
    provider = TracerProvider()  # no span processor: spans are made and dropped
    tracings = {"off": Tracing(), "on": Tracing(provider.get_tracer("bench"), provider)}
    output = {
        "id": "x",
        "type": "gocluster.membership.changed",
        "source": "/gocluster/membership",
        "subject": "cluster-1",
    }

    def consume(tracing: Tracing | None) -> Callable[[], None]:
        def step() -> None:
            items = [decode(r, 1 << 20) for r in batch]
            if tracing is not None:
                tracing.applying(batch, items).end(empty)

        return step

    def publish(tracing: Tracing | None) -> Callable[[], None]:
        def step() -> None:
            for _ in range(args.records):
                headers = output_headers(output)
                if tracing is not None:
                    span = tracing.publishing(output, "gocluster.membership", headers)
                    tracing.published([span], [])

        return step

    result = {
        "records": args.records,
        "rounds": args.rounds,
        "consumer_us_per_record": {
            "before": per_record_us(consume(None), args.records, args.rounds),
            **{
                k: per_record_us(consume(t), args.records, args.rounds) for k, t in tracings.items()
            },
        },
        "relay_us_per_record": {
            "before": per_record_us(publish(None), args.records, args.rounds),
            **{
                k: per_record_us(publish(t), args.records, args.rounds) for k, t in tracings.items()
            },
        },
    }
    provider.shutdown()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
