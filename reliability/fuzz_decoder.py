"""Coverage-guided fuzzing (atheris, i.e. libFuzzer) of the whole per-record decode path.

Each fuzz input is turned into a Kafka record (key, headers, value) and handed
to ``consumers.event_consumer.decode``, the function the consumer runs on
every polled record. The harness asserts the promise the DLQ relies on: an
``Inbound`` comes back, never an exception; it holds an event XOR a rejection
whose class is one of the contract's; the rejection makes a DLQ record with
the original bytes; an accepted event can be stored and re-sent as UTF-8 JSON.
Any other outcome is a crash that libFuzzer reports and saves (``crash-*``).

    python -m reliability.fuzz_decoder -max_total_time=120              # seeds in a temp dir
    python -m reliability.fuzz_decoder -max_total_time=600 fuzz-corpus/ # keep the corpus
    python -m reliability.fuzz_decoder -runs=1 crash-abc123             # replay one input

Without atheris (``pip install atheris``; wheels for Linux x86-64) it says so and
exits 0, so scripts and CI can call it unconditionally.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the machine
    atheris = None

# Import (and so instrument) our code only; third-party modules stay uninstrumented.
if atheris is not None:
    with atheris.instrument_imports(include=["consumers", "schemas", "workflows"]):
        from consumers.event_consumer import decode
        from consumers.records import DLQ_ERROR_CLASSES, RecordOrigin, dlq_record
        from workflows.engine import Inbound

from kafka.consumer.fetcher import ConsumerRecord

HEADER_NAMES = [
    "content-type",
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_subject",
    "ce_time",
    "ce_datacontenttype",
    "ce_data",
    "ce_traceparent",
    "CE_ID",
    "traceparent",
]
SMALL_LIMIT = 512  # a record over it goes to the DLQ as decode; exercised on 1 input in 8


class _Reader:
    """Reads the fuzz input front to back; past the end every read is empty or zero."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        value = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return value

    def take(self, size: int) -> bytes:
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def rest(self) -> bytes:
        return self.take(max(0, len(self.data) - self.pos))


def record_from(data: bytes) -> tuple[ConsumerRecord, int]:
    """Layout: flags, [key length, key], headers, then the value (the rest). Any bytes work.

    flags bit 0: key present; bit 1: value present; bits 2-4: header count; bit 7: small
    limit. A header is a name byte (below 0x80 picks from HEADER_NAMES, else a length of
    text that follows), a value length byte (255: a null value) and the value.
    """
    reader = _Reader(data)
    flags = reader.byte()
    key = reader.take(reader.byte()) if flags & 1 else None
    headers: list[tuple[str, bytes | None]] = []
    for _ in range((flags >> 2) & 7):
        pick = reader.byte()
        if pick < 0x80:
            name = HEADER_NAMES[pick % len(HEADER_NAMES)]
        else:
            # kafka-python decodes header names as strict UTF-8: no lone surrogates.
            name = reader.take(pick - 0x80).decode("utf-8", "replace")
        size = reader.byte()
        headers.append((name, None if size == 255 else reader.take(size)))
    value = reader.rest() if flags & 2 else None
    record = ConsumerRecord(
        "gocluster.applications", 0, None, 42, 0, 0, key, value, headers, None, -1, -1, -1
    )
    return record, SMALL_LIMIT if flags & 0x80 else 1_048_576


def check(data: bytes) -> None:
    """One fuzz input: any failed check or exception is a finding."""
    record, limit = record_from(data)
    item = decode(record, limit)
    if not isinstance(item, Inbound) or (item.event is None) == (item.rejected is None):
        raise AssertionError(f"decode broke its promise: {item!r}")
    json.dumps(item.origin)  # stored in a JSON column
    origin = RecordOrigin.from_consumer_record(record)
    if item.rejected is not None:
        error = item.rejected
        if error.error_class.value not in DLQ_ERROR_CLASSES or not error.message:
            raise AssertionError(f"unclassified rejection: {error!r}")
        key, value, _ = dlq_record(origin, error.error_class.value, error.message)
        if (key, value) != (record.key, record.value):
            raise AssertionError("the DLQ record is not the original record")
    else:
        assert item.event is not None
        json.dumps(item.event.raw, ensure_ascii=False, allow_nan=False).encode("utf-8")
        if record.key is not None and record.key != item.event.subject.encode("utf-8"):
            raise AssertionError("accepted an event whose key is not its subject")


def encode_case(
    key: bytes | None, headers: list[tuple[str, bytes]], value: bytes | None, small: bool = False
) -> bytes:
    """The inverse of record_from, for seeds (header names must be in HEADER_NAMES)."""
    flags = (1 if key is not None else 0) | (2 if value is not None else 0)
    flags |= min(len(headers), 7) << 2 | (0x80 if small else 0)
    out = bytearray([flags])
    if key is not None:
        out += bytes([len(key)]) + key
    for name, header_value in headers[:7]:
        out += bytes([HEADER_NAMES.index(name), len(header_value)]) + header_value
    return bytes(out) + (value or b"")


def seeds() -> list[bytes]:
    """Valid events of every input type, in both modes, and a few bad ones."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "ev-1",
        "source": "/portal",
        "type": "gocluster.application.submitted",
        "subject": "cl-1",
        "time": "2025-03-01T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "cluster_id": "cl-1",
            "cluster_name": "Cluster",
            "organisation": "Org",
            "federal_state": "DE-BY",
            "existing_label": {"level": "gold", "valid_until": "2026-01-31"},
        },
    }
    completed = dict(event, type="gocluster.interview.completed")
    completed["data"] = {
        "cluster_id": "cl-1",
        "interview_id": "iv-1",
        "kind": "gold_assessment",
        "held_on": "2025-04-01",
        "result": {"indicators": {"G1": {"score": 4, "threshold": 3, "max": 5}}},
    }
    assessed = dict(event, type="gocluster.application.assessed")
    assessed["data"] = {
        "cluster_id": "cl-1",
        "assessed_on": "2025-02-28",
        "criteria": {
            "structure_and_composition": True,
            "management_and_governance": True,
            "activities_and_cooperation": True,
            "visibility_and_impact": False,
        },
    }
    structured = [("content-type", b"application/cloudevents+json")]
    cases = []
    for each in (event, completed, assessed):
        cases.append(encode_case(b"cl-1", structured, json.dumps(each).encode()))
        binary = [
            (f"ce_{k}", str(v).encode())
            for k, v in each.items()
            if f"ce_{k}" in HEADER_NAMES and k not in ("data", "datacontenttype")
        ]
        binary.append(("content-type", b"application/json"))
        cases.append(encode_case(b"cl-1", binary, json.dumps(each["data"]).encode()))
    cases.append(encode_case(None, [], json.dumps(event).encode(), small=True))
    cases.append(encode_case(b"cl-1", structured, b"[" * 3000 + b"]" * 3000))
    cases.append(encode_case(b"x", structured, b'{"a": "\\ud800", "a": NaN}'))
    return cases


DICTIONARY = [
    *HEADER_NAMES,
    *(
        f'"{word}"'
        for word in (
            "specversion",
            "1.0",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "data",
            "datacontenttype",
            "application/json",
            "application/cloudevents+json",
            "gocluster.application.submitted",
            "gocluster.application.assessed",
            "gocluster.application.withdrawn",
            "gocluster.interview.scheduled",
            "gocluster.interview.completed",
            "gocluster.interview.cancelled",
            "gocluster.label.awarded",
            "cluster_id",
            "cluster_name",
            "organisation",
            "federal_state",
            "DE-BY",
            "existing_label",
            "level",
            "gold",
            "valid_until",
            "assessed_on",
            "criteria",
            "interview_id",
            "kind",
            "benchmarking",
            "silver_audit",
            "gold_assessment",
            "held_on",
            "result",
            "indicators",
            "score",
            "threshold",
            "max",
            "scheduled_for",
            "reason",
            "2025-02-28",
            "2025-03-01T10:00:00Z",
            "cl-1",
        )
    ),
    "\\ud800",
    "NaN",
    "1e999",
    "null",
    "true",
    "[[[[",
    "{}",
    ":",
    ",",
]


def write_dictionary(path: Path) -> None:
    """libFuzzer's -dict format: one quoted token per line."""
    lines = ['"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in DICTIONARY]
    path.write_text("\n".join(lines) + "\n", "ascii")


def main() -> int:
    if atheris is None:
        print("atheris is not installed (pip install atheris): skipping the decoder fuzzing")
        return 0
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):  # no corpus directory given
        corpus = Path(tempfile.mkdtemp(prefix="gocluster-fuzz-"))
        argv.append(str(corpus))
    else:
        corpus = Path(next(a for a in argv[1:] if not a.startswith("-")))
    if corpus.is_dir() and not any(corpus.iterdir()):
        for n, seed in enumerate(seeds()):
            (corpus / f"seed-{n:02d}").write_bytes(seed)
    if not any(a.startswith("-dict=") for a in argv):
        dictionary = Path(tempfile.mkdtemp(prefix="gocluster-fuzz-dict-")) / "decoder.dict"
        write_dictionary(dictionary)
        argv.append(f"-dict={dictionary}")
    if not any(a.startswith("-max_len=") for a in argv):
        argv.append("-max_len=16384")  # room for deep nesting and long texts
    atheris.Setup(argv, check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
