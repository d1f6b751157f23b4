"""The programme office's commands: `clusters`, `deadlines` and `serve` (office/)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import click
from sqlalchemy.exc import SQLAlchemyError

from consumers.bootstrap import build_office
from consumers.cli_support import Day, database_problem, settings_or_exit, warn_unknown_env
from consumers.logs import configure_logging
from office import terminal
from office.programme import ProgrammeOffice, WindowError
from schemas.messages import Level
from workflows.aggregate import MemberState
from workflows.policy import PolicyError
from workflows.store.database import SchemaOutOfDate

TODAY_HELP = "Take this day as today (default: GOCLUSTER_OFFICE_TODAY, else the wall clock)."
STATES = sorted(s.value for s in MemberState if s is not MemberState.UNKNOWN)


@click.command(name="clusters")
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


@click.command(name="deadlines")
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


@click.command(name="serve")
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
