"""The deployment artifacts as the tests read them (Dockerfile, compose, manifests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

from tests.tools import REPO

DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"


def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[dict[str, Any]]]:
    """Instructions (dockerfile-parse's dicts) per build stage, comments left out."""
    stages: list[list[dict[str, Any]]] = []
    for instruction in DockerfileParser(path=str(path)).structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def image_user() -> str:
    """The USER the final stage runs as (the last USER instruction)."""
    users = [i["value"] for i in dockerfile_stages()[-1] if i["instruction"] == "USER"]
    return users[-1] if users else "root"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
