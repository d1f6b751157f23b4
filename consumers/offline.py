"""`replay` and `tick`: the workflow without Kafka, on the configured database."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

import click

from consumers.bootstrap import App
from schemas.validate import Rejected, parse_json
from workflows.engine import BatchResult, Inbound, Rejection

MAX_TICK_ROUNDS = 100_000  # each round fires every due timer of up to 200 clusters


def replay(
    app: App, source: IO[str], out: IO[str], dlq: IO[str], batch: int, now: datetime | None
) -> dict[str, int]:
    stats = {
        "lines": 0,
        "applied": 0,
        "parked": 0,
        "duplicates": 0,
        "rejected": 0,
        "outputs": 0,
        "timers_fired": 0,
    }
    for items in _batches(_progress(source), batch):
        stats["lines"] += len(items)
        _account(stats, app.workflow.apply_batch(items), out, dlq)
    if now is not None:
        for result in _tick(app, now):
            _account(stats, result, out, dlq)
    return stats


def tick(app: App, now: datetime, dlq: IO[str]) -> dict[str, int]:
    stats = {"timers_fired": 0, "outputs": 0, "rejected": 0}
    for result in _tick(app, now):
        stats["timers_fired"] += result.timers_fired
        stats["outputs"] += len(result.outputs)
        stats["rejected"] += len(result.rejections)
        _write_rejections(result.rejections, dlq)
    return stats


def _tick(app: App, now: datetime) -> Iterator[BatchResult]:
    """Fire everything due up to `now`, then send parked events past their TTL to the DLQ."""
    for _ in range(MAX_TICK_ROUNDS):
        result = app.workflow.fire_due_timers(until=now)
        if result.timers_fired == 0:
            break
        yield result
    for _ in range(MAX_TICK_ROUNDS):
        result = app.workflow.expire_parked(now=now)
        if not result.rejections:
            break
        yield result


def _account(stats: dict[str, int], result: BatchResult, out: IO[str], dlq: IO[str]) -> None:
    for key, outcome in (("applied", "applied"), ("parked", "parked"), ("duplicates", "duplicate")):
        stats[key] += result.count(outcome)
    stats["rejected"] += len(result.rejections)
    stats["timers_fired"] += result.timers_fired
    stats["outputs"] += len(result.outputs)
    for payload in result.outputs:
        out.write(json.dumps(payload, separators=(",", ":")) + "\n")
    out.flush()
    _write_rejections(result.rejections, dlq)


def _write_rejections(rejections: list[Rejection], dlq: IO[str]) -> None:
    for r in rejections:
        record: dict[str, Any] = {"error_class": r.error_class.value, "error_message": r.message}
        if r.origin.get("kind") == "line":
            record |= {"line": r.origin["line"], "text": r.origin["text"]}
        else:
            record |= {"origin": r.origin}
        dlq.write(json.dumps(record, ensure_ascii=False) + "\n")
    dlq.flush()


def _batches(lines: Iterator[tuple[int, str]], size: int) -> Iterator[list[Inbound]]:
    batch: list[Inbound] = []
    for number, text in lines:
        origin = {"kind": "line", "line": number, "text": text}
        try:
            batch.append(Inbound(origin, event=parse_json(text)))
        except Rejected as exc:
            batch.append(Inbound(origin, rejected=exc))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _lines(source: IO[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(source, start=1):
        text = line.rstrip("\r\n")
        if text.strip():
            yield number, text


def _progress(source: IO[str]) -> Iterator[tuple[int, str]]:
    """A progress bar on a terminal for a file of known size; silent otherwise."""
    size = _size(source)
    if not sys.stderr.isatty() or size is None:
        yield from _lines(source)
        return
    with click.progressbar(length=size, label="replaying", file=sys.stderr) as bar:
        for number, text in _lines(source):
            bar.update(len(text.encode("utf-8")) + 1)
            yield number, text


def _size(source: IO[str]) -> int | None:
    try:
        return os.fstat(source.fileno()).st_size or None
    except (OSError, ValueError, AttributeError):
        return None


def publish(app: App, timeout_s: float) -> dict[str, int]:
    """Drain the outbox to Kafka, giving up after `timeout_s` (rows stay for `run`)."""
    from consumers.service import make_relay
    from workflows.store import messages

    stop = threading.Event()
    timer = threading.Timer(timeout_s, stop.set)
    timer.start()
    relay = make_relay(app, stop)
    try:
        published = relay.drain()
    finally:
        timer.cancel()
        relay.close()
    with app.db.connect() as conn:
        left = len(messages.unsent(conn, 100_000))
    return {"published": published, "unpublished": left}
