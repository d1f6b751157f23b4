"""When two deliveries of one (source, id) are the same event (CONTRACT.md section 4).

The inbox keeps a digest of each event it received: `type`, `subject`, `data`
and the *instant* of `time`, so that `...T14:10:00Z` and
`...T16:10:00.000+02:00` (the official SDK re-renders `time` this way) are one
event, not a conflict.

Rows received before digests compared instants hold a digest of `time` as the
text it came as. A redelivery is checked against both forms: sent again byte for
byte, such an event is still a duplicate. Sent again with `time` rewritten, it
cannot be recognised: the old digest keeps no instant to compare with, only a
hash of the text it was written as.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC
from typing import Any

from schemas.messages import InputEvent


def digest(event: InputEvent) -> str:
    """What makes two deliveries of one (source, id) the same event."""
    return _hash({**_content(event), "time": event.time.astimezone(UTC).isoformat()})


def digest_of_time_text(event: InputEvent) -> str:
    """The digest of rows received before the instant of `time` was compared."""
    return _hash(_content(event) | {"time": event.raw.get("time")})


def is_same_event(stored: str, event: InputEvent, fingerprint: str) -> bool:
    """`fingerprint` is digest(event), computed once by the caller."""
    return stored == fingerprint or stored == digest_of_time_text(event)


def _content(event: InputEvent) -> dict[str, Any]:
    return {k: event.raw.get(k) for k in ("type", "subject", "data")}


def _hash(content: dict[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
