"""deploy/prometheus: the alert rules, checked and unit-tested by promtool.

`promtool test rules` runs gocluster-alerts.test.yaml, where each alert fires on a
synthetic series of its failure and stays silent on a healthy one; this file also
checks that every alert has both cases, and that promtool does fail a wrong
expectation (so a passing run means something).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.deploy_files import PROMETHEUS, load_all
from tests.tools import command, run

RULES = PROMETHEUS / "gocluster-alerts.yaml"
RULE_TESTS = PROMETHEUS / "gocluster-alerts.test.yaml"
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "info": ("_info",),
}
REQUIRED_ALERTS = {  # what the issue asks alerts for
    "GoclusterConsumerLagGrowing",
    "GoclusterTimersOverdue",
    "GoclusterDeadLetters",
    "GoclusterOutboxBacklog",
    "GoclusterNotReady",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    return command("promtool", "Debian's prometheus package; scripts/ensure-test-machine.sh")


def _alerts() -> dict[str, dict[str, Any]]:
    (rules,) = load_all(RULES)
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_each_alert_fires_and_stays_silent_as_its_unit_tests_expect(promtool: str) -> None:
    result = run([promtool, "test", "rules", str(RULE_TESTS)], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_fails_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    (tests,) = load_all(RULE_TESTS)
    tests["rule_files"] = [str(RULES)]
    expectation = tests["tests"][0]["alert_rule_test"][-1]["exp_alerts"][0]
    expectation["exp_labels"]["severity"] = "page"
    wrong = tmp_path / "wrong.test.yaml"
    wrong.write_text(yaml.safe_dump(tests))
    result = run([promtool, "test", "rules", str(wrong)])
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    alerts = _alerts()
    assert set(alerts) >= REQUIRED_ALERTS
    (tests,) = load_all(RULE_TESTS)
    fires: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    assert fires == set(alerts)
    assert silent == set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(gocluster_[a-z_]+)\b", expr))


def test_the_rules_use_only_metrics_the_service_exports() -> None:
    from consumers.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    # By family, not sample: a labelled metric has no sample before its first labels.
    exported = {
        family.name + suffix
        for family in registry.collect()
        for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))
    }
    used = set().union(*(_metric_names(rule["expr"]) for rule in _alerts().values()))
    assert used
    assert used <= exported
