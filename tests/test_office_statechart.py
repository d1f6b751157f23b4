"""The dashboard's statechart follows the machine; its words exist in both languages."""

from __future__ import annotations

from datetime import date
from itertools import combinations

from office import statechart
from office.i18n import CODES, LANGUAGES, WORDS, Translator
from schemas.messages import EventType, Level
from workflows.aggregate import (
    LabelStatus,
    MemberState,
    ObligationKind,
    ObligationStatus,
    TimerKind,
)
from workflows.membership import MembershipMachine


def test_every_state_and_every_state_changing_transition_is_drawn() -> None:
    chart = statechart.chart()
    assert {n.id for n in chart.nodes} == {s.id for s in MembershipMachine.states}
    expected = {
        (t.source.id, t.target.id)
        for s in MembershipMachine.states
        for t in s.transitions
        if t.source.id != t.target.id
    }
    assert {(e.source, e.target) for e in chart.edges} == expected
    by_pair = {(e.source, e.target): e.events for e in chart.edges}
    assert by_pair[("in_breach", "admitted")] == ("complete_interview",)
    assert by_pair[("excluded", "applied")] == ("submit",)
    assert [n.id for n in chart.nodes if n.initial] == ["unknown"]


def test_states_do_not_overlap_and_fit_the_picture() -> None:
    chart = statechart.chart()
    for a, b in combinations(chart.nodes, 2):
        apart_x = abs(a.x - b.x) >= chart.node_width + 20
        apart_y = abs(a.y - b.y) >= chart.node_height + 20
        assert apart_x or apart_y, (a.id, b.id)
    for n in chart.nodes:
        assert n.left >= 0
        assert n.top >= 0
        assert n.left + chart.node_width <= chart.width
        assert n.top + chart.node_height <= chart.height
    for e in chart.edges:
        assert 0 <= e.label_x <= chart.width, e
        assert 0 <= e.label_y <= chart.height, e


def test_both_languages_name_every_code_the_pages_show() -> None:
    codes = [
        *MemberState,
        *Level,
        *LabelStatus,
        *ObligationKind,
        *ObligationStatus,
        *TimerKind,
        *(str(event) for e in statechart.chart().edges for event in e.events),
        *(t.value for t in EventType),
        *(f"timer.{kind}" for kind in TimerKind),
    ]
    missing = sorted({str(c) for c in codes} - set(CODES))
    assert missing == []
    for entries in (CODES, WORDS):
        for key, texts in entries.items():
            assert len(texts) == len(LANGUAGES), key
            assert all(text.strip() for text in texts), key


def test_german_is_the_default_and_dates_follow_the_language() -> None:
    assert Translator("fr").lang == "de"
    assert Translator("de").date(date(2026, 12, 1)) == "01.12.2026"
    assert Translator("en").date(date(2026, 12, 1)) == "2026-12-01"
    assert Translator("de").code("in_breach") == "im Fristverstoß"
    assert Translator("en")("overdue_by", n=3) == "overdue by 3 days"
