"""Calendar arithmetic and the service clock.

Deadlines in the programme are calendar months and whole days in the policy's
time zone; a due date D passes at the start of D+1 there. Keeping that logic
here, and the clock injectable, is what makes replays reproducible.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo


def add_months(day: date, months: int) -> date:
    """Calendar months, clamped to the target month's last day (Feb 29 + 12 = Feb 28)."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def month_end(day: date) -> date:
    return date(day.year, day.month, calendar.monthrange(day.year, day.month)[1])


def start_of_day(day: date, zone: ZoneInfo) -> datetime:
    """The instant (UTC) a local calendar day begins; DST-safe via zoneinfo."""
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def passes_at(due_on: date, zone: ZoneInfo) -> datetime:
    """A due date D is met through D and passes at the start of D+1."""
    return start_of_day(due_on + timedelta(days=1), zone)


def parse_instant(text: str) -> datetime:
    """RFC 3339 / ISO 8601 instant for the command line; a bare date means its UTC midnight."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class Clock(Protocol):
    def now(self) -> datetime: ...


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to: simulation, backfill and tests."""

    def __init__(self, at: datetime) -> None:
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = at.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self._at += delta
