"""k8s/ as ``kubectl kustomize`` builds it (offline, no cluster), and the questions the tests ask of it.

Each build (the base and each overlay) is made once per test process. Core objects are checked against
Kubernetes' own schemas (kubernetes-validate, strict); the custom resources of KEDA and prometheus-operator,
which kubernetes-validate has no schema for, against the models in :mod:`.crd_schemas`.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import yaml

from tests.support import ROOT

K8S = ROOT / "k8s"
BASE = K8S / "base"
#: Each build the tests check: the base and the overlays that deploy it.
BUILDS = {"base": BASE, "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
OVERLAYS = ("dev", "prod")
#: The oldest Kubernetes the manifests are written for (a CronJob's timeZone is GA since 1.27, a topology
#: spread's matchLabelKeys and nodeTaintsPolicy exist since 1.25/1.26), and the newest whose schema
#: kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job"}
SECRET_NAME = "antrian-secrets"
CONFIG_NAME = "antrian-config"
#: The label every object's workload is known by, and selected by.
NAME_LABEL = "app.kubernetes.io/name"


@functools.cache
def _built_text(name: str) -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed: the tests build k8s/ with `kubectl kustomize`, which is offline"
    result = subprocess.run([kubectl, "kustomize", str(BUILDS[name])], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {BUILDS[name].relative_to(ROOT)} failed:\n{result.stderr}"
    return result.stdout


@functools.cache
def _built(name: str) -> tuple[dict, ...]:
    objects = tuple(item for item in yaml.safe_load_all(_built_text(name)) if item is not None)
    assert objects, f"kubectl kustomize {name} built nothing"
    return objects


def build(name: str) -> list[dict]:
    """The objects of one build (``base``, ``dev`` or ``prod``): a copy, so a test may change it."""
    return copy.deepcopy(list(_built(name)))


def kustomization(name: str) -> dict:
    return yaml.safe_load((BUILDS[name] / "kustomization.yaml").read_text())


def schema_problems(item: dict) -> list[str]:
    """Why ``item`` is not a valid object, against every schema it must pass; empty when it is valid."""
    from tests.deploy import crd_schemas  # here: importing the models takes seconds, and only this needs them

    label = f"{item.get('kind')}/{item.get('metadata', {}).get('name')}"
    if crd_schemas.knows(item):
        return [f"{label}: {problem}" for problem in crd_schemas.problems(item)]
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:  # strict: a misspelt or misplaced field is an error, not ignored as the API server would
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            problems.append(f"{label} (Kubernetes {version}): {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{label}: no schema for {item.get('apiVersion')} {item.get('kind')} in Kubernetes "
                            f"{version} nor in tests/deploy/crd_schemas.py: add its model there")
    return problems


def find(built: list[dict], kind: str, name: str) -> dict:
    found = [item for item in built if item["kind"] == kind and item["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in the build, found {len(found)}"
    return found[0]


def of_kind(built: list[dict], kind: str) -> list[dict]:
    return [item for item in built if item["kind"] == kind]


def config_map(built: list[dict]) -> dict:
    """antrian-config, whose name kustomize suffixes with a hash of its contents."""
    [found] = [item for item in built if item["kind"] == "ConfigMap"
               and re.fullmatch(rf"{CONFIG_NAME}-[a-z0-9]+", item["metadata"]["name"])]
    return found


def unhashed(item: dict) -> tuple[str, str]:
    """(kind, name) with a generated ConfigMap's hash suffix dropped, to compare builds."""
    name = item["metadata"]["name"]
    if item["kind"] == "ConfigMap" and re.fullmatch(rf"{CONFIG_NAME}-[a-z0-9]+", name):
        name = CONFIG_NAME
    return item["kind"], name


def workloads(built: list[dict]) -> list[dict]:
    return [item for item in built if item["kind"] in WORKLOAD_KINDS]


def pod_template(workload: dict) -> dict:
    spec = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
    return spec["template"]


def pod_spec(workload: dict) -> dict:
    return pod_template(workload)["spec"]


def pod_labels(workload: dict) -> dict:
    return pod_template(workload)["metadata"]["labels"]


def containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def the_container(workload: dict) -> dict:
    [container] = pod_spec(workload)["containers"]
    return container


def env(container: dict) -> dict[str, str | None]:
    """The container's own ``env``: name to literal value (None for a valueFrom)."""
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def empty_dir_mounts(workload: dict, container: dict) -> set[str]:
    """The paths where ``container`` mounts an emptyDir: the only writable places on a read-only root."""
    volumes = {volume["name"]: volume for volume in pod_spec(workload).get("volumes", [])}
    return {mount["mountPath"] for mount in container.get("volumeMounts", [])
            if "emptyDir" in volumes.get(mount["name"], {}) and not mount.get("readOnly")}


def repository(image: str) -> str:
    """``registry:5000/antrian/booking-expiry:0.1.0`` → ``registry:5000/antrian/booking-expiry``."""
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def tag(image: str) -> str | None:
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


def selects(selector: dict, labels: dict) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects an object with ``labels``."""
    if not selector:
        return False  # an empty selector: nothing here relies on "select everything"
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


# --- what the images run (read from the Dockerfiles that compose builds them with) -------------------------

def compose_images() -> dict[str, Path]:
    """Each image repository that compose builds from this repository, and its Dockerfile."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {repository(service["image"]): ROOT / service["build"]["dockerfile"]
            for service in compose["services"].values() if "build" in service}


def _exec_form(dockerfile: Path, instruction: str) -> list[str]:
    """The runtime stage's last ENTRYPOINT or CMD, which must be in exec (JSON) form; [] when absent."""
    found: list[str] = []
    for line in dockerfile.read_text().splitlines():
        keyword, _, argument = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            found = []
        elif keyword.upper() == instruction:
            found = json.loads(argument)
    return found


def process_argv(container: dict, dockerfile: Path) -> list[str]:
    """The argv a container starts, as Kubernetes combines its command and args with the image's."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    entrypoint = _exec_form(dockerfile, "ENTRYPOINT")
    return [*entrypoint, *container.get("args", _exec_form(dockerfile, "CMD"))]
