"""Latency from produce to output record at a steady input rate, service vs a bare pass-through.

For each run and configuration, on a fresh topic set and a fresh database (on
Apache Kafka, started by scripts/apache-kafka):

* the system under test runs as its own process: ``gocluster run --clock event``
  on SQLite or PostgreSQL, or the baseline, a bare kafka-python pass-through
  (same consumer and producer settings as the service: poll, send each record
  unchanged to an output topic, flush, commit offsets);
* a receiver thread reads every output topic from the beginning (assigned
  partitions, no group) and notes when the first output of each input arrives:
  the service's outputs carry the input id as ``data.cause_id``, the
  pass-through's are the input itself;
* after a warm-up (the group join and first batches), a paced producer sends
  the workload at ``--rate`` events/s on a monotonic schedule
  (``start + i / rate``), noting each send time.

Latency = receive time - send time, same process, same monotonic clock. Only
inputs that cause an output are matched: for the service those are
submissions (membership.changed, always), assessments (membership.changed) and
most completed interviews (label.awarded); schedules and cancellations only
write history.

    python bench/latency.py                            # 200 events/s, 30 s, 3 runs, all configs
    python bench/latency.py --duration 10 --runs 1 --backend sqlite
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/latency.py` from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from sqlalchemy import select

from bench.harness import (
    BACKENDS,
    RESULTS,
    TopicSet,
    bench_broker,
    cpu_seconds,
    database,
    machine,
    percentile,
    producer,
    scratch_dir,
    spread,
    topic_set,
)
from consumers.config import Settings
from tests.workload import Record, to_record, workload
from workflows.store.database import create_db_engine
from workflows.store.tables import inbox, outbox

PASSTHROUGH = "passthrough"
WARMUP_EVENTS = 20
WARMUP_TIMEOUT_S = 90.0
QUIET_S = 3.0  # the drain ends when nothing new arrived for this long
DRAIN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
CHILD_LIFETIME_S = 3600.0  # a pass-through child never outlives this, whatever happens


# -- the output side -----------------------------------------------------------


def _cause(record: Any) -> str | None:
    """The input event id an output record answers: the service's outputs name it as
    `data.cause_id` (structured or binary mode); the pass-through copies the input,
    whose id is in the `ce_id` header (binary) or the envelope (structured)."""
    try:
        event = json.loads(record.value)
    except (TypeError, ValueError):
        event = None
    if isinstance(event, dict):
        data = event.get("data") if "specversion" in event else event
        if isinstance(data, dict) and "cause_id" in data:
            return str(data["cause_id"])
    for name, value in record.headers or ():
        if name == "ce_id":
            return str(value.decode())
    if isinstance(event, dict) and "id" in event:
        return str(event["id"])
    return None


class Receiver(threading.Thread):
    """Reads every output topic from the beginning; first arrival time per cause id."""

    def __init__(self, topics: TopicSet) -> None:
        super().__init__(name="receiver", daemon=True)
        self.topics = topics
        self.first: dict[str, float] = {}
        self.records = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _run(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.topics.bootstrap,
            client_id="bench-receiver",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,  # the receiver must not add latency of its own
        )
        try:
            parts = [
                TopicPartition(topic, p)
                for topic in self.topics.outputs.values()
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            while not self.stop.is_set():
                for batch in consumer.poll(timeout_ms=50).values():
                    now = time.perf_counter()
                    for record in batch:
                        self.records += 1
                        cause = _cause(record)
                        if cause is not None and cause not in self.first:
                            self.first[cause] = now
        finally:
            consumer.close()


# -- the system under test -----------------------------------------------------


def _gocluster() -> list[str]:
    script = Path(sys.executable).with_name("gocluster")
    if script.exists():
        return [str(script)]
    found = shutil.which("gocluster")
    if found is None:
        raise RuntimeError("no `gocluster` command: install the project (pip install -e .)")
    return [found]


@contextlib.contextmanager
def system_under_test(
    config: str, topics: TopicSet, url: str, scratch: Path, fetch_wait_ms: int
) -> Iterator[subprocess.Popen[bytes]]:
    settings = topics.settings(url, config, kafka_fetch_max_wait_ms=fetch_wait_ms)
    env = (
        os.environ
        | topics.env(settings)
        | {"GOCLUSTER_KAFKA_FETCH_MAX_WAIT_MS": str(fetch_wait_ms)}
    )
    if config == PASSTHROUGH:
        command = [sys.executable, str(Path(__file__).resolve()), "--passthrough-child"]
    else:
        command = [*_gocluster(), "run", "--clock", "event"]
    log_path = scratch / f"{config}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            yield process
        except RuntimeError as exc:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{config}: {exc}; its log ends:\n{tail}") from exc
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
    if process.returncode not in (0, -signal.SIGTERM):
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{config} exited with {process.returncode}:\n{tail}")


# -- one measurement -----------------------------------------------------------


def _send(client: KafkaProducer, topics: TopicSet, record: Record) -> None:
    client.send(topics.topic(record), key=record.key, value=record.value, headers=record.headers)


def _warm_up(
    client: KafkaProducer, topics: TopicSet, receiver: Receiver, process: subprocess.Popen[bytes]
) -> float:
    """Send a few submissions of clusters outside the workload and wait for their outputs."""
    began = time.perf_counter()
    ids = []
    for n in range(WARMUP_EVENTS):
        event = {
            "specversion": "1.0",
            "id": f"warmup-{topics.suffix}-{n}",
            "source": "/go-cluster/portal",
            "type": "gocluster.application.submitted",
            "subject": f"warmup-{n}",
            "time": "2015-06-01T10:00:00+02:00",
            "datacontenttype": "application/json",
            "data": {
                "cluster_id": f"warmup-{n}",
                "cluster_name": f"Warm-up {n}",
                "organisation": "Bench e.V.",
                "federal_state": "DE-BE",
            },
        }
        _send(client, topics, to_record(event))
        ids.append(event["id"])
        time.sleep(0.05)
    client.flush(timeout=30)
    deadline = began + WARMUP_TIMEOUT_S
    while not all(i in receiver.first for i in ids):
        if time.perf_counter() > deadline or process.poll() is not None or receiver.error:
            raise RuntimeError("the system under test did not answer the warm-up")
        time.sleep(0.05)
    return time.perf_counter() - began


def measure_one(
    config: str,
    topics: TopicSet,
    url: str,
    records: list[Record],
    rate: float,
    scratch: Path,
    fetch_wait_ms: int,
) -> dict[str, Any]:
    receiver = Receiver(topics)
    receiver.start()
    client = producer(topics.bootstrap, linger_ms=0)
    sent: dict[str, float] = {}
    try:
        with system_under_test(config, topics, url, scratch, fetch_wait_ms) as process:
            warm_up_s = _warm_up(client, topics, receiver, process)
            cpu_before = cpu_seconds(Path(f"/proc/{process.pid}/stat"))
            behind = 0.0
            started = time.perf_counter()
            for i, record in enumerate(records):
                due = started + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:
                    behind = max(behind, -delay)
                sent[record.event_id] = time.perf_counter()
                _send(client, topics, record)
            last_send = time.perf_counter()
            client.flush(timeout=30)
            _drain(receiver, process)
            window = time.perf_counter() - started
            cpu_share = (cpu_seconds(Path(f"/proc/{process.pid}/stat")) - cpu_before) / window
    finally:
        client.close(timeout=10)
        receiver.stop.set()
        receiver.join(timeout=10)
    if receiver.error is not None:
        raise RuntimeError(f"receiver failed: {receiver.error!r}")
    stages = {} if config == PASSTHROUGH else _stages(url, sent, receiver.first)
    return (
        _latencies(records, sent, receiver.first)
        | stages
        | {
            "warm_up_s": round(warm_up_s, 2),
            "sent_per_s": round(len(records) / (last_send - started), 1),
            "producer_max_behind_ms": round(behind * 1000, 1),
            "system_cpu_share": round(cpu_share, 3),
            "output_records": receiver.records,
        }
    )


def _drain(receiver: Receiver, process: subprocess.Popen[bytes]) -> None:
    deadline = time.perf_counter() + DRAIN_TIMEOUT_S
    seen, quiet_since = len(receiver.first), time.perf_counter()
    while time.perf_counter() < deadline and process.poll() is None:
        time.sleep(0.1)
        if len(receiver.first) != seen:
            seen, quiet_since = len(receiver.first), time.perf_counter()
        elif time.perf_counter() - quiet_since >= QUIET_S:
            return


def _latencies(
    records: list[Record], sent: dict[str, float], first: dict[str, float]
) -> dict[str, Any]:
    def stats(ids: list[str]) -> dict[str, Any]:
        values = sorted((first[i] - sent[i]) * 1000 for i in ids if i in first)
        if not values:
            return {"matched": 0}
        return {
            "matched": len(values),
            "p50_ms": round(percentile(values, 50), 1),
            "p90_ms": round(percentile(values, 90), 1),
            "p99_ms": round(percentile(values, 99), 1),
            "max_ms": round(values[-1], 1),
        }

    submissions = [r.event_id for r in records if r.event_type.endswith(".submitted")]
    return {
        "produced": len(records),
        "all": stats([r.event_id for r in records]),
        "submissions": stats(submissions),
        "submissions_unanswered": sum(1 for i in submissions if i not in first),
    }


def _stages(url: str, sent: dict[str, float], first: dict[str, float]) -> dict[str, Any]:
    """Where the service's latency goes, from the timestamps it stores (median ms).

    send -> the applying transaction began (inbox.received_at) -> the output's
    outbox row was marked sent (outbox.sent_at, after the broker acknowledged the
    relay's whole batch) -> the receiver had it (negative when the receiver was
    faster than the relay's marking)."""
    wall = time.time() - time.perf_counter()  # perf_counter -> epoch seconds, this process
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            began = {
                e: at.timestamp()
                for e, at in conn.execute(select(inbox.c.event_id, inbox.c.received_at))
            }
            acked: dict[str, float] = {}
            query = select(outbox.c.payload, outbox.c.sent_at).where(outbox.c.stream != "dlq")
            for payload, sent_at in conn.execute(query):
                cause = payload.get("data", {}).get("cause_id")
                if cause in sent and sent_at is not None:
                    acked[cause] = min(acked.get(cause, math.inf), sent_at.timestamp())
    finally:
        engine.dispose()
    ids = [i for i in acked if i in first and i in began]
    if not ids:
        return {}

    def median_ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 1)

    return {
        "stages_median_ms": {
            "send_to_transaction": median_ms([began[i] - (sent[i] + wall) for i in ids]),
            "transaction_to_marked_sent": median_ms([acked[i] - began[i] for i in ids]),
            "marked_sent_to_received": median_ms([(first[i] + wall) - acked[i] for i in ids]),
        }
    }


# -- the pass-through baseline (runs as a child process) -----------------------


def passthrough_child() -> None:
    """Consume the inputs, send each record unchanged to the membership topic, commit."""
    settings = Settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    consumer = KafkaConsumer(**settings.consumer_config())
    client = KafkaProducer(**settings.producer_config())
    consumer.subscribe(list(settings.input_topics))
    ends = time.monotonic() + CHILD_LIFETIME_S
    try:
        while not stop.is_set() and time.monotonic() < ends:
            polled = consumer.poll(timeout_ms=500)
            if not polled:
                continue
            for batch in polled.values():
                for r in batch:
                    client.send(
                        settings.topic_membership, key=r.key, value=r.value, headers=r.headers
                    )
            client.flush(timeout=30)
            consumer.commit(
                {tp: OffsetAndMetadata(b[-1].offset + 1, None, -1) for tp, b in polled.items()}
            )
    finally:
        client.close(timeout=5)
        consumer.close(autocommit=False)


# -- runs and report -----------------------------------------------------------


def measure(args: argparse.Namespace, records: list[Record]) -> list[dict[str, Any]]:
    configs = [PASSTHROUGH, *args.backends]
    results = []
    with scratch_dir() as scratch, bench_broker(scratch) as broker:
        for run in range(1, args.runs + 1):
            shift = (run - 1) % len(configs)  # rotate the order: drift hits every config
            for config in configs[shift:] + configs[:shift]:
                with contextlib.ExitStack() as stack:
                    topics = stack.enter_context(topic_set(broker.bootstrap))
                    url = (
                        "sqlite:///unused.db"
                        if config == PASSTHROUGH
                        else stack.enter_context(database(config, scratch))
                    )
                    outcome = measure_one(
                        config, topics, url, records, args.rate, scratch, args.fetch_max_wait_ms
                    )
                row = {"config": config, "run": run} | outcome
                results.append(row)
                every = outcome["all"]
                print(
                    f"  run {run} {config:<12} p50 {every.get('p50_ms', math.nan):>7.1f} ms  "
                    f"p99 {every.get('p99_ms', math.nan):>7.1f} ms  "
                    f"({every['matched']} matched of {outcome['produced']}, "
                    f"sent {outcome['sent_per_s']:.0f}/s, "
                    f"CPU {outcome['system_cpu_share']:.0%})"
                    + (
                        f" stages {outcome['stages_median_ms']}"
                        if "stages_median_ms" in outcome
                        else ""
                    ),
                    flush=True,
                )
    return results


def summarise(results: list[dict[str, Any]], configs: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    base = {r["run"]: r for r in results if r["config"] == PASSTHROUGH}
    for config in configs:
        mine = [r for r in results if r["config"] == config]
        entry: dict[str, Any] = {}
        for key in ("p50_ms", "p90_ms", "p99_ms"):
            entry[key] = spread(r["all"].get(key) for r in mine)
            entry[f"submissions_{key}"] = spread(r["submissions"].get(key) for r in mine)
        entry["system_cpu_share"] = spread((r["system_cpu_share"] for r in mine), digits=2)
        stages = [r["stages_median_ms"] for r in mine if "stages_median_ms" in r]
        if stages:
            entry["stages_median_ms"] = {
                name: spread(s[name] for s in stages) for name in stages[0]
            }
        if config != PASSTHROUGH:
            for key in ("p50_ms", "p99_ms"):
                entry[f"ratio_{key}"] = spread(
                    (
                        r["all"][key] / base[r["run"]]["all"][key]
                        for r in mine
                        if key in r["all"] and base[r["run"]]["all"].get(key)
                    ),
                    digits=2,
                )
        summary[config] = entry
    return summary


def print_table(summary: dict[str, Any]) -> None:
    def cell(s: dict[str, float]) -> str:
        return f"{s['median']:>7.1f} [{s['min']:.0f}-{s['max']:.0f}]" if s else "-"

    print()
    print("produce -> output latency in ms, median [min-max] over runs")
    print(f"{'config':<12} {'p50':>18} {'p90':>18} {'p99':>18} {'x p50':>7} {'x p99':>7}")
    for config, s in summary.items():
        ratio50 = s.get("ratio_p50_ms", {}).get("median")
        ratio99 = s.get("ratio_p99_ms", {}).get("median")
        print(
            f"{config:<12} {cell(s['p50_ms']):>18} {cell(s['p90_ms']):>18} "
            f"{cell(s['p99_ms']):>18} "
            f"{'' if ratio50 is None else f'{ratio50:.1f}':>7} "
            f"{'' if ratio99 is None else f'{ratio99:.1f}':>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events/s")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of paced input")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=500,
        help="fetch_max_wait_ms of the service's and the pass-through's consumers (the service "
        "default; Apache Kafka answers a fetch as soon as records arrive, so it bounds idle polls)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latency.json")
    parser.add_argument("--passthrough-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.passthrough_child:
        passthrough_child()
        return
    if args.rate <= 0 or args.duration <= 0 or args.runs < 1:
        parser.error("--rate, --duration and --runs must be positive")
    args.backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    events = max(20, round(args.rate * args.duration))
    clusters = max(2, events // 10)
    records = workload(clusters, events, args.seed)
    print(
        f"workload: {events} events over {clusters} clusters at {args.rate:g} events/s "
        f"({events / args.rate:.0f} s per run)"
    )
    before = machine()
    started = datetime.now(UTC)
    results = measure(args, records)
    summary = summarise(results, [PASSTHROUGH, *args.backends])
    print_table(summary)
    document = {
        "benchmark": "latency",
        "started": started.isoformat(timespec="seconds"),
        "workload": {
            "events": events,
            "clusters": clusters,
            "rate_per_s": args.rate,
            "seed": args.seed,
            "fetch_max_wait_ms": args.fetch_max_wait_ms,
        },
        "machine": before,
        "load_average_1m_after": machine()["load_average_1m"],
        "summary": summary,
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
