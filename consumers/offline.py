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
from schemas.errors import ErrorClass
from schemas.validate import Rejected, parse_json
from workflows.engine import BatchResult, Inbound, Rejection

MAX_TICK_ROUNDS = 100_000  # each round fires every due timer of up to 200 clusters


def replay(
    app: App, source: IO[bytes], out: IO[str], dlq: IO[str], batch: int, now: datetime | None
) -> dict[str, int]:
    """Apply the file's lines in batches, on the service clock of `app` (T under
    `--now T`, else the wall clock); releases that a batch left for later (the
    per-transaction budget) continue before the next batch, as the timer loop would."""
    stats = {
        "lines": 0,
        "applied": 0,
        "parked": 0,
        "duplicates": 0,
        "rejected": 0,
        "outputs": 0,
        "timers_fired": 0,
    }
    limit = app.settings.max_record_bytes
    for items in _batches(_progress(source, limit), batch, limit):
        stats["lines"] += len(items)
        _account(stats, app.workflow.apply_batch(items), out, dlq)
        for result in _release(app, app.clock.now()):
            _account(stats, result, out, dlq)
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


def _release(app: App, now: datetime) -> Iterator[BatchResult]:
    """Release every parked event whose wake-up has come by `now`."""
    for _ in range(MAX_TICK_ROUNDS):
        result = app.workflow.release_parked(now=now)
        if not result.clusters_woken:
            break
        yield result


def _tick(app: App, now: datetime) -> Iterator[BatchResult]:
    """Release parked events the clock has reached (before the timers they precede), fire
    everything due up to `now`, then send parked events past their TTL to the DLQ."""
    yield from _release(app, now)
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
            if r.origin.get("text_truncated"):
                record["text_truncated"] = True
        else:
            record |= {"origin": r.origin}
        dlq.write(json.dumps(record, ensure_ascii=False) + "\n")
    dlq.flush()


def _batches(
    lines: Iterator[tuple[int, bytes, bool]], size: int, max_bytes: int
) -> Iterator[list[Inbound]]:
    batch: list[Inbound] = []
    for number, raw, whole in lines:
        batch.append(_inbound(number, raw, whole, max_bytes))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _inbound(number: int, raw: bytes, whole: bool, max_bytes: int) -> Inbound:
    """One line as Kafka input would be one record: bytes first, within the same limit."""
    origin: dict[str, Any] = {"kind": "line", "line": number}
    if not whole:
        origin["text"] = raw.decode("utf-8", "backslashreplace")
        origin["text_truncated"] = True
        message = f"line is over the {max_bytes} limit (GOCLUSTER_MAX_RECORD_BYTES)"
        return Inbound(origin, rejected=Rejected(ErrorClass.DECODE, message))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        origin["text"] = raw.decode("utf-8", "backslashreplace")
        message = f"line is not valid UTF-8: {exc.reason} at byte {exc.start}"
        return Inbound(origin, rejected=Rejected(ErrorClass.DECODE, message))
    origin["text"] = text
    try:
        return Inbound(origin, event=parse_json(text))
    except Rejected as exc:
        return Inbound(origin, rejected=exc)


def _lines(source: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(number, bytes without the line end, whether it is within `max_bytes`). A longer
    line is cut at the limit and the rest skipped unread: no line is held in memory
    beyond the limit."""
    number = 0
    while True:
        line = source.readline(max_bytes + 2)  # the limit, plus room for "\r\n"
        if not line:
            return
        number += 1
        text = line.rstrip(b"\r\n")
        if len(line) == max_bytes + 2 and not line.endswith(b"\n"):
            _skip_rest_of_line(source)
            yield number, text[:max_bytes], False
        elif len(text) > max_bytes:
            yield number, text[:max_bytes], False
        elif text.strip():
            yield number, text, True


def _skip_rest_of_line(source: IO[bytes]) -> None:
    while True:
        chunk = source.readline(1 << 20)
        if not chunk or chunk.endswith(b"\n"):
            return


def _progress(source: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """A progress bar on a terminal for a file of known size; silent otherwise."""
    size = _size(source)
    if not sys.stderr.isatty() or size is None:
        yield from _lines(source, max_bytes)
        return
    with click.progressbar(length=size, label="replaying", file=sys.stderr) as bar:
        for number, raw, whole in _lines(source, max_bytes):
            bar.update(len(raw) + 1)
            yield number, raw, whole


def _size(source: IO[bytes]) -> int | None:
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
