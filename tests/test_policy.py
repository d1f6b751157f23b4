"""The policy file: every number of DOMAIN.md, and a typo stops the service with the key's name."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.messages import Level
from workflows.policy import Policy, PolicyError, ValidityEnds, load_policy


def bundled_yaml() -> dict[str, Any]:
    text = (Path(__file__).parent.parent / "workflows" / "policy.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def write_policy(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data), "utf-8")
    return path


def test_bundled_policy_holds_the_numbers_of_domain_md() -> None:
    policy = load_policy()
    assert policy.time_zone == "Europe/Berlin"
    assert policy.zone.key == "Europe/Berlin"
    assert policy.validity_ends is ValidityEnds.DAY
    assert policy.admission.bronze_interview_months == 6
    assert policy.admission.silver_label_months == 24
    assert policy.labels.bronze.min_indicators == 36
    assert policy.labels.silver.improvement_areas == 3
    assert policy.labels.gold.min_total_score_ratio == pytest.approx(0.8)
    for level in Level:
        rules = policy.level(level)
        assert rules.first_validity_months == 24
        assert rules.renewal_extension_months == 36
        assert rules.renewal_grace_months == 12
    assert policy.label_renewal_months == 12
    assert policy.reminder_days_before == (90, 30)
    assert policy.exclude_after_breach_months is None
    assert policy.park_ttl == timedelta(days=7)


def test_a_policy_file_given_by_path_is_loaded_instead_of_the_bundled_one(
    tmp_path: Path,
) -> None:
    data = bundled_yaml()
    data["admission"]["bronze_interview_months"] = 3
    data["validity_ends"] = "month_end"
    data["exclude_after_breach_months"] = 6
    data["park_ttl"] = "PT36H"
    policy = load_policy(write_policy(tmp_path, data))
    assert policy.admission.bronze_interview_months == 3
    assert policy.validity_ends is ValidityEnds.MONTH_END
    assert policy.exclude_after_breach_months == 6
    assert policy.park_ttl == timedelta(hours=36)


def test_the_bundled_file_loaded_by_path_equals_the_default(tmp_path: Path) -> None:
    assert load_policy(write_policy(tmp_path, bundled_yaml())) == load_policy()


def test_reminder_offsets_are_deduplicated_and_fire_earliest_first(tmp_path: Path) -> None:
    data = bundled_yaml()
    data["reminder_days_before"] = [30, 90, 7, 30]
    policy = load_policy(write_policy(tmp_path, data))
    assert policy.reminder_days_before == (90, 30, 7)


def test_no_reminders_is_a_valid_policy(tmp_path: Path) -> None:
    data = bundled_yaml()
    data["reminder_days_before"] = []
    assert load_policy(write_policy(tmp_path, data)).reminder_days_before == ()


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[leaf] = value


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("admission.bronze_interview_months", "six"),
        ("admission.bronze_interview_months", 0),
        ("labels.bronze.min_indicators", -36),
        ("labels.gold.min_total_score_ratio", 1.5),
        ("labels.silver.renewal_grace_months", -1),
        ("validity_ends", "week_end"),
        ("label_renewal_months", None),
        ("exclude_after_breach_months", 0),
        ("reminder_days_before", [90, -30]),
    ],
)
def test_a_bad_value_is_a_policy_error_naming_its_key(tmp_path: Path, key: str, value: Any) -> None:
    data = bundled_yaml()
    _set(data, key, value)
    with pytest.raises(PolicyError, match=re.escape(key) + r"\b"):
        load_policy(write_policy(tmp_path, data))


def test_an_unknown_key_is_a_policy_error_naming_it(tmp_path: Path) -> None:
    data = bundled_yaml()
    data["labels"]["bronze"]["min_indicator"] = 30  # a typo of min_indicators
    with pytest.raises(PolicyError, match=r"labels\.bronze\.min_indicator\b"):
        load_policy(write_policy(tmp_path, data))


def test_an_unknown_top_level_key_is_a_policy_error_naming_it(tmp_path: Path) -> None:
    data = bundled_yaml()
    data["reminder_days"] = [60]
    with pytest.raises(PolicyError, match="reminder_days"):
        load_policy(write_policy(tmp_path, data))


def test_a_missing_key_is_a_policy_error_naming_it(tmp_path: Path) -> None:
    data = bundled_yaml()
    del data["admission"]["silver_label_months"]
    with pytest.raises(PolicyError, match=r"admission\.silver_label_months"):
        load_policy(write_policy(tmp_path, data))


def test_an_unknown_time_zone_is_a_policy_error_naming_the_key(tmp_path: Path) -> None:
    data = bundled_yaml()
    data["time_zone"] = "Europe/Nuremberg"
    with pytest.raises(PolicyError, match=r"time_zone.*Europe/Nuremberg"):
        load_policy(write_policy(tmp_path, data))


@pytest.mark.parametrize("ttl", ["-P1D", "PT0S"])
def test_a_negative_or_zero_park_ttl_is_a_policy_error_naming_the_key(
    tmp_path: Path, ttl: str
) -> None:
    data = bundled_yaml()
    data["park_ttl"] = ttl
    with pytest.raises(PolicyError, match="park_ttl"):
        load_policy(write_policy(tmp_path, data))


def test_the_error_names_the_file(tmp_path: Path) -> None:
    data = bundled_yaml()
    data["time_zone"] = "Mars/Olympus"
    path = write_policy(tmp_path, data)
    with pytest.raises(PolicyError, match=str(path)):
        load_policy(path)


def test_a_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nowhere\.yaml"):
        load_policy(tmp_path / "nowhere.yaml")


def test_a_file_that_is_not_yaml_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("time_zone: [Europe/Berlin\n", "utf-8")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(path)


def test_a_file_that_is_not_a_mapping_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("- 90\n- 30\n", "utf-8")
    with pytest.raises(PolicyError, match="expected a mapping"):
        load_policy(path)


def test_the_policy_is_immutable() -> None:
    policy = load_policy()
    with pytest.raises(ValueError, match="frozen"):
        policy.label_renewal_months = 1
    assert isinstance(policy, Policy)
