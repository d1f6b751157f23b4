"""What the `gocluster` commands share: parameter types, and one-line errors for a
bad configuration or an unreachable database."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import click
import structlog
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from consumers.bootstrap import build
from consumers.config import REDACTED, Settings
from consumers.tracing import TracingError
from workflows.dates import parse_instant
from workflows.policy import PolicyError
from workflows.store.database import SchemaOutOfDate


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


def build_app(**kwargs: Any) -> Any:
    """The service's parts for a command; configuration and database problems end it
    in one line."""
    settings = settings_or_exit()
    try:
        return build(settings, **kwargs)
    except (PolicyError, SchemaOutOfDate, TracingError) as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise database_problem(settings, exc) from None
