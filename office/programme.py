"""The programme office's questions, each answered in one read-only transaction.

The CLI, the HTTP API and the dashboard all ask through this one object, so a
command, an HTTP call and a page give the same figures. "Today" is the
service clock's date in the policy time zone, or a fixed day for
reproducible views (`--today`, `GOCLUSTER_OFFICE_TODAY`); it is read per
question, so a long-running server moves on at midnight.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import Engine, literal, select
from sqlalchemy.exc import SQLAlchemyError

from office import readmodels, rejections
from office.models import ClusterDetail, ClusterSummary, Deadline, Overview, RejectionView
from schemas.messages import Level
from workflows.dates import Clock, local_date
from workflows.policy import Policy

DEFAULT_WINDOW_DAYS = 90


class WindowError(ValueError):
    """A deadline window that ends before it starts."""


@dataclass(frozen=True)
class Window:
    start: date
    end: date


@dataclass
class ProgrammeOffice:
    db: Engine
    policy: Policy
    clock: Clock
    fixed_today: date | None = None

    def today(self) -> date:
        return self.fixed_today or local_date(self.clock.now(), self.policy.zone)

    def window(self, start: date | None = None, end: date | None = None) -> Window:
        """The deadline window: by default the 90 days from today."""
        start = start or self.today()
        end = end or (start + timedelta(days=DEFAULT_WINDOW_DAYS))
        if end < start:
            raise WindowError(f"the window ends ({end}) before it starts ({start})")
        return Window(start, end)

    def clusters(
        self,
        states: Collection[str] = (),
        label: Level | None = None,
        search: str | None = None,
    ) -> list[ClusterSummary]:
        with self.db.connect() as conn:
            return readmodels.clusters(conn, self.today(), self.policy.zone, states, label, search)

    def cluster(self, cluster_id: str) -> ClusterDetail | None:
        with self.db.connect() as conn:
            return readmodels.cluster_detail(conn, cluster_id, self.today(), self.policy.zone)

    def deadlines(self, window: Window) -> list[Deadline]:
        with self.db.connect() as conn:
            return readmodels.deadlines(conn, self.today(), window.start, window.end)

    def overview(self) -> Overview:
        with self.db.connect() as conn:
            return readmodels.overview(conn, self.today(), self.policy.zone)

    def rejections(self, limit: int) -> list[RejectionView]:
        with self.db.connect() as conn:
            return rejections.latest(conn, limit, self.policy.zone)

    def database_ok(self) -> bool:
        """Whether the database answers; the health check's one probe."""
        try:
            with self.db.connect() as conn:
                conn.execute(select(literal(1)))
        except SQLAlchemyError:
            return False
        return True

    def close(self) -> None:
        self.db.dispose()
