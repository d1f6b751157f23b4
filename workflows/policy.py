"""The programme policy: every number of DOMAIN.md, validated on load.

Operators edit a YAML file; a typo must stop the service at start with the
name of the bad key, not surface months later as a wrong due date.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.messages import Level


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the file and the key."""


class ValidityEnds(StrEnum):
    DAY = "day"
    MONTH_END = "month_end"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdmissionPolicy(_Strict):
    bronze_interview_months: int = Field(ge=1, le=120)
    silver_label_months: int = Field(ge=1, le=240)


class LevelPolicy(_Strict):
    first_validity_months: int = Field(ge=1, le=240)
    renewal_extension_months: int = Field(ge=1, le=240)
    renewal_grace_months: int = Field(ge=0, le=120)


class BronzePolicy(LevelPolicy):
    min_indicators: int = Field(ge=1, le=1000)


class SilverPolicy(LevelPolicy):
    improvement_areas: int = Field(ge=1, le=50)


class GoldPolicy(LevelPolicy):
    min_total_score_ratio: float = Field(gt=0, le=1)


class LabelsPolicy(_Strict):
    bronze: BronzePolicy
    silver: SilverPolicy
    gold: GoldPolicy


class Policy(_Strict):
    time_zone: str
    validity_ends: ValidityEnds
    admission: AdmissionPolicy
    labels: LabelsPolicy
    label_renewal_months: int = Field(ge=1, le=120)
    reminder_days_before: tuple[int, ...] = Field(max_length=10)
    exclude_after_breach_months: int | None = Field(default=None, ge=1, le=240)
    park_ttl: timedelta
    # CONTRACT.md section 4, the service clock: how far ahead of it an event may lie
    # and still apply at once, and how long the wall clock holds a breach back.
    max_clock_skew: timedelta = timedelta(hours=1)
    late_result_allowance: timedelta = timedelta(days=7)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("reminder_days_before")
    @classmethod
    def _positive_distinct(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(days < 1 or days > 3650 for days in value):
            raise ValueError("each reminder offset must be 1..3650 days")
        return tuple(sorted(set(value), reverse=True))

    @field_validator("park_ttl")
    @classmethod
    def _positive_ttl(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("park_ttl must be positive")
        return value

    @field_validator("max_clock_skew", "late_result_allowance")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def level(self, level: Level) -> LevelPolicy:
        found: LevelPolicy = getattr(self.labels, level.value)
        return found


def load_policy(path: Path | None = None) -> Policy:
    """Load and validate a policy file; None means the bundled default."""
    if path is None:
        text = resources.files("workflows").joinpath("policy.yaml").read_text("utf-8")
        name = "bundled policy.yaml"
    else:
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise PolicyError(f"policy file {path}: {exc.strerror or exc}") from exc
        name = str(path)
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {name}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PolicyError(
            f"policy file {name}: expected a mapping of keys, got {type(raw).__name__}"
        )
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise PolicyError(f"policy file {name}: {problems}") from exc
