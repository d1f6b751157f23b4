"""docs/alerts.md holds the alert rules as a Prometheus rule file; promtool checks them,
and every gocluster metric they name is one the service exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumers.metrics import Metrics

DOC = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"


def _rules() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text("utf-8"), re.DOTALL)
    assert len(blocks) == 1, "docs/alerts.md has one yaml block: the rules"
    return str(blocks[0])


def test_the_alert_rules_in_the_docs_are_valid_for_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/ensure-test-machine.sh installs it)")
    rules = tmp_path / "gocluster.rules.yml"
    rules.write_text(_rules(), "utf-8")
    done = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout


def test_every_gocluster_metric_the_rules_name_is_exported() -> None:
    named = set(re.findall(r"\b(gocluster_[a-z_]+)\b", _rules()))
    registry = CollectorRegistry()
    Metrics(registry)
    exported: set[str] = set()
    for family in registry.collect():
        exported |= {family.name} | {sample.name for sample in family.samples}
        if family.type == "counter":  # a labelled counter has no sample before its first use
            exported.add(f"{family.name}_total")
    assert named, "the rules name gocluster metrics"
    assert named <= exported, named - exported
