"""The adversarial ids and sources: what an attacker (or an unlucky producer) puts in the
two fields that identify an event, within what JSON and the contract's schema allow.

Each case is an application for a fresh cluster of its own, so its one expected
output (membership.changed, unknown -> applied) is easy to find. Every case is
sent twice, in structured mode (JSON with every non-ASCII character escaped) and
in binary mode (`ce_*` headers in UTF-8); `tag` keeps the two copies distinct.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests import stories

__all__ = ["Case", "cases", "record"]

PORTAL = "/go-cluster/portal"
MAX_ID = 256  # envelope.json: id maxLength
MAX_SOURCE = 1024  # envelope.json: source maxLength


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    event_id: str
    cluster_id: str
    mode: str  # structured | binary

    def event(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": self.event_id,
            "source": self.source,
            "type": "gocluster.application.submitted",
            "subject": self.cluster_id,
            "time": "2025-06-02T09:00:00+02:00",
            "datacontenttype": "application/json",
            "data": {
                "cluster_id": self.cluster_id,
                "cluster_name": f"Cluster {self.cluster_id}",
                "organisation": f"{self.cluster_id} e.V.",
                "federal_state": "DE-BE",
            },
        }


def _named(t: str) -> list[tuple[str, str, str]]:
    long_id = f"adv-{t}-" + "i" * (MAX_ID - 6)
    long_source = f"/{t}/" + "s" * (MAX_SOURCE - 3)
    return [
        ("joined with the key separator (a)", f"{PORTAL}\x1f{t}", "1"),
        ("joined with the key separator (b)", PORTAL, f"{t}\x1f1"),
        ("unit separator at the end", PORTAL, f"adv-{t}\x1f"),
        ("record separator in the source", f"{PORTAL}\x1e{t}", "adv-rs"),
        ("tab, newline, carriage return", PORTAL, f"adv-{t}\t\n\r1"),
        ("NUL", PORTAL, f"adv-{t}\x00nul"),
        ("DEL and an escape sequence", PORTAL, f"adv-{t}\x7f\x1b[31m"),
        ("line and paragraph separators", PORTAL, f"adv-{t}\u2028\u2029"),
        ("right-to-left override", PORTAL, f"adv-{t}\u202e1"),
        ("zero-width space", PORTAL, f"adv-{t}\u200b-zw"),
        ("the same without it", PORTAL, f"adv-{t}-zw"),
        ("Cyrillic o in the source", "/go-cluster/p\u043ertal", f"adv-{t}-look"),
        ("Latin o in the source", PORTAL, f"adv-{t}-look"),
        ("é composed (NFC)", PORTAL, f"adv-{t}-caf\u00e9"),
        ("é decomposed (NFD)", PORTAL, f"adv-{t}-cafe\u0301"),
        ("fullwidth digit", PORTAL, f"adv-{t}-\uff11"),
        ("ASCII digit", PORTAL, f"adv-{t}-1"),
        ("upper case", PORTAL, f"ADV-{t.upper()}-CASE"),
        ("lower case", PORTAL, f"adv-{t}-case"),
        ("trailing space", PORTAL, f"adv-{t}-space "),
        ("no trailing space", PORTAL, f"adv-{t}-space"),
        ("byte-order mark in the source", f"\ufeff{PORTAL}", f"adv-{t}-bom"),
        ("emoji sequence", PORTAL, f"adv-{t}-👩\u200d👩\u200d👧"),
        ("lone surrogate", PORTAL, f"adv-{t}-\ud800"),
        ("longest id", PORTAL, long_id),
        ("longest id but one", PORTAL, long_id[:-1]),
        ("longest source", long_source, f"adv-{t}-long-source"),
        ("longest source and id", long_source, long_id),
    ]


def cases() -> list[Case]:
    made = []
    for mode, tag in (("structured", "s"), ("binary", "b")):
        for n, (name, source, event_id) in enumerate(_named(tag)):
            if mode == "binary" and "\ud800" in event_id:
                continue  # a header value is UTF-8 bytes: a lone surrogate has none
            made.append(Case(name, source, event_id, f"adv-{tag}-{n:03d}", mode))
    return made


def record(case: Case) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
    """(input topic name, key, value, headers) as the producer would send it."""
    event = case.event()
    if case.mode == "structured":
        value = json.dumps(event, ensure_ascii=True).encode()
        headers = [("content-type", b"application/cloudevents+json")]
        return "applications", event["subject"].encode(), value, headers
    key, value, headers = stories.binary_record(event)
    return "applications", key or b"", value or b"", headers
