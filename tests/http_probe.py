"""GET on the service's loopback HTTP endpoints, status and body, 503 included."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(
    url: str, timeout_s: float = 5.0, headers: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """(status, body); (0, reason) when nothing answers."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"only the service's loopback endpoints: {url}")
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - checked above
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error)


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    status, body = get(url)
    return status, (json.loads(body) if status else {})


def metric(base: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample of /metrics (Prometheus text format), or None."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = get(f"{base}/metrics")
    if status != 200:
        return None
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and (labels is None or sample.labels == labels):
                return float(sample.value)
    return None


def metric_sum(base: str, name: str) -> float | None:
    """The sum of every sample of `name` (e.g. lag over all partitions)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = get(f"{base}/metrics")
    if status != 200:
        return None
    found = [
        float(s.value)
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == name
    ]
    return sum(found) if found else None
