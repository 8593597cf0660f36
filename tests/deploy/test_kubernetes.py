"""k8s/ (the base and the dev and prod overlays) as ``kubectl kustomize`` builds it, offline: valid objects,
strictly, core and custom ones alike, that hold no secret, run unprivileged and read only settings antrian
knows. The workers' promises are in test_k8s_workers.py, the overlays' own in test_k8s_overlays.py."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml

from antrian.cli import main as antrian_cli
from antrian.config import Settings, load_settings
from tests.deploy import SETTING_NAMES
from tests.deploy.k8s import (
    BASE,
    BUILDS,
    NAME_LABEL,
    SECRET_NAME,
    WORKLOAD_KINDS,
    build,
    compose_images,
    config_map,
    containers,
    empty_dir_mounts,
    env,
    find,
    kustomization,
    of_kind,
    pod_labels,
    pod_spec,
    repository,
    schema_problems,
    selects,
    the_container,
    workloads,
)

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast

#: The user the images run as (USER 10001:10001 in every Dockerfile).
IMAGE_UID = 10001
#: Settings whose values are secrets: none may appear as a literal value in a manifest.
SECRET_SETTINGS = {"API_TOKEN", "UPSTREAM_TOKEN", "SMTP_PASSWORD", "PAYMENT_SERVER_KEY", "PGPASSWORD"}
#: Variables a container may get beyond antrian's settings: libpq's password and the metrics folder's base.
OTHER_VARIABLES = {"PGPASSWORD", "PROMETHEUS_MULTIPROC_BASE", "METRICS_PORT"}
#: What the base deploys, each overlay too.
EXPECTED = {
    ("Job", "antrian-migrate"),
    ("Deployment", "sync-api"), ("Service", "sync-api"), ("PodDisruptionBudget", "sync-api"),
    ("ServiceMonitor", "sync-api"),
    *{(kind, name) for name in ("sync-worker", "mailer", "booking-expiry")
      for kind in ("Deployment", "ScaledObject", "PodDisruptionBudget", "PodMonitor")},
    ("CronJob", "booking-expiry-schedule"),
    ("TriggerAuthentication", "antrian-rabbitmq"),
    # k8s/base/observability: the alerts and the Grafana dashboard
    ("PrometheusRule", "antrian"), ("ConfigMap", "antrian-grafana-dashboard"),
    # The namespace's default-deny, DNS for all, and each workload's flows (test_k8s_network.py)
    ("NetworkPolicy", "default-deny"), ("NetworkPolicy", "allow-dns"),
    *{("NetworkPolicy", name) for name in ("sync-api", "sync-worker", "mailer", "booking-expiry",
                                           "booking-expiry-schedule", "antrian-migrate")},
}
#: How migrate.yaml's comment (and the README) apply the migration Job, and the ConfigMap it reads, first.
PRE_ROLLOUT_SELECTOR = "app.kubernetes.io/component in (config,migration)"


@pytest.fixture(scope="module", params=list(BUILDS))
def built(request) -> list[dict]:
    return build(request.param)


def test_each_build_makes_objects_that_pass_their_schemas_strictly(built):
    kinds = {(item["kind"], item["metadata"]["name"]) for item in built}
    assert EXPECTED <= kinds, EXPECTED - kinds
    config_map(built)

    problems = [problem for item in built for problem in schema_problems(item)]
    assert not problems, "\n".join(problems)


def test_the_base_has_no_namespace_and_one_file_per_workload():
    base = kustomization("base")
    assert "namespace" not in base, "the base leaves the namespace to an overlay"
    assert [item["metadata"]["name"] for item in build("base") if "namespace" in item["metadata"]] == []

    files = [BASE / resource for resource in base["resources"] if (BASE / resource).is_file()]
    per_file = {}
    for path in files:
        documents = [item for item in yaml.safe_load_all(path.read_text()) if item]
        per_file[path.name] = [item["metadata"]["name"] for item in documents if item["kind"] in WORKLOAD_KINDS]
        # A workload's pieces carry its name label; a file of no workload holds shared pieces
        for item in documents:
            assert item["metadata"].get("labels", {}).get(NAME_LABEL) in (None, *per_file[path.name]), path.name
    assert all(len(names) <= 1 for names in per_file.values()), per_file
    assert sorted(name for names in per_file.values() for name in names) == sorted(
        item["metadata"]["name"] for item in workloads(build("base")))


def test_every_object_has_the_part_of_label_and_selectors_do_not_depend_on_it(built):
    for item in built:
        assert item["metadata"]["labels"]["app.kubernetes.io/part-of"] == "antrian", item["metadata"]["name"]
    for deployment in of_kind(built, "Deployment"):
        # A Deployment's selector is immutable: it names the workload only, as every selector here does
        assert deployment["spec"]["selector"] == {"matchLabels": {NAME_LABEL: deployment["metadata"]["name"]}}
        assert pod_labels(deployment)[NAME_LABEL] == deployment["metadata"]["name"]


def test_no_secret_value_is_in_the_repository(built):
    for name in BUILDS:
        assert "secretGenerator" not in kustomization(name), name
    assert [item["metadata"]["name"] for item in built if item["kind"] == "Secret"] == [], \
        "the Secret antrian-secrets is made in the cluster, never from the repository"

    # The ConfigMap holds settings only, and URLs without a password (the Secret adds those)
    data = config_map(built)["data"]
    assert set(data) <= SETTING_NAMES, set(data) - SETTING_NAMES
    for name, value in data.items():
        if "://" in value:
            assert urlsplit(value).password is None, f"{name} in the ConfigMap carries a password"
    assert not set(data) & SECRET_SETTINGS

    # No container gives a secret a literal value, and no object carries one in a field of its own
    for workload in workloads(built):
        for container in containers(workload):
            literal = {name for name, value in env(container).items() if value is not None}
            assert not literal & SECRET_SETTINGS, (workload["metadata"]["name"], literal & SECRET_SETTINGS)
    for auth in of_kind(built, "TriggerAuthentication"):
        assert set(auth["spec"]) == {"secretTargetRef"}, "KEDA reads credentials from antrian-secrets only"
        assert {ref["name"] for ref in auth["spec"]["secretTargetRef"]} == {SECRET_NAME}
    for scaled in of_kind(built, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            assert not {"host", "hostFromEnv"} & set(trigger["metadata"]), "the AMQP URL comes from the Secret"


def test_the_config_map_is_valid_configuration_for_every_process(built):
    data = config_map(built)["data"]
    settings = load_settings(data)  # raises ConfigError naming a variable with a wrong value
    assert settings.upstream_base_url, "sync-worker cannot start without UPSTREAM_BASE_URL"
    assert settings.expiry_sweep_seconds == Settings().expiry_sweep_seconds
    # Files the mailer writes (MAIL_BACKEND=file) must land on its writable /tmp, the root being read-only
    if settings.mail_backend == "file":
        mailer = find(built, "Deployment", "mailer")
        mounts = empty_dir_mounts(mailer, the_container(mailer))
        assert any(settings.mail_file_dir.startswith(f"{mount}/") for mount in mounts), settings.mail_file_dir


def test_every_container_reads_the_config_map_whole_and_the_secret_key_by_key(built):
    """The ConfigMap as a whole; the Secret's keys one by one (which ones: test_k8s_secrets.py)."""
    expected = [{"configMapRef": {"name": config_map(built)["metadata"]["name"]}}]
    for workload in workloads(built):
        for container in containers(workload):
            name = workload["metadata"]["name"]
            assert container["envFrom"] == expected, name
            variables = env(container)
            assert set(variables) <= SETTING_NAMES | OTHER_VARIABLES, (name, set(variables) - SETTING_NAMES)
            for item in container.get("env", []):
                if "valueFrom" in item:
                    assert set(item["valueFrom"]) == {"secretKeyRef"}, (name, item["name"])
                    assert item["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME, (name, item["name"])
            if "PROMETHEUS_MULTIPROC_BASE" in variables:
                assert variables["PROMETHEUS_MULTIPROC_BASE"] in empty_dir_mounts(workload, container), name


def test_every_pod_runs_as_the_images_user_without_privileges_on_a_read_only_root(built):
    for workload in workloads(built):
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        pod_context = pod["securityContext"]
        assert pod.get("automountServiceAccountToken") is False, name
        assert pod_context["runAsNonRoot"] is True and pod_context["runAsUser"] == IMAGE_UID, name
        assert pod_context["runAsGroup"] == IMAGE_UID and pod_context["fsGroup"] == IMAGE_UID, name
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        for container in containers(workload):
            context = container["securityContext"]
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, name
            assert context.get("runAsUser", pod_context.get("runAsUser")) == IMAGE_UID, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"] and "add" not in context["capabilities"], name
            assert not context.get("privileged"), name
            # Prometheus' multiprocess folder and the workers' heartbeats (the temp dir) need a writable /tmp
            assert "/tmp" in empty_dir_mounts(workload, container), name


def test_every_container_has_resources_and_every_volume_a_size(built):
    for workload in workloads(built):
        name = workload["metadata"]["name"]
        for container in containers(workload):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert {"cpu", "memory"} <= set(resources["limits"]), name
        for volume in pod_spec(workload).get("volumes", []):
            assert volume["emptyDir"]["sizeLimit"], (name, volume["name"])


def test_every_image_is_one_that_compose_builds_from_this_repository(built):
    images = compose_images()
    for workload in workloads(built):
        for container in containers(workload):
            assert repository(container["image"]) in images, container["image"]


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
    container = the_container(cronjob)
    assert container["command"] == ["antrian", "schedule", "run"]
    assert "run" in antrian_cli.commands["schedule"].commands
    assert container["image"] == the_container(find(built, "Deployment", "booking-expiry"))["image"]


def test_the_migration_job_runs_antrian_migrate_once_and_can_be_applied_first(built):
    job = find(built, "Job", "antrian-migrate")
    spec = job["spec"]
    container = the_container(job)
    assert container["command"] == ["antrian", "migrate"] and "migrate" in antrian_cli.commands
    # From the release's sync-api image, so it carries the migrations the new code needs
    assert container["image"] == the_container(find(built, "Deployment", "sync-api"))["image"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert 1 <= spec["backoffLimit"] <= 6
    assert spec["activeDeadlineSeconds"] > 0
    assert 0 < spec["ttlSecondsAfterFinished"], "a finished Job goes away, so a later release can create its own"

    # `kubectl apply -k ... -l SELECTOR` picks the Job, the ConfigMap it reads and the NetworkPolicy that lets it
    # reach PostgreSQL, and nothing else
    key, values = re.fullmatch(r"(\S+) in \((\S+)\)", PRE_ROLLOUT_SELECTOR).groups()
    selector = {"matchExpressions": [{"key": key, "operator": "In", "values": values.split(",")}]}
    picked = {(item["kind"], item["metadata"]["name"]) for item in built
              if selects(selector, item["metadata"].get("labels", {}))}
    assert picked == {("Job", "antrian-migrate"), ("ConfigMap", config_map(built)["metadata"]["name"]),
                      ("NetworkPolicy", "antrian-migrate")}
    assert f"-l '{PRE_ROLLOUT_SELECTOR}'" in (BASE / "migrate.yaml").read_text()
