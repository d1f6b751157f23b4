"""Idempotent topic administration.

The service, the demo and the tests all create their topics explicitly,
because an auto-created topic gets the broker's default partition count
(4 on Tansu, often 1 on Kafka) and the partition count decides ordering.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kafka.admin import KafkaAdminClient
from kafka.errors import for_code

__all__ = ["create_topics", "delete_topics"]

_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3


def create_topics(
    admin_config: Mapping[str, Any],
    topics: Mapping[str, int],
    replication: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create each topic with its partition count (and topic settings, by name); returns
    the names that were new.

    A topic that already exists is left as it is (its partition count and
    settings are not checked or changed); any other error is raised.
    """
    if not topics:
        return []
    request = {
        name: {
            "num_partitions": partitions,
            "replication_factor": replication,
            "configs": dict((configs or {}).get(name, {})),
        }
        for name, partitions in topics.items()
    }
    admin = KafkaAdminClient(**admin_config)
    try:
        response = admin.create_topics(request, raise_errors=False, wait_for_metadata=True)
    finally:
        admin.close()
    return _check(response["topics"], ignore=_TOPIC_ALREADY_EXISTS)


def delete_topics(admin_config: Mapping[str, Any], topics: Iterable[str]) -> list[str]:
    """Delete the topics; one that does not exist is not an error. Returns those deleted."""
    names = list(topics)
    if not names:
        return []
    admin = KafkaAdminClient(**admin_config)
    try:
        response = admin.delete_topics(names, raise_errors=False)
    finally:
        admin.close()
    # The result key depends on the DeleteTopics version the broker speaks.
    results = response.get("topics", response.get("responses", []))
    return _check(results, ignore=_UNKNOWN_TOPIC)


def _check(results: list[dict[str, Any]], ignore: int) -> list[str]:
    done: list[str] = []
    for result in results:
        code = result["error_code"]
        if code == 0:
            done.append(result["name"])
        elif code != ignore:
            error = for_code(code)
            raise error(f"topic {result['name']!r}: {result.get('error_message')}")
    return done
