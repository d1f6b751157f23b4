"""End-to-end throughput: input topics -> the service -> the database -> output topics.

For each backend and run: a fresh topic set on the embedded broker (6 input
partitions), every workload record produced up front, then two consumers of
those SAME records, each with its own consumer group and its own fresh database,
in alternating order:

* service:  the `gocluster run --clock event` threads in this process
            (EventConsumer + OutboxRelay + TimerLoop), timed from start until
            every input record is in the inbox (nothing left parked), and until
            every output is published (no unsent outbox row);
* baseline: a bare kafka-python loop: poll, ``json.loads`` each value,
            executemany INSERT in 500-row batches into a plain table, commit
            offsets; timed from start until every record is inserted.

Both start with a group join (~1 s with the bench timings), which is in the
end-to-end figure; ``steady`` counts from the first committed batch.

    python bench/throughput.py                       # 20,000 events, 3 runs, both backends
    python bench/throughput.py --events 2000 --clusters 200 --runs 1 --backend sqlite
    python bench/throughput.py --profile sample --backend sqlite   # where the time goes
    python bench/throughput.py --profile cprofile --backend sqlite # call counts, pstats file
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import pstats
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/throughput.py` from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, Text, func, select

from bench.harness import (
    BACKENDS,
    RESULTS,
    TopicSet,
    bench_broker,
    cpu_seconds,
    database,
    machine,
    produce_all,
    quiet_service_logs,
    scratch_dir,
    spread,
    topic_set,
)
from consumers.bootstrap import build
from consumers.event_consumer import EventConsumer
from consumers.service import Service, make_relay
from tests.workload import Record, workload
from workflows.store.database import create_db_engine
from workflows.store.tables import inbox, outbox, parked

ROOT = Path(__file__).resolve().parent.parent
WATCH_INTERVAL_S = 0.1
BATCH_ROWS = 500

baseline_table = Table(
    "bench_baseline",
    MetaData(),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", Integer, nullable=False),
    Column("cluster_id", String(64)),
    Column("event_id", String(256)),
    Column("event_type", String(128)),
    Column("payload", Text, nullable=False),
)


# -- the service ---------------------------------------------------------------


def _count(engine: Engine, query: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def run_service(
    topics: TopicSet,
    url: str,
    expected: int,
    timeout_s: float,
    sample: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One service run; `sample` names threads (consumer, timers, relay) to sample."""
    app = build(topics.settings(url, "service"), migrate=False)
    watch = create_db_engine(url)
    stop = threading.Event()
    service = Service(app, stop, clock_mode="event")
    received_q = select(func.count()).select_from(inbox)
    parked_q = select(func.count()).select_from(parked)
    unsent_q = select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
    first: tuple[float, int] | None = None
    applied = published = None
    peak_parked = 0
    try:
        started = time.perf_counter()
        service.start()
        samplers = {
            t.name: StackSampler(t.ident or 0) for t in threading.enumerate() if t.name in sample
        }
        for sampler in samplers.values():
            sampler.start()
        deadline = started + timeout_s
        while applied is None and time.perf_counter() < deadline:
            if service.failed.is_set():
                raise RuntimeError("the service failed; see the log above")
            time.sleep(WATCH_INTERVAL_S)
            received = _count(watch, received_q)
            waiting = _count(watch, parked_q)
            now = time.perf_counter()
            peak_parked = max(peak_parked, waiting)
            if first is None and received:
                first = (now, received)
            if received >= expected and waiting == 0:
                applied = now
        while applied is not None and published is None and time.perf_counter() < deadline:
            if _count(watch, unsent_q) == 0:
                published = time.perf_counter()
            else:
                time.sleep(WATCH_INTERVAL_S)
        if published is None or first is None or applied is None:
            raise RuntimeError(f"service not done after {timeout_s:.0f} s")
        with watch.connect() as conn:
            query = select(outbox.c.stream, func.count()).group_by(outbox.c.stream)
            streams = {stream: int(n) for stream, n in conn.execute(query)}
        threads = _thread_cpu_s()
        for name, sampler in samplers.items():
            sampler.done.set()
            print(f"\nthread {name} of the service:")
            sampler.report(rows=25)
    finally:
        stop.set()
        service.join()
        app.close()
        watch.dispose()
    if streams.get("dlq"):
        raise RuntimeError(f"{streams['dlq']} records went to the DLQ: the workload is wrong")
    return _timings(started, first, applied, expected) | {
        "published_s": round(published - started, 3),
        "published_per_s": round(expected / (published - started), 1),
        "outputs": sum(streams.values()),
        "peak_parked": peak_parked,
        "thread_cpu_s": threads,
    }


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) of each live thread of this process, by thread name
    (Linux /proc): which of the service's loops the run's CPU went to. The Kafka client's
    own I/O threads are named by kafka-python."""
    spent: Counter[str] = Counter()
    for thread in threading.enumerate():
        spent[thread.name] += cpu_seconds(Path(f"/proc/self/task/{thread.native_id}/stat"))
    return {name: round(seconds, 2) for name, seconds in spent.most_common()}


def _timings(
    started: float, first: tuple[float, int], done: float, expected: int
) -> dict[str, Any]:
    at, count = first
    # None when the first observation already saw everything (a tiny run).
    steady = round((expected - count) / (done - at), 1) if count < expected else None
    return {
        "applied_s": round(done - started, 3),
        "events_per_s": round(expected / (done - started), 1),
        "first_batch_s": round(at - started, 3),
        "steady_events_per_s": steady,
    }


# -- the baseline --------------------------------------------------------------


def _row(record: Any) -> dict[str, Any]:
    value = json.loads(record.value)
    if "specversion" in value:
        attributes = value
    else:  # binary mode: the attributes are ce_ headers
        attributes = {k[3:]: v.decode() for k, v in record.headers if k.startswith("ce_")}
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "cluster_id": attributes.get("subject"),
        "event_id": attributes.get("id"),
        "event_type": attributes.get("type"),
        "payload": record.value.decode(),
    }


def run_baseline(topics: TopicSet, url: str, expected: int, timeout_s: float) -> dict[str, Any]:
    settings = topics.settings(url, "baseline")
    engine = create_db_engine(url)
    baseline_table.create(engine)
    inserted = 0
    first: tuple[float, int] | None = None
    started = time.perf_counter()
    deadline = started + timeout_s
    consumer = KafkaConsumer(**settings.consumer_config())
    try:
        consumer.subscribe(list(topics.inputs))
        while inserted < expected and time.perf_counter() < deadline:
            polled = consumer.poll(timeout_ms=500)
            rows = [_row(r) for batch in polled.values() for r in batch]
            if not rows:
                continue
            with engine.begin() as conn:
                for start in range(0, len(rows), BATCH_ROWS):
                    conn.execute(baseline_table.insert(), rows[start : start + BATCH_ROWS])
            consumer.commit(
                {tp: OffsetAndMetadata(b[-1].offset + 1, None, -1) for tp, b in polled.items()}
            )
            inserted += len(rows)
            if first is None:
                first = (time.perf_counter(), inserted)
        done = time.perf_counter()
    finally:
        consumer.close(autocommit=False)
        engine.dispose()
    if inserted < expected or first is None:
        raise RuntimeError(f"baseline inserted {inserted} of {expected} in {timeout_s:.0f} s")
    return _timings(started, first, done, expected)


# -- runs and report -----------------------------------------------------------


Runner = Callable[[TopicSet, str, int, float], dict[str, Any]]
RUNNERS: dict[str, Runner] = {"service": run_service, "baseline": run_baseline}


def measure(args: argparse.Namespace, records: list[Record]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    timeout_s = max(300.0, len(records) / 40)
    with scratch_dir() as scratch, bench_broker(scratch) as broker:
        for backend in args.backends:
            for run in range(1, args.runs + 1):
                with topic_set(broker.bootstrap) as topics:
                    produced_s = produce_all(topics, records)
                    order = ["service", "baseline"] if run % 2 else ["baseline", "service"]
                    for config in order:
                        with database(backend, scratch) as url:
                            outcome = RUNNERS[config](topics, url, len(records), timeout_s)
                        row = {"backend": backend, "config": config, "run": run} | outcome
                        row["produce_s"] = round(produced_s, 3)
                        results.append(row)
                        print(
                            f"  {backend:<8} run {run} {config:<8} "
                            f"{outcome['events_per_s']:>8.0f} events/s "
                            f"(steady {outcome['steady_events_per_s']}, "
                            f"applied in {outcome['applied_s']:.1f} s)",
                            flush=True,
                        )
                        if "thread_cpu_s" in outcome:
                            print(f"    CPU seconds by thread: {outcome['thread_cpu_s']}")
    return results


def summarise(results: list[dict[str, Any]], backends: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for backend in backends:
        mine = [r for r in results if r["backend"] == backend]
        service = [r for r in mine if r["config"] == "service"]
        baseline = {r["run"]: r for r in mine if r["config"] == "baseline"}
        ratios = [r["events_per_s"] / baseline[r["run"]]["events_per_s"] for r in service]
        summary[backend] = {
            "service_events_per_s": spread(r["events_per_s"] for r in service),
            "service_steady_events_per_s": spread(r["steady_events_per_s"] for r in service),
            "service_published_per_s": spread(r["published_per_s"] for r in service),
            "baseline_events_per_s": spread(r["events_per_s"] for r in baseline.values()),
            "baseline_steady_events_per_s": spread(
                r["steady_events_per_s"] for r in baseline.values()
            ),
            "ratio_service_to_baseline": spread(ratios, digits=3),
            "outputs": service[0]["outputs"] if service else None,
        }
    return summary


def print_table(summary: dict[str, Any]) -> None:
    def cell(s: dict[str, float], digits: int = 0) -> str:
        return f"{s['median']:>7.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"

    print()
    print("events/s, median [min-max] over runs; ratio = service / baseline, paired per run")
    print(f"{'backend':<9} {'service':>22} {'service steady':>22} {'baseline':>22} {'ratio':>22}")
    for backend, s in summary.items():
        print(
            f"{backend:<9} {cell(s['service_events_per_s']):>22} "
            f"{cell(s['service_steady_events_per_s']):>22} "
            f"{cell(s['baseline_events_per_s']):>22} "
            f"{cell(s['ratio_service_to_baseline'], 3):>22}"
        )


# -- profile -------------------------------------------------------------------


class StackSampler(threading.Thread):
    """A poor man's py-spy: samples one thread's Python stack every few ms.

    cProfile's per-call overhead inflates call-heavy pure-Python code (the
    statechart library) against C calls (the database drivers); sampling the
    unprofiled loop gives unbiased shares of wall time.
    """

    def __init__(self, target: int, interval_s: float = 0.002) -> None:
        super().__init__(name="sampler", daemon=True)
        self.target = target
        self.interval_s = interval_s
        self.done = threading.Event()
        self.samples = 0
        self.inclusive: Counter[tuple[str, str]] = Counter()
        self.own: Counter[tuple[str, str]] = Counter()

    def run(self) -> None:
        # Without this the sampler gets the GIL at once when the sampled thread blocks in
        # C (a database call) but only every 5 ms while it runs Python: I/O would look
        # up to 2.5 times bigger than it is.
        previous = sys.getswitchinterval()
        sys.setswitchinterval(self.interval_s / 10)
        try:
            self._sample()
        finally:
            sys.setswitchinterval(previous)

    def _sample(self) -> None:
        while not self.done.wait(self.interval_s):
            frame = sys._current_frames().get(self.target)
            if frame is None:
                continue
            self.samples += 1
            self.own[_where(frame)] += 1
            seen = set()
            depth = 0
            while frame is not None and depth < 500:
                seen.add(_where(frame))
                frame, depth = frame.f_back, depth + 1
            self.inclusive.update(seen)

    def report(self, rows: int = 30) -> None:
        total = max(1, self.samples)
        print(f"  {self.samples} samples; the main costs (inclusive share of wall time)")
        for label, (file, name) in KEY_FUNCTIONS.items():
            share = sum(
                n for (f, fn), n in self.inclusive.items() if f.endswith(file) and fn == name
            )
            print(f"  {share / total:>6.1%}  {label}")
        print("  inclusive share (function and what it calls)")
        for (file, name), n in self.inclusive.most_common(rows):
            print(f"  {n / total:>6.1%}  {file}:{name}")
        print("  own share by package (time in C calls counts for the Python caller)")
        packages: Counter[str] = Counter()
        for (file, _name), n in self.own.items():
            packages[file.split("/")[0]] += n
        for package, n in packages.most_common(12):
            print(f"  {n / total:>6.1%}  {package}")


# What a batch spends its time on, as (file suffix, function) of the stack sampler.
KEY_FUNCTIONS = {
    "Kafka poll (fetch, CRC check, record parsing)": ("kafka/consumer/group.py", "poll"),
    "  pure-Python CRC32C of fetched batches": ("kafka/record/_crc32c.py", "crc_update"),
    "decode records (CloudEvent + schema)": ("consumers/event_consumer.py", "decode"),
    "Workflow.apply_batch (one transaction)": ("workflows/engine.py", "apply_batch"),
    "  python-statemachine send (with our callbacks)": ("statemachine/statemachine.py", "send"),
    "  timers fired by event time (Decider.fire_due)": ("workflows/decider.py", "fire_due"),
    "  releasing parked events (Workflow._release)": ("workflows/engine.py", "_release"),
    "  SQL: every statement (SQLAlchemy execute)": ("sqlalchemy/engine/base.py", "execute"),
    "    inbox dedupe query (messages.seen)": ("workflows/store/messages.py", "seen"),
    "    parked events query (messages.releasable)": ("workflows/store/messages.py", "releasable"),
    "    aggregates.load": ("workflows/store/aggregates.py", "load"),
    "    writes (Workflow._write)": ("workflows/engine.py", "_write"),
    "    COMMIT": ("sqlalchemy/engine/base.py", "commit"),
    "  inbox digest (sha256 of JSON)": ("workflows/digest.py", "digest"),
    "one log line per event (EventConsumer._log)": ("consumers/event_consumer.py", "_log"),
    "offset commit": ("consumers/event_consumer.py", "_commit"),
}


def _where(frame: Any) -> tuple[str, str]:
    return _short(frame.f_code.co_filename), frame.f_code.co_name


def profile(args: argparse.Namespace, records: list[Record]) -> None:
    """The consumer loop (poll, decode, apply, log, commit) alone on this thread, under
    cProfile or the stack sampler; then (cProfile) the relay publishing the outputs."""
    backend = args.backends[0]
    expected = len(records)
    with loaded_topics(backend, records) as (t, url):
        settings = t.settings(url, "profile")
        app = build(settings, migrate=False)
        stop = threading.Event()
        consumer = EventConsumer(
            app.workflow,
            settings.consumer_config(),
            settings.input_topics,
            max_record_bytes=settings.max_record_bytes,
            stop=stop,
        )
        try:
            consumer.connect()
            seen = 0
            deadline = time.monotonic() + 60
            while seen == 0 and time.monotonic() < deadline:  # the group join, not measured
                seen = consumer.step()
            profiler = cProfile.Profile()
            sampler = StackSampler(threading.get_ident())
            started = time.perf_counter()
            if args.profile == "cprofile":
                profiler.enable()
            else:
                sampler.start()
            deadline = time.monotonic() + max(300.0, expected / 40)
            while seen < expected and time.monotonic() < deadline:
                seen += consumer.step()
            profiler.disable()
            sampler.done.set()
            elapsed = time.perf_counter() - started
            relay = make_relay(app, stop)
            relay_profile = cProfile.Profile()
            relay_started = time.perf_counter()
            relay_profile.enable()
            published = relay.drain()
            relay_profile.disable()
            relay_elapsed = time.perf_counter() - relay_started
            relay.close()
        finally:
            if consumer.consumer is not None:
                consumer.consumer.close(autocommit=False)
            app.close()
    print(f"\nconsumer loop alone, {args.profile} ({backend}): {seen} records in {elapsed:.1f} s")
    print(f"= {seen / elapsed:.0f} events/s (measurement overhead included)")
    if args.profile == "sample":
        sampler.report()
        return
    report(profiler, args.profile_out / f"profile-consumer-{backend}.pstats")
    print(f"\nrelay under cProfile: {published} outputs in {relay_elapsed:.1f} s")
    print(f"= {published / relay_elapsed:.0f} outputs/s")
    report(relay_profile, args.profile_out / f"profile-relay-{backend}.pstats", rows=15)


@contextlib.contextmanager
def loaded_topics(backend: str, records: list[Record]) -> Iterator[tuple[TopicSet, str]]:
    """A broker, a topic set holding every record, and a fresh database of `backend`."""
    with (
        scratch_dir() as scratch,
        bench_broker(scratch) as broker,
        topic_set(broker.bootstrap) as topics,
    ):
        produce_all(topics, records)
        with database(backend, scratch) as url:
            yield topics, url


def profile_threads(args: argparse.Namespace, records: list[Record]) -> None:
    """One whole service run (all its loops, as measured), its consumer, timers and relay
    threads each sampled: where the time of each loop goes, and their CPU seconds."""
    backend = args.backends[0]
    with loaded_topics(backend, records) as (topics, url):
        outcome = run_service(
            topics, url, len(records), 600.0, sample=("consumer", "timers", "relay")
        )
    print(
        f"\n{backend}: {outcome['events_per_s']:.0f} events/s, peak parked "
        f"{outcome['peak_parked']}; CPU seconds by thread: {outcome['thread_cpu_s']}"
    )


def report(profiler: cProfile.Profile, path: Path, rows: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(path)
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in entries.values())
    ranked = sorted(entries.items(), key=lambda item: item[1][3], reverse=True)
    print(f"  top by cumulative time (share of {total:.1f} s), pstats file {path}")
    print(f"  {'share':>6} {'cum s':>7} {'calls':>8}  function")
    for (file, line, name), (_cc, calls, _tt, cumulative, _callers) in ranked[:rows]:
        where = _short(file)
        print(f"  {cumulative / total:>6.1%} {cumulative:>7.2f} {calls:>8}  {where}:{line}({name})")
    by_own = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)
    print("  top by own time")
    for (file, line, name), (_cc, calls, own, _ct, _callers) in by_own[:15]:
        print(f"  {own / total:>6.1%} {own:>7.2f} {calls:>8}  {_short(file)}:{line}({name})")


def _short(file: str) -> str:
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3.11/", "lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


# -- main ----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    parser.add_argument(
        "--profile",
        choices=["cprofile", "sample", "threads"],
        help="instead: one run of the consumer loop under cProfile or a stack sampler, or "
        "(threads) one service run with its consumer, timers and relay threads sampled",
    )
    parser.add_argument(
        "--profile-out", type=Path, default=Path(tempfile.gettempdir()) / "gocluster-bench"
    )
    args = parser.parse_args()
    args.backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    if args.runs < 1 or args.events < args.clusters:
        parser.error("need --runs >= 1 and --events >= --clusters")
    quiet_service_logs()
    records = workload(args.clusters, args.events, args.seed)
    print(f"workload: {len(records)} events over {args.clusters} clusters (seed {args.seed})")
    if args.profile == "threads":
        profile_threads(args, records)
        return
    if args.profile:
        profile(args, records)
        return
    before = machine()
    started = datetime.now(UTC)
    results = measure(args, records)
    summary = summarise(results, args.backends)
    print_table(summary)
    document = {
        "benchmark": "throughput",
        "started": started.isoformat(timespec="seconds"),
        "workload": {"events": len(records), "clusters": args.clusters, "seed": args.seed},
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
