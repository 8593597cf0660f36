"""k8s/base as ``kubectl kustomize`` builds it (offline, no cluster): valid Kubernetes objects, strictly,
that keep the promises the booking-expiry code relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from antrian.cli import main as antrian_cli
from antrian.config import DEFAULT_METRICS_PORTS, Settings
from antrian.workers import SHUTDOWN_TIMEOUT_MS
from booking_expiry.actors import SWEEP_TIME_LIMIT_MS

from ..support import ROOT
from . import SETTING_NAMES

BASE = ROOT / "k8s" / "base"
#: The oldest Kubernetes the manifests are written for (a CronJob's timeZone is GA since 1.27), and the
#: newest whose schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job"}
#: The user the images run as (USER 10001:10001 in every Dockerfile).
IMAGE_UID = 10001
SECRET_NAME = "antrian-secrets"
#: Settings whose values are secrets: none may appear as a literal value in a manifest.
SECRET_SETTINGS = {"API_TOKEN", "UPSTREAM_TOKEN", "SMTP_PASSWORD", "PAYMENT_SERVER_KEY", "PGPASSWORD"}


@pytest.fixture(scope="module")
def built() -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed: the tests build k8s/base with `kubectl kustomize`, which is offline"
    result = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize k8s/base failed:\n{result.stderr}"
    objects = [item for item in yaml.safe_load_all(result.stdout) if item is not None]
    assert objects, "kubectl kustomize k8s/base built nothing"
    return objects


def find(built: list[dict], kind: str, name: str) -> dict:
    found = [item for item in built if item["kind"] == kind and item["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in the build, found {len(found)}"
    return found[0]


def config_map(built: list[dict]) -> dict:
    """antrian-config, whose name kustomize suffixes with a hash of its contents."""
    [found] = [item for item in built if item["kind"] == "ConfigMap"
               and re.fullmatch(r"antrian-config-[a-z0-9]+", item["metadata"]["name"])]
    return found


def workloads(built: list[dict]) -> list[dict]:
    return [item for item in built if item["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: dict) -> dict:
    spec = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
    return spec["template"]["spec"]


def containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def repository(image: str) -> str:
    """``antrian/booking-expiry:0.1.0`` → ``antrian/booking-expiry``."""
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def test_the_base_builds_into_objects_that_pass_kubernetes_schemas_strictly(built):
    kinds = {(item["kind"], item["metadata"]["name"]) for item in built}
    assert {("Deployment", "booking-expiry"), ("CronJob", "booking-expiry-schedule")} <= kinds, kinds
    config_map(built)

    problems = []
    for item in built:
        for version in KUBERNETES_VERSIONS:
            try:  # strict: a misspelt or misplaced field is an error, not ignored as the API server would
                kubernetes_validate.validate(item, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{item['kind']}/{item['metadata']['name']} (Kubernetes {version}): {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_base_has_no_namespace_and_one_file_per_workload(built):
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert "namespace" not in kustomization, "the base leaves the namespace to an overlay or `kubectl -n`"
    assert [item["metadata"]["name"] for item in built if "namespace" in item["metadata"]] == []

    for resource in kustomization["resources"]:
        documents = [item for item in yaml.safe_load_all((BASE / resource).read_text()) if item]
        assert len([item for item in documents if item["kind"] in WORKLOAD_KINDS]) == 1, resource


def test_no_secret_value_is_in_the_repository(built):
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert "secretGenerator" not in kustomization
    assert [item["metadata"]["name"] for item in built if item["kind"] == "Secret"
            and (item.get("data") or item.get("stringData"))] == []

    # The ConfigMap holds settings only, and URLs without a password (the Secret adds those)
    data = config_map(built)["data"]
    assert set(data) <= SETTING_NAMES, set(data) - SETTING_NAMES
    for name, value in data.items():
        if "://" in value:
            assert urlsplit(value).password is None, f"{name} in the ConfigMap carries a password"
    assert not set(data) & SECRET_SETTINGS

    # And no container gives a secret a literal value
    for workload in workloads(built):
        for container in containers(workload):
            literal = {item["name"] for item in container.get("env", []) if "value" in item}
            assert not literal & SECRET_SETTINGS, (workload["metadata"]["name"], literal & SECRET_SETTINGS)


def test_every_container_reads_the_config_map_and_then_the_secret_whose_keys_win(built):
    expected = [{"configMapRef": {"name": config_map(built)["metadata"]["name"]}},
                {"secretRef": {"name": SECRET_NAME}}]
    for workload in workloads(built):
        for container in containers(workload):
            assert container["envFrom"] == expected, workload["metadata"]["name"]
            assert {item["name"] for item in container.get("env", [])} <= SETTING_NAMES


def test_the_cronjob_enqueues_the_sweep_once_per_period_and_never_overlaps(built):
    cronjob = find(built, "CronJob", "booking-expiry-schedule")
    spec = cronjob["spec"]
    every = re.fullmatch(r"\*/(\d+) \* \* \* \*", spec["schedule"])
    assert every, f"expected a schedule of every N minutes, got {spec['schedule']!r}"
    period = int(every.group(1)) * 60

    # The same period as the schedule's slots (EXPIRY_SWEEP_SECONDS), so each run finds a new slot to claim
    assert period == int(config_map(built)["data"]["EXPIRY_SWEEP_SECONDS"]) == Settings().expiry_sweep_seconds
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < period
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] < period, "a stuck run ends before the next is due"
    assert 0 <= job["backoffLimit"] <= 6
    assert pod_spec(cronjob)["restartPolicy"] in {"Never", "OnFailure"}

    # It runs `antrian schedule run`, a command that exists, from booking-expiry's image
    [container] = pod_spec(cronjob)["containers"]
    assert container["command"] == ["antrian", "schedule", "run"]
    assert "run" in antrian_cli.commands["schedule"].commands
    [worker] = pod_spec(find(built, "Deployment", "booking-expiry"))["containers"]
    assert container["image"] == worker["image"]


def test_the_worker_outlives_its_longest_sweep_when_it_is_stopped(built):
    deployment = find(built, "Deployment", "booking-expiry")
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace > SWEEP_TIME_LIMIT_MS / 1000, f"{grace} s is not above the sweep's {SWEEP_TIME_LIMIT_MS} ms time limit"
    assert grace > SHUTDOWN_TIMEOUT_MS / 1000

    # The image's exec-form ENTRYPOINT (booking-expiry, which execs dramatiq) runs, so SIGTERM reaches Dramatiq
    [container] = pod_spec(deployment)["containers"]
    assert "command" not in container
    assert container["args"][:1] == ["--processes"] and "--threads" in container["args"]


def test_the_worker_serves_metrics_where_its_probes_look_and_has_resources(built):
    deployment = find(built, "Deployment", "booking-expiry")
    [container] = pod_spec(deployment)["containers"]
    port = DEFAULT_METRICS_PORTS["booking-expiry"]
    assert {item["name"]: item["containerPort"] for item in container["ports"]} == {"metrics": port}
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    assert env.get("METRICS_PORT", str(port)) == str(port)
    for probe in ("livenessProbe", "readinessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/metrics" and check["port"] in ("metrics", port), probe

    for workload in workloads(built):
        for item in containers(workload):
            resources = item["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), workload["metadata"]["name"]
            assert "memory" in resources["limits"], workload["metadata"]["name"]


def test_every_pod_runs_as_the_images_user_without_privileges_on_a_read_only_root(built):
    for workload in workloads(built):
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        pod_context = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False, name
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for container in containers(workload):
            context = container["securityContext"]
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, name
            assert context.get("runAsUser", pod_context.get("runAsUser")) == IMAGE_UID, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            # Prometheus' multiprocess folder (PROMETHEUS_MULTIPROC_BASE=/tmp) needs a writable /tmp
            mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
            assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], name


def test_every_image_is_one_that_compose_builds_from_this_repository(built):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    images = {repository(service["image"]) for service in compose["services"].values() if "build" in service}
    for workload in workloads(built):
        for container in containers(workload):
            assert repository(container["image"]) in images, container["image"]
