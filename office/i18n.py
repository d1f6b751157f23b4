"""The dashboard's words in German and English.

German is the default: the programme's working language is German, and so
are the office's staff, its files and the names of the clusters. English is
one click away for guests and for the labelling body's international
assessors. Each entry holds both languages side by side, so one cannot be
missing; codes (states, obligations, levels) keep their API spelling in the
JSON and are only translated for display.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

LANGUAGES = ("de", "en")
DEFAULT_LANGUAGE = "de"

WORDS: dict[str, tuple[str, str]] = {
    # chrome
    "app_title": ("go-cluster Programmbüro", "go-cluster programme office"),
    "skip": ("Zum Inhalt springen", "Skip to content"),
    "nav": ("Hauptnavigation", "Main navigation"),
    "nav_overview": ("Übersicht", "Overview"),
    "nav_clusters": ("Cluster", "Clusters"),
    "nav_deadlines": ("Fristen", "Deadlines"),
    "nav_rejections": ("Abgewiesene Eingänge", "Rejected input"),
    "language": ("Sprache", "Language"),
    "today_is": ("Stichtag", "As of"),
    "footer": (
        "Nur lesend. Daten aus dem gocluster-Dienst; Maschinenzugang über /api (OpenAPI: "
        "/openapi.json).",
        "Read-only. Data from the gocluster service; machine access via /api (OpenAPI: "
        "/openapi.json).",
    ),
    # overview
    "overview": ("Programmübersicht", "Programme overview"),
    "clusters_total": ("Cluster insgesamt", "Clusters in total"),
    "by_state": ("Cluster nach Status", "Clusters by state"),
    "by_label": ("Gültige Labels nach Stufe", "Valid labels by level"),
    "count": ("Anzahl", "Count"),
    "breaches": ("Aktuelle Fristverstöße", "Current breaches"),
    "no_breaches": ("Keine Fristverstöße.", "No breaches."),
    "due_30": ("Fällig in den nächsten 30 Tagen", "Due in the next 30 days"),
    "due_90": ("Fällig in den nächsten 90 Tagen", "Due in the next 90 days"),
    "none_due": ("Nichts fällig.", "Nothing due."),
    "expiring": ("Labels, die bald ablaufen (90 Tage)", "Labels expiring soon (90 days)"),
    "none_expiring": ("Kein Label läuft bald ab.", "No label expires soon."),
    "rejections_total": ("Abgewiesene Eingänge (DLQ)", "Rejected input records (DLQ)"),
    "show_all": ("Alle anzeigen", "Show all"),
    # clusters
    "clusters": ("Cluster", "Clusters"),
    "filters": ("Filter", "Filters"),
    "search": ("Suche (ID, Name, Träger)", "Search (id, name, organisation)"),
    "state": ("Status", "State"),
    "any_state": ("alle Status", "any state"),
    "label": ("Label", "Label"),
    "any_label": ("alle", "any"),
    "apply_filters": ("Filtern", "Filter"),
    "reset": ("Zurücksetzen", "Reset"),
    "results": ("Treffer", "Results"),
    "no_clusters": ("Keine Cluster für diese Filter.", "No clusters match these filters."),
    "cluster": ("Cluster", "Cluster"),
    "cluster_id": ("Cluster-ID", "Cluster id"),
    "organisation": ("Träger", "Organisation"),
    "federal_state": ("Land", "State (Land)"),
    "current_label": ("Aktuelles Label", "Current label"),
    "next_deadline": ("Nächste Frist", "Next deadline"),
    "none": ("keine", "none"),
    # cluster page
    "admitted_on": ("Aufgenommen am", "Admitted on"),
    "cycle": ("Antragsrunde", "Application cycle"),
    "labels": ("Labels", "Labels"),
    "level": ("Stufe", "Level"),
    "awarded_on": ("Verliehen am", "Awarded on"),
    "held_at_entry": ("bei Aufnahme vorhanden", "held at entry"),
    "valid_until": ("Gültig bis", "Valid until"),
    "renewal": ("Verlängerung", "Renewal"),
    "yes": ("ja", "yes"),
    "no": ("nein", "no"),
    "obligations": ("Pflichten und Fristen", "Obligations and due dates"),
    "obligation": ("Pflicht", "Obligation"),
    "due_on": ("Fällig am", "Due on"),
    "status": ("Status", "Status"),
    "days_left": ("Tage übrig", "Days left"),
    "timers": ("Anstehende Zeitgeber", "Pending timers"),
    "timer": ("Zeitgeber", "Timer"),
    "due_at": ("Fällig um", "Due at"),
    "parked": ("Geparkte Ereignisse", "Parked events"),
    "parked_hint": (
        "Eingänge, die auf den nötigen Status warten (z. B. ein Interview vor der Aufnahme).",
        "Input waiting for the state it needs (e.g. an interview before the admission).",
    ),
    "event": ("Ereignis", "Event"),
    "event_id": ("Ereignis-ID", "Event id"),
    "source": ("Quelle", "Source"),
    "effective_at": ("Wirksam ab", "Effective at"),
    "parked_at": ("Geparkt am", "Parked at"),
    "history": ("Verlauf", "History"),
    "when": ("Wann", "When"),
    "cause": ("Anlass", "Cause"),
    "transition": ("Übergang", "Transition"),
    "note": ("Vermerk", "Note"),
    "statechart": ("Zustandsdiagramm", "Statechart"),
    "statechart_desc": (
        "Mitgliedschafts-Zustände und Übergänge; der aktuelle Zustand ist hervorgehoben: ",
        "Membership states and transitions; the current state is highlighted: ",
    ),
    "statechart_self": (
        "Übergänge ohne Zustandswechsel (Interviews, Erinnerungen, Label-Ablauf) sind nicht "
        "eingezeichnet.",
        "Transitions that keep the state (interviews, reminders, label expiry) are not drawn.",
    ),
    "not_found": ("Cluster nicht gefunden", "Cluster not found"),
    "not_found_text": ("Es gibt keinen Cluster mit der ID", "There is no cluster with the id"),
    "back_to_list": ("Zur Clusterliste", "Back to the cluster list"),
    # deadlines
    "deadlines": ("Offene Fristen", "Open deadlines"),
    "deadlines_hint": (
        "Unerfüllte, nicht aufgehobene Pflichten mit Fälligkeit im Zeitraum. Überfällige "
        "(Fristverstöße) stehen in jedem Zeitraum, der heute enthält.",
        "Unmet, not cancelled obligations due within the window. Overdue ones (breaches) "
        "appear in every window that contains today.",
    ),
    "from": ("Von", "From"),
    "until": ("Bis", "Until"),
    "show": ("Anzeigen", "Show"),
    "ics": ("Als Kalender abonnieren (iCalendar)", "Subscribe as a calendar (iCalendar)"),
    "no_deadlines": ("Keine offenen Fristen in diesem Zeitraum.", "No open deadlines here."),
    "bad_window": (
        "Ungültiger Zeitraum (Datum als JJJJ-MM-TT, Beginn nicht nach dem Ende); gezeigt "
        "werden die 90 Tage ab heute.",
        "Invalid window (dates as YYYY-MM-DD, start not after end); showing the 90 days "
        "from today.",
    ),
    "overdue_by": ("überfällig seit {n} Tagen", "overdue by {n} days"),
    "days_to_go": ("noch {n} Tage", "{n} days left"),
    # rejections
    "rejections": ("Abgewiesene Eingänge", "Rejected input"),
    "rejections_hint": (
        "Die neuesten Datensätze der Dead-Letter-Queue mit Fehlerklasse und Meldung.",
        "The latest dead-letter-queue records with error class and message.",
    ),
    "error_class": ("Fehlerklasse", "Error class"),
    "message": ("Meldung", "Message"),
    "origin": ("Herkunft (Topic/Partition/Offset)", "Origin (topic/partition/offset)"),
    "no_rejections": ("Keine abgewiesenen Eingänge.", "No rejected input."),
    # calendar
    "cal_name": ("go-cluster Fristen", "go-cluster deadlines"),
    "cal_summary": ("{cluster}: {obligation} fällig", "{cluster}: {obligation} due"),
    "cal_breached": ("Fristverstoß", "Breached"),
}

CODES: dict[str, tuple[str, str]] = {
    # membership states
    "unknown": ("unbekannt", "unknown"),
    "applied": ("beantragt", "applied"),
    "admitted": ("aufgenommen", "admitted"),
    "in_breach": ("im Fristverstoß", "in breach"),
    "rejected": ("abgelehnt", "rejected"),
    "withdrawn": ("zurückgezogen", "withdrawn"),
    "excluded": ("ausgeschlossen", "excluded"),
    # label levels and statuses
    "bronze": ("Bronze", "Bronze"),
    "silver": ("Silber", "Silver"),
    "gold": ("Gold", "Gold"),
    "valid": ("gültig", "valid"),
    "expired": ("abgelaufen", "expired"),
    "superseded": ("ersetzt", "superseded"),
    # obligations and their statuses
    "bronze_interview": ("Bronze-Benchmarking", "Bronze benchmarking"),
    "silver_label": ("Silber-Label", "Silver label"),
    "label_renewal": ("Label-Erneuerung", "Label renewal"),
    "open": ("offen", "open"),
    "met": ("erfüllt", "met"),
    "breached": ("verletzt", "breached"),
    "cured": ("nachträglich erfüllt", "cured"),
    "cancelled": ("aufgehoben", "cancelled"),
    # timers
    "label_expiry": ("Label-Ablauf", "label expiry"),
    "reminder": ("Erinnerung", "reminder"),
    "breach": ("Fristablauf", "deadline"),
    "exclusion": ("Ausschluss", "exclusion"),
    # statechart events
    "submit": ("Antrag", "submit"),
    "assess": ("Bewertung", "assess"),
    "withdraw": ("Rückzug", "withdraw"),
    "breach_deadline": ("Frist verpasst", "deadline missed"),
    "complete_interview": ("Interview mit Label", "interview with label"),
    "exclude": ("Ausschluss", "exclude"),
    # history causes
    "gocluster.application.submitted": ("Antrag eingereicht", "Application submitted"),
    "gocluster.application.assessed": ("Antrag bewertet", "Application assessed"),
    "gocluster.application.withdrawn": ("Antrag zurückgezogen", "Application withdrawn"),
    "gocluster.interview.scheduled": ("Interview geplant", "Interview scheduled"),
    "gocluster.interview.completed": ("Interview abgeschlossen", "Interview completed"),
    "gocluster.interview.cancelled": ("Interview abgesagt", "Interview cancelled"),
    "timer.reminder": ("Erinnerung", "Reminder"),
    "timer.breach": ("Frist abgelaufen", "Deadline passed"),
    "timer.label_expiry": ("Label abgelaufen", "Label expired"),
    "timer.exclusion": ("Ausschluss", "Exclusion"),
}


def language(requested: str | None) -> str:
    return requested if requested in LANGUAGES else DEFAULT_LANGUAGE


class Translator:
    """`t("key")` for a sentence, `t.code("in_breach")` for a code; unknown codes show as is."""

    def __init__(self, lang: str) -> None:
        self.lang = language(lang)
        self._index = LANGUAGES.index(self.lang)

    def __call__(self, key: str, **values: object) -> str:
        text = WORDS[key][self._index]
        return text.format(**values) if values else text

    def code(self, value: object) -> str:
        key = str(value)
        return CODES[key][self._index] if key in CODES else key

    def date(self, day: date | None) -> str:
        if day is None:
            return "–"
        return day.strftime("%d.%m.%Y") if self.lang == "de" else day.isoformat()

    def datetime(self, instant: datetime) -> str:
        pattern = "%d.%m.%Y %H:%M" if self.lang == "de" else "%Y-%m-%d %H:%M"
        return instant.strftime(pattern)

    @property
    def filters(self) -> dict[str, Callable[..., str]]:
        return {"code": self.code, "day": self.date, "instant": self.datetime}
