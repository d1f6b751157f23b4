"""The `gocluster` command (CONTRACT.md section 6)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
import structlog
from alembic.util import CommandError
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from consumers import offline, parked, show
from consumers.bootstrap import build, build_office
from consumers.config import LOOPS, REDACTED, Settings
from consumers.logs import configure_logging
from consumers.records import DLQ_ERROR_CLASSES
from consumers.tracing import TracingError
from office import terminal
from office.programme import ProgrammeOffice, WindowError
from schemas.messages import Level
from workflows.aggregate import MemberState
from workflows.dates import FixedClock, parse_instant
from workflows.policy import PolicyError
from workflows.store.database import (
    SchemaOutOfDate,
    create_db_engine,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from workflows.store.retention import prune as prune_rows

if TYPE_CHECKING:
    from consumers.dlq import DlqRecord

# Kafka, the HTTP server and the service's loops are imported by the commands that use
# them: `replay`, `show` and the other offline commands start without them.


class Instant(click.ParamType):  # type: ignore[type-arg]
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return parse_instant(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date or time (e.g. 2027-09-10T00:00:00Z)")


class Day(click.ParamType):  # type: ignore[type-arg]
    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date YYYY-MM-DD")


def settings_or_exit() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(f"configuration: {config_problems(exc)}") from None


_SETTING_NAME = re.compile(
    r"\b(" + "|".join(sorted(Settings.model_fields, key=len, reverse=True)) + r")\b"
)


def config_problems(exc: ValidationError) -> str:
    """Every problem, each setting named by the environment variable an operator sets;
    a check across settings (no field location) names the variables in its message."""
    problems = []
    for error in exc.errors():
        message = _SETTING_NAME.sub(
            lambda m: f"GOCLUSTER_{m.group(1).upper()}", error["msg"].removeprefix("Value error, ")
        )
        if error["loc"]:
            message = f"GOCLUSTER_{'_'.join(str(p) for p in error['loc']).upper()}: {message}"
        problems.append(message)
    return "; ".join(problems)


def warn_unknown_env() -> None:
    """A misspelt GOCLUSTER_* variable sets nothing; say so instead of silently using a default."""
    if unknown := Settings.unknown_env():
        structlog.get_logger().warning("unknown GOCLUSTER_* variables ignored", names=unknown)


def database_problem(settings: Settings, exc: Exception) -> click.ClickException:
    """A database that cannot be reached at start: one line naming it, password hidden."""
    reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    password = make_url(settings.database_url).password
    if password:  # drivers do not quote it today; make sure of it
        reason = reason.replace(str(password), REDACTED)
    return click.ClickException(f"database {settings.redacted_database_url()}: {reason}")


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
    app = _build(mark_sent=True, clock=None if now is None else FixedClock(now))
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
    app = _build(clock=FixedClock(now))
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
    app = _build()
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


# -- the programme office's views (office/) -------------------------------------

TODAY_HELP = "Take this day as today (default: GOCLUSTER_OFFICE_TODAY, else the wall clock)."
STATES = sorted(s.value for s in MemberState if s is not MemberState.UNKNOWN)


@main.command(name="clusters")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="Repeatable.")
@click.option("--label", type=click.Choice([lv.value for lv in Level]), help="Holding it, valid.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--today", type=Day(), help=TODAY_HELP)
def list_clusters(
    states: tuple[str, ...], label: str | None, as_json: bool, today: date | None
) -> None:
    """Clusters with state, labels (and until when) and their next open deadline."""
    with _office(today) as office:
        found = office.clusters(states, Level(label) if label else None)
    click.echo(terminal.as_json(found) if as_json else terminal.clusters_table(found))


@main.command(name="deadlines")
@click.option("--from", "start", type=Day(), help="First due date (default: today).")
@click.option("--until", type=Day(), help="Last due date (default: --from + 90 days).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--ics", is_flag=True, help="iCalendar, one event per open obligation.")
@click.option("--lang", type=click.Choice(["de", "en"]), default="de", help="Language of --ics.")
@click.option("--today", type=Day(), help=TODAY_HELP)
def list_deadlines(
    start: date | None,
    until: date | None,
    as_json: bool,
    ics: bool,
    lang: str,
    today: date | None,
) -> None:
    """Open obligations (unmet, not cancelled; breached ones too) due in the window.

    Overdue ones appear in every window that contains today, whatever their due date.
    """
    if as_json and ics:
        raise click.UsageError("--json and --ics exclude each other")
    with _office(today) as office:
        try:
            window = office.window(start, until)
        except WindowError as exc:
            raise click.UsageError(str(exc)) from None
        found = office.deadlines(window)
        if ics:
            from office import ical

            sys.stdout.buffer.write(ical.calendar(found, office.clock.now(), lang))
            return
    click.echo(terminal.as_json(found) if as_json else terminal.deadlines_table(found))


@main.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Elsewhere needs a token.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--today", type=Day(), help=TODAY_HELP)
def serve_office(host: str, port: int, today: date | None) -> None:
    """The views over HTTP (API, iCalendar, dashboard), read-only, until SIGTERM/SIGINT."""
    from office import server

    configure_logging()
    warn_unknown_env()
    settings = settings_or_exit()
    token = settings.http_token.get_secret_value() if settings.http_token else None
    try:
        server.check_bind(host, token)
    except server.UnsafeBind as exc:
        raise click.ClickException(str(exc)) from None
    with _office(today) as office:
        try:
            server.serve(office, host, port, token, settings.schema_base_url)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@contextmanager
def _office(today: date | None) -> Iterator[ProgrammeOffice]:
    """The office on the configured database; its problems end the command in one line."""
    settings = settings_or_exit()
    try:
        office = build_office(settings, today=today)
    except (PolicyError, SchemaOutOfDate) as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise database_problem(settings, exc) from None
    try:
        yield office
    except SQLAlchemyError as exc:
        raise database_problem(settings, exc) from None
    finally:
        office.close()


@main.command(name="parked")
@click.option("--cluster", "cluster_id", default=None, help="Only this cluster's.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
def parked_events(cluster_id: str | None, as_json: bool) -> None:
    """Parked events: what waits, since when, and for what (oldest first)."""
    app = _build()
    try:
        click.echo(parked.render(app, parked.parked_rows(app, cluster_id), as_json=as_json))
    finally:
        app.close()


@main.group(name="dlq")
def dlq_group() -> None:
    """Read the dead-letter topic; re-publish from it after a fix."""


_CLASS = click.Choice(sorted(DLQ_ERROR_CLASSES))


@dlq_group.command(name="list")
@click.option("--class", "error_class", type=_CLASS, help="Only this error class.")
@click.option("--since", type=Instant(), help="Only records DLQ'd at or after this time.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
def dlq_list(error_class: str | None, since: datetime | None, as_json: bool) -> None:
    """The DLQ's records: when, class, message, where from, which event."""
    configure_logging(sys.stderr)
    settings = settings_or_exit()
    for record in _read_dlq(settings, error_class, since):
        item = record.summary()
        click.echo(json.dumps(item, ensure_ascii=False) if as_json else _dlq_line(item))


@dlq_group.command(name="redrive")
@click.option("--class", "error_class", type=_CLASS, help="Only this error class.")
@click.option("--since", type=Instant(), help="Only records DLQ'd at or after this time.")
@click.option("--dry-run", is_flag=True, help="Show what would be re-published; publish nothing.")
def dlq_redrive(error_class: str | None, since: datetime | None, dry_run: bool) -> None:
    """Re-publish DLQ'd records to their original topic (original key, value, headers).

    Safe to repeat: events the service already received are skipped by its inbox.
    """
    from kafka.errors import KafkaError

    from consumers import dlq as dlq_topic

    configure_logging(sys.stderr)
    settings = settings_or_exit()
    records = _read_dlq(settings, error_class, since)
    app = _build()
    try:
        received = dlq_topic.inbox_outcomes(app, records)
    finally:
        app.close()
    chosen = []
    for record, note in dlq_topic.plan(records, received):
        item = record.summary()
        click.echo(f"{_dlq_line(item)}  -> {item['original'].split('@')[0]}  [{note}]")
        if record.redrivable() is None:
            chosen.append(record)
    if dry_run:
        click.echo(f"dry run: {len(chosen)} of {len(records)} records would be re-published")
        return
    try:
        sent = dlq_topic.redrive(settings, chosen)
    except KafkaError as exc:
        raise click.ClickException(f"redrive failed: {exc}") from None
    click.echo(f"re-published {sent} of {len(records)} records")


def _read_dlq(
    settings: Settings, error_class: str | None, since: datetime | None
) -> list[DlqRecord]:
    from kafka.errors import KafkaError

    from consumers import dlq as dlq_topic
    from consumers.broker_probe import unreachable

    if problem := unreachable(settings):
        raise click.ClickException(problem)
    try:
        return list(dlq_topic.read(settings, error_class=error_class, since=since))
    except KafkaError as exc:
        raise click.ClickException(f"reading {settings.topic_dlq}: {exc}") from None


def _dlq_line(item: dict[str, Any]) -> str:
    what = f"{item['type']} {item['event_id']}" if item["event_id"] else "(not an event)"
    message = (item["error_message"] or "").replace("\n", " ")
    return (
        f"{item['time'][:19]}Z  {item['error_class']:<18} {item['original']:<40} "
        f"key={item['key']}  {what}  {message}"
    )


@main.command()
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
def prune(dry_run: bool) -> None:
    """Delete rows past their retention horizon (GOCLUSTER_RETENTION_*), in batches."""
    configure_logging(sys.stderr)
    warn_unknown_env()
    app = _build()
    horizons = app.settings.retention()
    try:
        deleted = prune_rows(
            app.db, horizons, app.clock.now(), batch=app.settings.retention_batch, dry_run=dry_run
        )
    except SQLAlchemyError as exc:
        raise database_problem(app.settings, exc) from None
    finally:
        app.close()
    from consumers import retention_loop

    for line in retention_loop.report(deleted, horizons, dry_run=dry_run):
        click.echo(line)


def _build(**kwargs: Any) -> Any:
    settings = settings_or_exit()
    try:
        return build(settings, **kwargs)
    except (PolicyError, SchemaOutOfDate, TracingError) as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise database_problem(settings, exc) from None


if __name__ == "__main__":
    main()
