"""Each input partition's progress, kept in the database: the fence against stale members.

A batch locks the progress rows of its partitions, skips the records below
them (whoever owns the partition now has applied those) and advances them, all
in its own transaction. A member that was paused past its session timeout and
wakes with a batch in hand therefore writes nothing that the partition's new
owner already wrote, even for records the inbox cannot recognise (undecodable
ones, or events whose inbox rows retention has removed). Kafka's committed
offsets stay the consumer's starting point; the database's progress wins when
it is ahead of them (a commit that failed, a crash between the two commits).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, bindparam, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from workflows.store.tables import partition_progress

Partition = tuple[str, int]


class FromPartition(Protocol):
    @property
    def origin(self) -> Mapping[str, Any]: ...


T = TypeVar("T", bound=FromPartition)


def claim(conn: Connection, items: Sequence[T], now: datetime) -> tuple[list[T], list[T]]:
    """(the items this transaction may apply, those applied before); advances their
    partitions' progress past them.

    Items that do not come from Kafka (replayed lines) are always to apply.
    """
    last: dict[Partition, int] = {}
    for item in items:
        where = _partition(item.origin)
        if where is not None:
            last[where] = max(last.get(where, -1), int(item.origin["offset"]))
    if not last:
        return list(items), []
    stored = _lock(conn, sorted(last), now)
    to_apply = [i for i in items if _fresh(i.origin, stored)]
    applied = [i for i in items if not _fresh(i.origin, stored)]
    ahead = {p: offset + 1 for p, offset in last.items() if offset + 1 > stored[p]}
    if ahead:
        conn.execute(
            update(partition_progress)
            .where(partition_progress.c.topic == bindparam("b_topic"))
            .where(partition_progress.c.partition == bindparam("b_partition"))
            .values(next_offset=bindparam("next_offset"), updated_at=now),
            [
                {"b_topic": t, "b_partition": p, "next_offset": offset}
                for (t, p), offset in sorted(ahead.items())
            ],
        )
    return to_apply, applied


def next_offsets(conn: Connection, partitions: Iterable[Partition]) -> dict[Partition, int]:
    """The stored progress of these partitions (those never seen are absent)."""
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    query = select(
        partition_progress.c.topic, partition_progress.c.partition, partition_progress.c.next_offset
    ).where(tuple_(partition_progress.c.topic, partition_progress.c.partition).in_(wanted))
    return {(t, p): int(n) for t, p, n in conn.execute(query)}


def rewind(conn: Connection, partition: Partition, next_offset: int, now: datetime) -> None:
    """Set a partition's progress back: its topic was deleted and created again."""
    topic, number = partition
    conn.execute(
        update(partition_progress)
        .where(partition_progress.c.topic == topic, partition_progress.c.partition == number)
        .values(next_offset=next_offset, updated_at=now)
    )


def _partition(origin: Mapping[str, Any]) -> Partition | None:
    if origin.get("kind") != "kafka":
        return None
    return str(origin["topic"]), int(origin["partition"])


def _fresh(origin: Mapping[str, Any], stored: Mapping[Partition, int]) -> bool:
    where = _partition(origin)
    return where is None or int(origin["offset"]) >= stored[where]


def _lock(conn: Connection, partitions: list[Partition], now: datetime) -> dict[Partition, int]:
    """Create missing rows, then lock all of them in key order (no deadlock between members)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(partition_progress).on_conflict_do_nothing(),
        [{"topic": t, "partition": p, "next_offset": 0, "updated_at": now} for t, p in partitions],
    )
    query = (
        select(
            partition_progress.c.topic,
            partition_progress.c.partition,
            partition_progress.c.next_offset,
        )
        .where(tuple_(partition_progress.c.topic, partition_progress.c.partition).in_(partitions))
        .order_by(partition_progress.c.topic, partition_progress.c.partition)
        .with_for_update()
    )
    return {(t, p): int(n) for t, p, n in conn.execute(query)}
