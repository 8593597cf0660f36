"""The overlays that deploy k8s/base: dev (namespace antrian-dev, one replica each, small) and prod (namespace
antrian, the release's images, sync-api spread over several replicas, room for KEDA to scale)."""

from __future__ import annotations

import re

import pytest

from antrian.config import load_settings
from tests.deploy.k8s import (
    NAME_LABEL,
    OVERLAYS,
    build,
    config_map,
    containers,
    find,
    kustomization,
    of_kind,
    pod_labels,
    pod_spec,
    selects,
    tag,
    the_container,
    unhashed,
    workloads,
)

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast

NAMESPACES = {"dev": "antrian-dev", "prod": "antrian"}
#: Kinds that have no namespace: none belongs in these builds (the namespace is made before the Secret).
CLUSTER_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
                 "StorageClass", "PriorityClass", "ClusterTriggerAuthentication"}
RELEASE_TAG = re.compile(r"\d+\.\d+\.\d+")
_UNITS = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity(value: str | int) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * _UNITS[unit]


def resources(built: list[dict]) -> dict[tuple[str, str], dict]:
    return {(workload["metadata"]["name"], container["name"]): container["resources"]
            for workload in workloads(built) for container in containers(workload)}


#: What an overlay deploys beyond the base: prod's RabbitMQ cluster (RabbitMQ's cluster operator).
OVERLAY_RESOURCES = {"prod": ["rabbitmq.yaml", "rabbitmq-network.yaml"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_deploys_what_the_base_has_into_its_own_namespace(overlay):
    built = build(overlay)
    assert kustomization(overlay)["resources"] == ["../../base", *OVERLAY_RESOURCES.get(overlay, {})]
    added = ([("RabbitmqCluster", "rabbitmq"), ("PodDisruptionBudget", "rabbitmq"), ("NetworkPolicy", "rabbitmq")]
             if overlay == "prod" else [])
    assert sorted(map(unhashed, built)) == sorted([*map(unhashed, build("base")), *added])
    assert {item["metadata"].get("namespace") for item in built} == {NAMESPACES[overlay]}
    assert not {item["kind"] for item in built} & CLUSTER_KINDS


@pytest.mark.parametrize("overlay", ("base", *OVERLAYS))
def test_the_images_of_a_build_are_one_release(overlay):
    tags = {tag(container["image"]) for workload in workloads(build(overlay)) for container in containers(workload)}
    assert len(tags) == 1, f"{overlay} mixes image tags: {tags}"
    [found] = tags
    if overlay == "dev":
        assert found == "dev"
    else:
        assert RELEASE_TAG.fullmatch(found), f"{overlay} deploys {found!r}, not a release"


def test_dev_runs_one_small_replica_of_each_with_the_payment_simulator():
    base, dev = build("base"), build("dev")
    assert find(dev, "Deployment", "sync-api")["spec"]["replicas"] == 1
    for scaled in of_kind(dev, "ScaledObject"):
        assert scaled["spec"]["minReplicaCount"] == 1 and scaled["spec"]["maxReplicaCount"] <= 2

    smaller = 0
    base_resources = resources(base)
    for key, dev_resources in resources(dev).items():
        for kind in ("requests", "limits"):
            for resource, value in dev_resources[kind].items():
                assert quantity(value) <= quantity(base_resources[key][kind][resource]), (key, kind, resource)
                smaller += quantity(value) < quantity(base_resources[key][kind][resource])
    assert smaller, "dev asks for less than the base somewhere"

    settings = load_settings(config_map(dev)["data"])
    assert settings.payment_simulator and settings.log_level == "DEBUG"


def test_prod_runs_the_api_on_several_replicas_spread_over_nodes_and_lets_keda_scale_further():
    base, prod = build("base"), build("prod")
    deployment = find(prod, "Deployment", "sync-api")
    assert deployment["spec"]["replicas"] >= 2
    constraints = {item["topologyKey"]: item for item in pod_spec(deployment)["topologySpreadConstraints"]}
    assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= set(constraints)
    for constraint in constraints.values():
        assert constraint["maxSkew"] == 1
        assert selects(constraint["labelSelector"], pod_labels(deployment))
        assert constraint["labelSelector"] == {"matchLabels": {NAME_LABEL: "sync-api"}}
    assert constraints["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    # Nodes the pods may not run on (a tainted control plane) do not count, or they would block the spread
    assert constraints["kubernetes.io/hostname"]["nodeTaintsPolicy"] == "Honor"

    base_scaled = {item["metadata"]["name"]: item["spec"] for item in of_kind(base, "ScaledObject")}
    for scaled in of_kind(prod, "ScaledObject"):
        spec = scaled["spec"]
        assert spec["maxReplicaCount"] >= base_scaled[scaled["metadata"]["name"]]["maxReplicaCount"]
        assert spec["minReplicaCount"] >= 1
    assert resources(prod) == resources(base)

    settings = load_settings(config_map(prod)["data"])
    assert not settings.payment_simulator, "prod never simulates payments"
    assert settings.mail_backend == "smtp" and settings.log_level == "INFO"
    # The same container everywhere else: only the images' tags differ from the base
    for workload in workloads(prod):
        container = the_container(workload)
        base_container = the_container(find(base, workload["kind"], workload["metadata"]["name"]))
        assert {**container, "image": None, "envFrom": None} == {**base_container, "image": None, "envFrom": None}


def test_prod_runs_rabbitmq_as_a_three_node_cluster_spread_over_nodes_that_brokers_url_names():
    built = build("prod")
    cluster = find(built, "RabbitmqCluster", "rabbitmq")
    spec = cluster["spec"]
    assert spec["replicas"] == 3
    assert spec["resources"]["requests"]["memory"] == spec["resources"]["limits"]["memory"]
    assert spec["persistence"]["storage"]
    [rule] = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    # The operator labels its pods app.kubernetes.io/name=<the cluster's name>
    assert rule == {"labelSelector": {"matchLabels": {NAME_LABEL: "rabbitmq"}}, "topologyKey": "kubernetes.io/hostname"}
    budget = find(built, "PodDisruptionBudget", "rabbitmq")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {NAME_LABEL: "rabbitmq"}}}
    # The operator's client Service is named after the cluster: BROKER_URL's host
    assert config_map(built)["data"]["BROKER_URL"] == "amqp://rabbitmq.antrian.svc:5672/"
