"""The composition root: configuration in, a wired application out.

Nothing connects at import time; every long-lived object (database engine,
policy, clock, workflow) is built here and handed to the loops that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Engine

from consumers.config import Settings
from consumers.tracing import Tracing, from_environment
from office.programme import ProgrammeOffice
from workflows.dates import Clock, WallClock
from workflows.engine import Workflow
from workflows.policy import Policy, load_policy
from workflows.store.database import (
    create_db_engine,
    create_read_engine,
    ensure_schema,
    require_current_schema,
)


@dataclass
class App:
    settings: Settings
    policy: Policy
    db: Engine
    clock: Clock
    workflow: Workflow
    tracing: Tracing

    def close(self) -> None:
        self.db.dispose()
        self.tracing.shutdown()  # exports the spans still buffered


def build(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    mark_sent: bool = False,
    migrate: bool = True,
    tracing: Tracing | None = None,
) -> App:
    """`tracing` None: as the OTEL_* variables say (off unless an exporter is named)."""
    settings = settings or Settings()
    tracing = tracing or from_environment()
    policy = load_policy(settings.policy)
    db = create_db_engine(settings.database_url, limits=settings.session_limits())
    if migrate:
        ensure_schema(db)
    clock = clock or WallClock()
    workflow = Workflow(
        db,
        policy,
        clock,
        settings.service_source,
        mark_sent=mark_sent,
        schema_base=settings.schema_base_url,
    )
    return App(settings, policy, db, clock, workflow, tracing)


def build_office(settings: Settings, *, today: date | None = None) -> ProgrammeOffice:
    """The programme office's views, on a read-only engine: they never migrate or write."""
    policy = load_policy(settings.policy)
    db = create_read_engine(settings.database_url)
    try:
        require_current_schema(db)
    except BaseException:
        db.dispose()
        raise
    return ProgrammeOffice(db, policy, WallClock(), today or settings.office_today)
