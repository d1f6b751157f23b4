"""Where the contract's schema files are published, and what an output's `dataschema` is.

An output event names the JSON Schema of its data by an absolute URI: the
configured base (GOCLUSTER_SCHEMA_BASE_URL) followed by the schema's file name
under schemas/data. `gocluster serve` publishes the files under that name, with
`$id` set to the URI it is published at, so a consumer that resolves the
relative `$ref`s (`common.json#/...`) against the document reaches the same
server.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from urllib.parse import urlsplit

from schemas.uri import is_uri_reference

__all__ = [
    "DEFAULT_SCHEMA_BASE_URL",
    "SCHEMA_MEDIA_TYPE",
    "check_base_url",
    "dataschema",
    "published_schema",
    "schema_file",
    "schema_files",
]

DEFAULT_SCHEMA_BASE_URL = "https://gocluster.example/schemas/"
SCHEMA_MEDIA_TYPE = "application/schema+json"


def schema_file(event_type: str) -> str:
    """The file under schemas/data that holds the schema of `event_type`'s data."""
    return f"{event_type}.json"


def dataschema(base_url: str, event_type: str) -> str:
    return base_url + schema_file(event_type)


def check_base_url(value: str) -> str:
    """An absolute http(s) URL ending in `/`, or ValueError saying what is wrong."""
    parts = urlsplit(value)
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an absolute http:// or https:// URL")
    if not is_uri_reference(value) or parts.query or parts.fragment:
        raise ValueError("must be a URL without spaces, query or fragment")
    if not value.endswith("/"):
        raise ValueError("must end in / (the schema's file name is appended)")
    return value


@cache
def schema_files() -> frozenset[str]:
    """The names of the published schema files (envelope, shared definitions, every type)."""
    folder = files("schemas") / "data"
    return frozenset(p.name for p in folder.iterdir() if p.name.endswith(".json"))


def published_schema(file_name: str, base_url: str) -> bytes | None:
    """The file as served from `base_url` (its `$id` is where it is served), or None."""
    if file_name not in schema_files():
        return None
    document = json.loads((files("schemas") / "data" / file_name).read_text(encoding="utf-8"))
    document["$id"] = base_url + file_name
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")
