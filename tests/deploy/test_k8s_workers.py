"""The promises k8s/ makes about each long-running process that no schema can check: which entry point it
runs, how long it may take to stop, how its probes tell whether it consumes, which queue scales it, and
where its metrics are scraped. In the base and in every overlay."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dramatiq
import pytest

import booking_expiry.bookings.retries
import booking_expiry.entry
import mailer.emails.retries
import mailer.entry
import sync_api.entry
import sync_api.gunicorn_conf
import sync_api.sync.retries
from antrian import messages
from antrian.config import DEFAULT_METRICS_PORTS, Settings
from antrian.runtime import heartbeat
from antrian.runtime.workers import SHUTDOWN_TIMEOUT_MS
from tests.deploy.k8s import (
    BUILDS,
    NAME_LABEL,
    SECRET_NAME,
    build,
    compose_images,
    env,
    find,
    of_kind,
    pod_labels,
    pod_spec,
    process_argv,
    repository,
    selects,
    the_container,
)

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast

#: Each worker Deployment, the queue it consumes (antrian.messages) and its shutdown timeout, in ms.
WORKERS = {
    "sync-worker": (messages.SYNC_QUEUE, sync_api.entry.WORKER_SHUTDOWN_TIMEOUT_MS),
    "mailer": (messages.EMAILS_QUEUE, mailer.entry.WORKER_SHUTDOWN_TIMEOUT_MS),
    "booking-expiry": (messages.BOOKING_EXPIRY_QUEUE, booking_expiry.entry.WORKER_SHUTDOWN_TIMEOUT_MS),
}
#: The longest time limit of the jobs each worker must let finish when it stops.
JOB_TIME_LIMITS_MS = {
    "sync-worker": sync_api.sync.retries.STUDENT.time_limit_ms,
    "mailer": mailer.emails.retries.EMAIL.time_limit_ms,
    "booking-expiry": booking_expiry.bookings.retries.SWEEP.time_limit_ms,
}
#: Time limits that are watchdogs, not durations to wait for at a stop: the fan-out, cut off, is requeued
#: unacknowledged and resumes from its cursor (sync_api.sync.fanout).
WATCHDOG_ACTORS = {messages.FAN_OUT_SYNC_RUN.actor: sync_api.sync.retries.FAN_OUT.time_limit_ms}
#: The options KEDA's rabbitmq scaler reads from a trigger's metadata (keda.sh/docs/scalers/rabbitmq-queue).
RABBITMQ_TRIGGER_KEYS = {"host", "hostFromEnv", "protocol", "queueName", "mode", "value", "activationValue",
                         "vhostName", "useRegex", "excludeUnacknowledged", "operation", "pageSize", "unsafeSsl",
                         "timeout", "usernameFromEnv", "passwordFromEnv"}
PROBE = "antrian-worker-probe"


@pytest.fixture(scope="module", params=list(BUILDS))
def built(request) -> list[dict]:
    return build(request.param)


def started(deployment: dict, monkeypatch) -> dict:
    """What the worker Deployment's container starts: its console script called with its argv, up to the
    moment it would become dramatiq (antrian.runtime.workers.exec_worker, replaced by a recorder)."""
    container = the_container(deployment)
    argv = process_argv(container, compose_images()[repository(container["image"])])
    scripts = importlib.metadata.entry_points(group="console_scripts", name=argv[0])
    assert len(scripts) == 1, f"{deployment['metadata']['name']} starts {argv[0]!r}, no console script of antrian's"
    [script] = scripts
    function = script.load()
    module = sys.modules[function.__module__]
    assert hasattr(module, "exec_worker"), f"{argv[0]} ({script.value}) does not start a Dramatiq worker"
    calls = []
    monkeypatch.setattr(module, "exec_worker",
                        lambda service, broker_module, args, **options: calls.append(
                            {"service": service, "module": broker_module, "args": args, **options}))
    monkeypatch.setattr(sys, "argv", argv)
    function()
    assert len(calls) == 1, f"{argv[0]} ({script.value}) does not start a Dramatiq worker"
    return {"argv": argv, **calls[0]}


def consumed(worker_module: str) -> dict[str, dramatiq.Actor]:
    """The actors a worker's broker module loads (the module it names to ``boot``), by actor name."""
    source = importlib.util.find_spec(worker_module).origin
    [boot] = [node for node in ast.walk(ast.parse(Path(source).read_text()))
              if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "boot"]
    actors = importlib.import_module(boot.args[1].value)
    return {actor.actor_name: actor for actor in vars(actors).values() if isinstance(actor, dramatiq.Actor)}


def test_every_worker_runs_the_entry_point_of_its_queue_with_the_arguments_given(built, monkeypatch):
    for name, (queue, shutdown_timeout_ms) in WORKERS.items():
        deployment = find(built, "Deployment", name)
        start = started(deployment, monkeypatch)
        assert start["service"] == name, f"{name} runs {start['argv'][0]}, the worker of {start['service']}"
        assert start["args"] == start["argv"][1:], "the container's arguments reach dramatiq"
        assert start["args"][:1] == ["--processes"] and "--threads" in start["args"], start["args"]
        assert start.get("shutdown_timeout_ms", SHUTDOWN_TIMEOUT_MS) == shutdown_timeout_ms
        assert {actor.queue_name for actor in consumed(start["module"]).values()} == {queue}


def test_every_worker_outlives_its_longest_job_when_it_is_stopped(built, monkeypatch):
    for name, (_, shutdown_timeout_ms) in WORKERS.items():
        deployment = find(built, "Deployment", name)
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        # The grace period outlasts the shutdown timeout, which outlasts every job's time limit
        assert grace > shutdown_timeout_ms / 1000 >= JOB_TIME_LIMITS_MS[name] / 1000, name
        limits = {actor_name: actor.options.get("time_limit")
                  for actor_name, actor in consumed(started(deployment, monkeypatch)["module"]).items()}
        for actor_name, limit in limits.items():
            assert limit is not None, f"{actor_name} has no time limit: a stop could wait for it forever"
            if actor_name in WATCHDOG_ACTORS:
                assert limit == WATCHDOG_ACTORS[actor_name] > shutdown_timeout_ms, actor_name
            else:
                assert limit <= JOB_TIME_LIMITS_MS[name], (actor_name, limit)


def test_every_worker_proves_it_consumes_with_the_heartbeat_probes_of_its_own_service(built, monkeypatch):
    [script] = importlib.metadata.entry_points(group="console_scripts", name=PROBE)
    assert script.value == "antrian.runtime.heartbeat:main", "the probe is the shared antrian package's, in every image"
    for name in WORKERS:
        container = the_container(find(built, "Deployment", name))
        service = started(find(built, "Deployment", name), monkeypatch)["service"]
        assert container["livenessProbe"]["exec"]["command"] == [PROBE, service], name
        assert container["readinessProbe"]["exec"]["command"] == [PROBE, service, "--ready"], name
        assert container["startupProbe"]["exec"]["command"] == [PROBE, service], name
        # A probe is a new Python process: give it time, and beats time to go stale before a restart
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["timeoutSeconds"] >= 3, (name, probe)
        liveness = container["livenessProbe"]
        assert liveness["periodSeconds"] * liveness["failureThreshold"] >= heartbeat.MAX_AGE_S, name
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, f"{name}: a minute to start"


def test_the_probe_commands_tell_a_consuming_worker_from_a_stuck_or_disconnected_one(tmp_path):
    """Each worker's own probe commands, run as the kubelet would, against the heartbeats of its service (the
    base's: every overlay has the same, as the test above checks)."""
    built = build("base")
    environment = {**os.environ, "TMPDIR": str(tmp_path)}  # the probe reads <temp dir>/antrian-heartbeat-<service>
    executable = Path(sys.executable).parent / PROBE

    def verdicts(container: dict) -> tuple[int, int]:
        return tuple(subprocess.run([executable, *container[probe]["exec"]["command"][1:]], env=environment,
                                    capture_output=True, timeout=30).returncode
                     for probe in ("livenessProbe", "readinessProbe"))

    for name in WORKERS:
        container = the_container(find(built, "Deployment", name))
        folder = tmp_path / f"antrian-heartbeat-{name}"
        assert verdicts(container) == (1, 1), f"{name}: no beat yet, neither alive nor ready"
        folder.mkdir()
        beat = folder / "100.json"
        beat.write_text(json.dumps({"at": time.time(), "consuming": True, "queues": [WORKERS[name][0]]}))
        assert verdicts(container) == (0, 0), f"{name}: a fresh beat while consuming: alive and ready"
        beat.write_text(json.dumps({"at": time.time(), "consuming": False, "queues": [WORKERS[name][0]]}))
        assert verdicts(container) == (0, 1), f"{name}: no connection to RabbitMQ: alive, not ready"
        stale = time.time() - heartbeat.MAX_AGE_S - 5
        beat.write_text(json.dumps({"at": stale, "consuming": True, "queues": [WORKERS[name][0]]}))
        assert verdicts(container) == (1, 1), f"{name}: stuck threads (an old beat): restart it"


def test_every_worker_serves_metrics_on_its_default_port_where_its_pod_monitor_scrapes(built):
    monitors = of_kind(built, "PodMonitor")
    for name in WORKERS:
        deployment = find(built, "Deployment", name)
        container = the_container(deployment)
        port = DEFAULT_METRICS_PORTS[name]
        assert {item["name"]: item["containerPort"] for item in container["ports"]} == {"metrics": port}
        assert env(container)["METRICS_PORT"] == str(port)

        [monitor] = [item for item in monitors if selects(item["spec"]["selector"], pod_labels(deployment))]
        assert monitor["metadata"]["name"] == name
        assert "namespaceSelector" not in monitor["spec"], "it scrapes its own namespace"
        [endpoint] = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] == "metrics" and endpoint.get("path", "/metrics") == "/metrics"
        # The monitor selects this worker's pods only
        others = [find(built, "Deployment", other) for other in WORKERS if other != name]
        assert not any(selects(monitor["spec"]["selector"], pod_labels(other)) for other in others), name
    assert len(monitors) == len(WORKERS)


def test_keda_scales_every_worker_on_the_length_of_the_queue_it_consumes(built, monkeypatch):
    scaled = {item["spec"]["scaleTargetRef"]["name"]: item for item in of_kind(built, "ScaledObject")}
    assert set(scaled) == set(WORKERS), "one ScaledObject per worker Deployment, none for sync-api"
    auths = {item["metadata"]["name"]: item for item in of_kind(built, "TriggerAuthentication")}
    for name, (queue, _) in WORKERS.items():
        spec = scaled[name]["spec"]
        target = spec["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment" and target.get("apiVersion", "apps/v1") == "apps/v1"
        deployment = find(built, "Deployment", name)
        assert "replicas" not in deployment["spec"], f"{name}: KEDA owns the count; a replicas would fight it"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], name
        assert spec["cooldownPeriod"] > 0 and spec["pollingInterval"] > 0, name

        [trigger] = spec["triggers"]
        metadata = trigger["metadata"]
        assert trigger["type"] == "rabbitmq", name
        assert set(metadata) <= RABBITMQ_TRIGGER_KEYS, set(metadata) - RABBITMQ_TRIGGER_KEYS
        assert metadata["protocol"] == "amqp" and metadata["mode"] == "QueueLength", name
        assert int(metadata["value"]) >= 1, name
        # A real queue of antrian.messages, the one the Deployment's worker consumes
        assert metadata["queueName"] == queue, name
        assert {actor.queue_name for actor in consumed(started(deployment, monkeypatch)["module"]).values()} == {
            metadata["queueName"]}
        # The AMQP URL from the Secret, through a TriggerAuthentication in the same build (so the same namespace)
        auth = auths[trigger["authenticationRef"]["name"]]
        assert trigger["authenticationRef"].get("kind", "TriggerAuthentication") == "TriggerAuthentication"
        assert auth["spec"]["secretTargetRef"] == [{"parameter": "host", "name": SECRET_NAME, "key": "BROKER_URL"}]
    # A second sweep waits on the first one's advisory lock: more than two expiry workers buy nothing
    assert scaled["booking-expiry"]["spec"]["maxReplicaCount"] <= 2


def test_every_deployment_has_a_disruption_budget_that_lets_one_pod_go_at_a_time(built):
    budgets = of_kind(built, "PodDisruptionBudget")
    for deployment in of_kind(built, "Deployment"):
        name = deployment["metadata"]["name"]
        [budget] = [item for item in budgets if selects(item["spec"]["selector"], pod_labels(deployment))]
        if name in WORKERS:
            assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {NAME_LABEL: name}}}
        else:
            assert budget["spec"].get("maxUnavailable") == 1 or budget["spec"].get("minAvailable") == 1, name
    # The RabbitMQ cluster operator makes no budget of its own: the overlay's lets a drain take one node at a time.
    # Its pods carry app.kubernetes.io/name=<the RabbitmqCluster's name>.
    clusters = of_kind(built, "RabbitmqCluster")
    for cluster in clusters:
        name = cluster["metadata"]["name"]
        [budget] = [item for item in budgets if selects(item["spec"]["selector"], {NAME_LABEL: name})]
        assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {NAME_LABEL: name}}}
    assert len(budgets) == len(of_kind(built, "Deployment")) + len(clusters)


def test_sync_api_serves_probes_on_its_service_port_metrics_on_their_own_and_drains_before_it_stops(built):
    deployment = find(built, "Deployment", "sync-api")
    container = the_container(deployment)
    assert "command" not in container and "args" not in container, "the image's CMD, sync-api (gunicorn), runs"
    ports = {item["name"]: item["containerPort"] for item in container["ports"]}
    # /metrics answers without a token, so it is not on the API's port (SPEC: METRICS_PORT, 9190 for sync-api)
    metrics_port = Settings().metrics_port_for("sync-api")
    assert metrics_port == DEFAULT_METRICS_PORTS["sync-api"] != 8000
    assert ports == {"http": int(env(container)["PORT"]), "metrics": metrics_port} == {"http": 8000, "metrics": 9190}
    assert int(env(container).get("METRICS_PORT") or metrics_port) == metrics_port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    # preStop sleeps while the endpoints drop the pod; then gunicorn finishes its requests; then the grace ends
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) >= 3
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace > int(sleep[1]) + sync_api.gunicorn_conf.graceful_timeout, grace

    # The Service sends port 80 to the container's http port, and the ServiceMonitor scrapes /metrics on the
    # Service's metrics port, which leads to the container's
    service = find(built, "Service", "sync-api")
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment))
    http, metrics = service["spec"]["ports"]
    assert http == {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    assert metrics == {"name": "metrics", "port": metrics_port, "targetPort": "metrics", "protocol": "TCP"}
    [monitor] = of_kind(built, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert "namespaceSelector" not in monitor["spec"], "it scrapes its own namespace"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == metrics["name"] and endpoint["path"] == "/metrics"
