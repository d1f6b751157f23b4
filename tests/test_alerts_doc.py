"""docs/alerts.md names what to page for; deploy/prometheus/gocluster-alerts.yaml is the
rule file. The doc's expression table must be that file's rules, alert for alert, and
every alert must have its reason in the doc (promtool checks the file itself:
tests/test_deploy_prometheus.py)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy_files import PROMETHEUS, load_all

DOC = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"


def _rules() -> dict[str, tuple[str, str, str]]:
    (rules,) = load_all(PROMETHEUS / "gocluster-alerts.yaml")
    return {
        rule["alert"]: (
            " ".join(rule["expr"].split()),
            rule.get("for", "-"),
            rule["labels"]["severity"],
        )
        for group in rules["groups"]
        for rule in group["rules"]
    }


def _table_rows(header: str) -> list[list[str]]:
    """The rows of the doc's table whose header line is `header`."""
    lines = DOC.read_text("utf-8").splitlines()
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_doc_states_each_rule_of_the_rule_file_with_its_expression() -> None:
    rows = _table_rows("| alert | expression | for | severity |")
    documented = {name: (expr.strip("`"), for_, severity) for name, expr, for_, severity in rows}
    assert documented == _rules()


def test_the_doc_says_why_each_alert_pages() -> None:
    rows = _table_rows("| alert | why it pages |")
    reasons = {name: why for name, why in rows}
    assert set(reasons) == set(_rules())
    assert all(len(why) > 20 for why in reasons.values())


def test_every_runbook_section_the_rules_point_to_exists() -> None:
    (rules,) = load_all(PROMETHEUS / "gocluster-alerts.yaml")
    wanted = {
        re.fullmatch(r"docs/operations\.md \((.+)\)", rule["annotations"]["runbook"]).group(1)
        for group in rules["groups"]
        for rule in group["rules"]
    }
    runbook = (DOC.parent / "operations.md").read_text("utf-8").lower()
    missing = {section for section in wanted if f"### {section}" not in runbook}
    assert not missing, f"docs/operations.md lacks sections: {sorted(missing)}"
