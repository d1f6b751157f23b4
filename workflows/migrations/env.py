"""Alembic environment: runs on the engine the caller passes in, never a URL from an ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from workflows.store.tables import metadata

engine: Engine | None = context.config.attributes.get("engine")
if engine is None:
    from sqlalchemy import create_engine

    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "sqlite://")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
