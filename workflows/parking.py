"""Parked events within one transaction: which to release next, and how much at most.

An event parks when its cluster's state cannot take it yet (the other input
topic is behind) or when its effective time lies beyond the service clock by
more than max_clock_skew. Its release follows two rules:

- Effective-time order. A state that changes may release parked events; they
  are read from the database in effective-time order, only those of the types
  the new state can take (so a thousand interviews waiting for an admission are
  not re-read when the application is assessed), and read again from the start
  whenever the state changes, since an earlier one may now be possible. Each
  parked event is looked at once per state it meets: the work is linear in the
  events released. Clusters with few stored parked events have them all read
  with one query per transaction and filtered here; a cluster with no stored
  parked events costs no query at all.
- A budget per transaction. A cluster with more releasable events than the
  budget leaves the rest for the next transaction: it gets a wake-up "now",
  the timer loop (or `tick`, or the end of `replay`) continues the release, and
  until then new events of that cluster park behind the backlog, so the order
  holds across transactions and no transaction outlasts Kafka's poll interval.

Events parked for the clock get a wake-up at their effective time (less the
skew); the timer loop releases them when the service clock reaches it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import Connection

from workflows.aggregate import Cluster
from workflows.decider import Decider
from workflows.store import messages
from workflows.store.messages import ParkedEvent

RELEASE_BUDGET = 500  # parked events released per transaction: about one polled batch
# A transaction reads all stored parked events of its clusters at once when each has
# at most PREFETCH_PER_CLUSTER and together at most PREFETCH_ROWS; a cluster with more
# is read per change of state, a page at a time.
PREFETCH_PER_CLUSTER = 64
PREFETCH_ROWS = 5_000
_LAST = 1 << 62  # events parked in this transaction sort after stored ones of equal time


class Parking:
    def __init__(
        self, conn: Connection, decider: Decider, now: datetime, budget: int = RELEASE_BUDGET
    ) -> None:
        self.conn = conn
        self.decider = decider
        self.now = now
        self.edge = now + decider.policy.max_clock_skew  # effective by this: not in the future
        self.budget = budget
        self.stored: set[str] = set()  # clusters with parked events stored by earlier ones
        self.cached: dict[str, list[ParkedEvent]] = {}  # all stored ones of a cluster
        self.due: set[str] = set()  # clusters whose wake-up has come
        self.new: dict[str, list[ParkedEvent]] = defaultdict(list)  # parked in this transaction
        self.gone: set[int] = set()  # id() of new ones released again before the write
        self.unpark: list[int] = []  # stored rows released, not yet deleted
        self.taken_rows: set[int] = set()  # stored rows released in this transaction
        self.skipped: set[int] = set()  # id() of stored or new events found still waiting
        self.skipped_rows: defaultdict[str, list[int]] = defaultdict(list)
        self.examined: Counter[str] = Counter()
        self.released: Counter[str] = Counter()
        self.backlog: set[str] = set()  # stopped at the budget
        self.rewake: set[str] = set()  # clusters whose wake-up is written anew

    def load(self, cluster_ids: list[str]) -> None:
        counts = messages.parked_counts(self.conn, cluster_ids)
        self.stored |= counts.keys()
        few: list[str] = []
        rows = 0
        for cluster_id, count in sorted(counts.items(), key=lambda item: item[1]):
            if count > PREFETCH_PER_CLUSTER or rows + count > PREFETCH_ROWS:
                break
            few.append(cluster_id)
            rows += count
        if few:
            self.cached.update(messages.parked_for(self.conn, few))
        wakeups = messages.wakeups(self.conn, cluster_ids)
        self.due |= {c for c, at in wakeups.items() if at <= self.edge}

    def take_due(self, cluster_id: str) -> bool:
        """Whether this cluster's wake-up has come (answered once per transaction)."""
        if cluster_id not in self.due:
            return False
        self.due.discard(cluster_id)
        self.rewake.add(cluster_id)
        return True

    def holds(self, cluster_id: str) -> bool:
        """A release of this cluster stopped at the budget: its new events wait behind it."""
        return cluster_id in self.backlog

    def park(self, parked: ParkedEvent) -> None:
        self.new[parked.cluster_id].append(parked)
        if parked.effective_at > self.edge:
            self.rewake.add(parked.cluster_id)

    def ready(self, cluster: Cluster) -> Iterator[ParkedEvent]:
        """The cluster's parked events its state may take, in effective-time order.

        The caller applies, refuses or `skip`s each one before asking for the next;
        when that changes the cluster's state, the candidates are read again.
        """
        cluster_id = cluster.cluster_id
        if cluster_id not in self.stored and cluster_id not in self.new:
            return
        while True:
            state = cluster.state
            candidates = self._candidates(cluster_id, state, self.budget + 1)
            if not candidates:
                return
            for parked in candidates:
                if self.budget == 0:
                    self.backlog.add(cluster_id)
                    self.rewake.add(cluster_id)
                    return
                self.budget -= 1
                self.examined[cluster_id] += 1
                yield parked
                if cluster.state != state:
                    break
            else:
                return

    def taken(self, parked: ParkedEvent) -> None:
        """Applied or refused: it leaves the parked events."""
        self.released[parked.cluster_id] += 1
        if parked.row_id is None:
            self.gone.add(id(parked))
        else:
            self.unpark.append(parked.row_id)
            self.taken_rows.add(parked.row_id)

    def skip(self, parked: ParkedEvent) -> None:
        """Still waiting (an exclusion due before it): not offered again in this transaction."""
        self.skipped.add(id(parked))
        if parked.row_id is not None:
            self.skipped_rows[parked.cluster_id].append(parked.row_id)

    def write(self) -> None:
        """Store new parked events, remove released ones, and renew the wake-ups."""
        messages.park(
            self.conn,
            [p for ps in self.new.values() for p in ps if id(p) not in self.gone],
        )
        self._flush()
        if not self.rewake:
            return
        # A backlog continues at once, unless all it examined still waits (an exclusion
        # due before each): that needs no second look until the state changes, or it
        # would be woken again and again for nothing.
        backlog = {c for c in self.backlog if self.released[c] or not self.examined[c]}
        later = messages.earliest_beyond(self.conn, sorted(self.rewake - backlog), self.edge)
        wake: dict[str, datetime | None] = {c: later.get(c) for c in self.rewake}
        wake |= dict.fromkeys(backlog, self.now)
        messages.set_wakeups(self.conn, wake)

    def _candidates(self, cluster_id: str, state: str, limit: int) -> list[ParkedEvent]:
        types = Decider.releasable_types(state)
        stored: list[ParkedEvent] = []
        if cluster_id in self.cached:
            stored = [
                p
                for p in self.cached[cluster_id]
                if p.row_id not in self.taken_rows
                and id(p) not in self.skipped
                and (p.event_type is None or p.event_type in types)
                and p.effective_at <= self.edge
            ]
        elif cluster_id in self.stored:
            self._flush()
            stored = messages.releasable(
                self.conn, cluster_id, types, self.edge, limit, self.skipped_rows[cluster_id]
            )
        fresh = [
            p
            for p in self.new.get(cluster_id, ())
            if id(p) not in self.gone
            and id(p) not in self.skipped
            and p.event_type in types
            and p.effective_at <= self.edge
        ]
        merged = sorted([*stored, *fresh], key=lambda p: (p.effective_at, p.row_id or _LAST))
        return merged[:limit]

    def _flush(self) -> None:
        if self.unpark:
            messages.unpark(self.conn, self.unpark)
            self.unpark = []
