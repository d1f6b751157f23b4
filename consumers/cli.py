"""The `gocluster` command (CONTRACT.md section 6)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import IO

import click
import structlog
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from consumers import cli_office, cli_ops, offline, show
from consumers.cli_support import (
    Instant,
    build_app,
    database_problem,
    settings_or_exit,
    warn_unknown_env,
)
from consumers.config import LOOPS
from consumers.logs import configure_logging
from consumers.tracing import TracingError
from workflows.dates import FixedClock
from workflows.policy import PolicyError
from workflows.store.database import (
    SchemaOutOfDate,
    create_db_engine,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)

# Kafka, the HTTP server and the service's loops are imported by the commands that use
# them: `replay`, `show` and the other offline commands start without them.


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gocluster")
def main() -> None:
    """gocluster: go-cluster membership and ECEI label workflow."""


@main.command()
@click.argument("source", type=click.File("rb"))
@click.option(
    "--now",
    "now",
    type=Instant(),
    help="The service clock (default: the wall clock); then fire every timer due up to it.",
)
@click.option(
    "--dlq",
    "dlq",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="Where rejected lines go, as JSON Lines (default: stderr).",
)
@click.option(
    "--batch",
    default=500,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Events per database transaction.",
)
def replay(source: IO[bytes], now: datetime | None, dlq: IO[str], batch: int) -> None:
    """Apply a JSON Lines file of CloudEvents (or - for stdin) without Kafka.

    Output events go to stdout as JSON Lines, in the order they were produced.
    """
    configure_logging(sys.stderr)
    warn_unknown_env()
    if getattr(dlq, "name", None) == "<stdout>":
        dlq = sys.stderr
    app = build_app(mark_sent=True, clock=None if now is None else FixedClock(now))
    try:
        stats = offline.replay(app, source, sys.stdout, dlq, batch, now)
    finally:
        app.close()
    structlog.get_logger().info("replay finished", **stats)


@main.command()
@click.option("--now", "now", type=Instant(), required=True, help="Fire timers due up to this.")
@click.option(
    "--publish/--no-publish",
    default=True,
    show_default=True,
    help="Publish what fired to Kafka now (else the next `run` does).",
)
@click.option(
    "--publish-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="Seconds to keep trying the broker before giving up.",
)
def tick(now: datetime, publish: bool, publish_timeout: float) -> None:
    """Fire every timer due up to --now and publish the results, then exit."""
    from consumers.broker_probe import unreachable

    configure_logging(sys.stderr)
    warn_unknown_env()
    if publish and (problem := unreachable(settings_or_exit(), min(10.0, publish_timeout))):
        raise click.ClickException(
            f"{problem}; nothing was fired. Start the broker, or fire now and publish with "
            "the next `gocluster run`: gocluster tick --no-publish --now ..."
        )
    app = build_app(clock=FixedClock(now))
    try:
        stats = offline.tick(app, now, sys.stderr)
        if publish:
            stats |= offline.publish(app, publish_timeout)
    finally:
        app.close()
    structlog.get_logger().info("tick finished", **stats)
    if stats.get("unpublished"):
        raise click.ClickException(
            f"{stats['unpublished']} output events could not be published within "
            f"{publish_timeout:g} s; they stay in the outbox for the next run"
        )


@main.command()
@click.option(
    "--clock",
    "clock_mode",
    type=click.Choice(["wall", "event"]),
    default="wall",
    show_default=True,
    help="wall: timers fire by the wall clock; event: only by event time and tick.",
)
@click.option(
    "--create-topics/--no-create-topics",
    default=False,
    show_default=True,
    help="Create the six topics at start if they do not exist.",
)
@click.option(
    "--partitions",
    default=6,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Partitions for topics created with --create-topics.",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(sorted(LOOPS)),
    help="Run only these loops (repeatable); default: all of them.",
)
def run(clock_mode: str, create_topics: bool, partitions: int, only: tuple[str, ...]) -> None:
    """Consume, apply, publish and fire timers until SIGTERM/SIGINT."""
    from consumers import service

    configure_logging()
    warn_unknown_env()
    settings = settings_or_exit()
    try:
        code = service.run(
            settings,
            clock_mode=clock_mode,
            create=create_topics,
            partitions=partitions,
            loops=frozenset(only) or LOOPS,
        )
    except (PolicyError, SchemaOutOfDate, TracingError) as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's SQLite database in this folder.",
)
def demo(keep: Path | None) -> None:
    """The whole pipeline on an embedded broker and SQLite, with the sample story."""
    from consumers.demo import main as run_demo  # the demo's imports only load when asked for

    sys.exit(run_demo(keep))


@main.command(name="show")
@click.argument("cluster_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_cluster(cluster_id: str, as_json: bool) -> None:
    """State, labels, pending deadlines and history of one cluster."""
    app = build_app()
    try:
        text = show.render(app, cluster_id, as_json=as_json)
    finally:
        app.close()
    if text is None:
        raise click.ClickException(
            f"no cluster {cluster_id!r} in {app.settings.redacted_database_url()}"
        )
    click.echo(text)


@main.group()
def db() -> None:
    """Database schema management."""


@db.command(name="upgrade")
def db_upgrade() -> None:
    """Migrate the configured database to the current schema (Alembic)."""
    settings = settings_or_exit()
    engine = create_db_engine(settings.database_url)
    try:
        upgrade(engine)
    except SQLAlchemyError as exc:
        raise database_problem(settings, exc) from None
    finally:
        engine.dispose()
    click.echo(f"database {settings.redacted_database_url()} is at the current schema")


@db.command(name="current")
def db_current() -> None:
    """Print the schema revision of the configured database and the code's."""
    settings = settings_or_exit()
    engine = create_db_engine(settings.database_url)
    try:
        now, head = current_revision(engine), head_revision(engine)
    except SQLAlchemyError as exc:
        raise database_problem(settings, exc) from None
    finally:
        engine.dispose()
    click.echo(f"database: {now or 'empty'}; this version needs: {head}")


@db.command(name="downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the configured database down to REVISION (for a rollback to an older version)."""
    settings = settings_or_exit()
    engine = create_db_engine(settings.database_url)
    try:
        downgrade(engine, revision)
    except SQLAlchemyError as exc:
        raise database_problem(settings, exc) from None
    except CommandError as exc:
        raise click.ClickException(f"cannot downgrade to {revision!r}: {exc}") from None
    finally:
        engine.dispose()
    click.echo(f"database {settings.redacted_database_url()} is at revision {revision}")


# The programme office's commands and the operator's live in modules of their own.
for command in (
    cli_office.list_clusters,
    cli_office.list_deadlines,
    cli_office.serve_office,
    cli_ops.parked_events,
    cli_ops.dlq_group,
    cli_ops.prune,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
