"""The operator's commands: `parked`, `dlq list`, `dlq redrive` and `prune`."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy.exc import SQLAlchemyError

from consumers import parked
from consumers.cli_support import (
    Instant,
    build_app,
    database_problem,
    settings_or_exit,
    warn_unknown_env,
)
from consumers.config import Settings
from consumers.logs import configure_logging
from consumers.records import DLQ_ERROR_CLASSES
from workflows.store.retention import prune as prune_rows

if TYPE_CHECKING:
    from consumers.dlq import DlqRecord


@click.command(name="parked")
@click.option("--cluster", "cluster_id", default=None, help="Only this cluster's.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
def parked_events(cluster_id: str | None, as_json: bool) -> None:
    """Parked events: what waits, since when, and for what (oldest first)."""
    app = build_app()
    try:
        click.echo(parked.render(app, parked.parked_rows(app, cluster_id), as_json=as_json))
    finally:
        app.close()


@click.group(name="dlq")
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
    app = build_app()
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


@click.command()
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
def prune(dry_run: bool) -> None:
    """Delete rows past their retention horizon (GOCLUSTER_RETENTION_*), in batches."""
    configure_logging(sys.stderr)
    warn_unknown_env()
    app = build_app()
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
