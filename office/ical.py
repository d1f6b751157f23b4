"""Open deadlines as an iCalendar file, for a programme officer's calendar.

One all-day VEVENT per open obligation on its due date. Its UID is the
obligation's id, a name-based UUID of cluster, application cycle, obligation
and due date: the same on every request and every replay, so a subscribed
calendar updates an event in place instead of duplicating it, and drops it
once the obligation is met (it leaves the feed).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from icalendar import Calendar, Event

from office.i18n import Translator
from office.models import Deadline

PRODID = "-//gocluster//programme office//DE"
UID_DOMAIN = "gocluster"


def uid(deadline: Deadline) -> str:
    return f"{deadline.uid}@{UID_DOMAIN}"


def calendar(deadlines: Sequence[Deadline], stamp: datetime, lang: str) -> bytes:
    t = Translator(lang)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", t("cal_name"))
    for d in deadlines:
        name = d.cluster_name or d.cluster_id
        summary = t("cal_summary", cluster=name, obligation=t.code(d.obligation))
        if d.status == "breached":
            summary = f"{t('cal_breached')}: {summary}"
        event = Event()
        event.add("uid", uid(d))
        event.add("dtstamp", stamp)
        event.add("dtstart", d.due_on)
        event.add("dtend", d.due_on + timedelta(days=1))
        event.add("summary", summary)
        event.add(
            "description",
            f"{t('cluster_id')}: {d.cluster_id}\n{t('obligation')}: {d.obligation}\n"
            f"{t('status')}: {t.code(d.status)}",
        )
        event.add("categories", [str(d.obligation)])
        event.add("transp", "TRANSPARENT")  # a due date, not a meeting: it blocks no time
        cal.add_component(event)
    body: bytes = cal.to_ical()
    return body
