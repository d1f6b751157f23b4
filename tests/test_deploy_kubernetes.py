"""deploy/kubernetes: a kustomize base checked offline.

Each manifest is validated against the Kubernetes API's JSON Schemas (the strict
ones, which refuse unknown fields) bundled in kubernetes-validate, for the oldest
release we support and the newest it knows. The base is rendered in Python (its
kustomization lists plain resources) to check what refers to what, and with
`kubectl kustomize` where the machine has kubectl.
"""

from __future__ import annotations

import copy
import shutil
from typing import Any

import kubernetes_validate
import pytest
import yaml

from consumers.config import Settings
from tests.deploy_files import KUBERNETES, image_user, load_all
from tests.tools import run

OLDEST_SUPPORTED = "1.29.0"
NEWEST_KNOWN = f"{kubernetes_validate.latest_version()}.0"
# Settings of the HTTP servers that the operator (h9) and office (h10) branches add.
HTTP_SETTINGS = {"GOCLUSTER_HTTP_PORT", "GOCLUSTER_HTTP_HOST", "GOCLUSTER_HTTP_TOKEN"}


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    (loaded,) = load_all(KUBERNETES / "kustomization.yaml")
    return loaded


@pytest.fixture(scope="module")
def objects(kustomization: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The base rendered: every object of every listed file, by (kind, name)."""
    rendered: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for obj in load_all(KUBERNETES / resource):
            key = (obj["kind"], obj["metadata"]["name"])
            assert key not in rendered, f"{key} defined twice"
            rendered[key] = obj
    return rendered


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _workloads(objects: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for (kind, _), obj in objects.items() if kind in {"Deployment", "Job"}]


def test_the_kustomization_lists_every_manifest_and_only_existing_ones(
    kustomization: dict[str, Any],
) -> None:
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == present


@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, NEWEST_KNOWN])
def test_every_manifest_is_a_valid_kubernetes_object(
    version: str, objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    for key, obj in objects.items():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{key}: {exc.message}")


def test_the_kubernetes_schemas_reject_a_misspelt_field(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    broken = copy.deepcopy(objects["Deployment", "gocluster-run"])
    probe = _pod_spec(broken)["containers"][0]["livenessProbe"]
    probe["httpGett"] = probe.pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        kubernetes_validate.validate(broken, NEWEST_KNOWN, strict=True)


def test_run_is_two_replicas_probed_on_healthz_and_readyz_and_kept_by_a_budget(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    deployment = objects["Deployment", "gocluster-run"]
    assert deployment["spec"]["replicas"] == 2
    (container,) = _pod_spec(deployment)["containers"]
    assert container["args"][0] == "run"
    config = objects["ConfigMap", "gocluster-config"]["data"]
    (port,) = container["ports"]
    assert port["containerPort"] == int(config["GOCLUSTER_HTTP_PORT"])
    assert config["GOCLUSTER_HTTP_HOST"] == "0.0.0.0"  # noqa: S104 - the kubelet probes the pod IP
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    budget = objects["PodDisruptionBudget", "gocluster-run"]
    assert budget["spec"]["minAvailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_the_migration_job_and_serve_run_their_commands(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    (job,) = [obj for (kind, _), obj in objects.items() if kind == "Job"]
    assert _pod_spec(job)["containers"][0]["args"] == ["db", "upgrade"]
    serve = objects["Deployment", "gocluster-serve"]
    (container,) = _pod_spec(serve)["containers"]
    args = container["args"]
    assert args[0] == "serve"
    (port,) = container["ports"]
    assert port["containerPort"] == int(args[args.index("--port") + 1])
    service = objects["Service", "gocluster-serve"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    pod_labels = serve["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_every_container_is_limited_unprivileged_and_on_a_read_only_root(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    uid = int(image_user().split(":")[0])
    for workload in _workloads(objects):
        pod = _pod_spec(workload)
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == uid, name
        assert pod["automountServiceAccountToken"] is False, name
        scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            assert container["image"] == "gocluster", name
            assert set(container["resources"]) == {"requests", "limits"}, name
            for part in ("requests", "limits"):
                assert set(container["resources"][part]) == {"cpu", "memory"}, name
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            # Python and its libraries need a writable /tmp on a read-only root.
            tmp = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1, name
            assert tmp[0] in scratch, name


def test_settings_come_from_the_config_map_and_secrets_only_from_the_secret(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    config = objects["ConfigMap", "gocluster-config"]["data"]
    secret = objects["Secret", "gocluster-secrets"]["stringData"]
    known = {f"GOCLUSTER_{name.upper()}" for name in Settings.model_fields} | HTTP_SETTINGS
    assert set(config) | set(secret) <= known
    assert not [key for key in config if any(w in key for w in ("PASSWORD", "TOKEN", "URL"))]
    for key, value in secret.items():
        if key != "GOCLUSTER_KAFKA_SASL_USERNAME":
            assert "CHANGE_ME" in value, f"{key} must be a placeholder in the base"
    defaults = Settings.model_construct()
    for key, value in config.items():
        if key.startswith("GOCLUSTER_TOPIC_"):
            assert value == getattr(defaults, key.removeprefix("GOCLUSTER_").lower()), key
    for workload in _workloads(objects):
        for container in _pod_spec(workload)["containers"]:
            sources = {next(iter(source.values()))["name"] for source in container["envFrom"]}
            assert sources == {"gocluster-config", "gocluster-secrets"}


def test_kubectl_kustomize_renders_the_base_with_the_image_and_labels(
    kustomization: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    # kubectl comes with the machine image, not from a package registry: where it is
    # missing, the Python rendering above is the check.
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on this machine (no registry ships it); rendered in Python")
    result = run([kubectl, "kustomize", str(KUBERNETES)])
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert {(o["kind"], o["metadata"]["name"]) for o in rendered} == set(objects)
    (image,) = kustomization["images"]
    for obj in rendered:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "gocluster"
        if obj["kind"] in {"Deployment", "Job"}:
            for container in _pod_spec(obj)["containers"]:
                assert container["image"] == f"{image['newName']}:{image['newTag']}"
