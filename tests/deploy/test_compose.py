"""docker-compose.yml and deploy/compose/, checked offline (no Docker engine here): the Compose
Specification's schema, the start order, every setting a service gets being one antrian reads, valid with
nothing in the shell, and Prometheus and Grafana pointed at what really serves metrics and dashboards."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

from antrian.config import DEFAULT_METRICS_PORTS, Settings, load_settings
from antrian.runtime.workers import SHUTDOWN_TIMEOUT_MS
from booking_expiry.bookings.retries import SWEEP
from tests.deploy import SETTING_NAMES
from tests.support import ROOT

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast

COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy" / "compose"
BIN = Path(sys.executable).parent
#: Variables an antrian service may be given beyond antrian's settings, and why. None so far.
EXTRAS: dict[str, str] = {}
#: What each antrian service cannot start without (the `require` of its entry point).
REQUIRED = {"sync-api": {"API_TOKEN"}, "sync-worker": {"UPSTREAM_BASE_URL"}}
#: ${NAME}, ${NAME:-default}, ${NAME-default}: Compose's interpolation.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")
#: The Dramatiq workers: each serves /metrics on its METRICS_PORT and beats for antrian-worker-probe.
WORKERS = tuple(name for name in DEFAULT_METRICS_PORTS if name != "sync-api")
#: Where RabbitMQ's rabbitmq_prometheus plugin serves /metrics (its default, inside the compose network).
RABBITMQ_PROMETHEUS_PORT = 15692
#: The data sources a dashboard may name: the variable, the provisioned uid, Grafana's own (annotations).
DASHBOARD_DATASOURCES = ({"type": "prometheus", "uid": "${datasource}"}, {"type": "prometheus", "uid": "prometheus"},
                         {"type": "grafana", "uid": "-- Grafana --"})
#: The profile `cluster`: three clustered RabbitMQ nodes beside the single `rabbitmq`, each with its data volume.
CLUSTER_NODES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")
CLUSTER_VOLUMES = {f"{node}-data" for node in CLUSTER_NODES}
#: An image pinned by an explicit version: a tag that starts with a version number, never `latest`.
PINNED = re.compile(r"[a-z0-9./-]+:v?\d+(\.\d+)*(-[a-z0-9.-]+)?")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def ours(services: dict[str, dict]) -> dict[str, dict]:
    """The services that run an image built from this repository."""
    return {name: service for name, service in services.items() if "build" in service}


def interpolate(value: str, shell: dict[str, str]) -> str:
    """What Compose makes of ``value`` with ``shell`` as the environment (only the forms used here)."""
    def substitute(match: re.Match) -> str:
        name, op, default = match["name"], match["op"], match["default"]
        if op == ":-":
            return shell.get(name) or default
        if op == "-":
            return shell.get(name, default)
        return shell.get(name, "")

    return INTERPOLATION.sub(substitute, value)


def bind_mounts(service: dict) -> dict[str, tuple[Path, str]]:
    """A service's bind mounts of repository paths: {path in the container: (path in the repository, mode)}."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        if source.startswith("./"):
            mounts[target] = (ROOT / source, mode[0] if mode else "rw")
    return mounts


def flags(command: list[str]) -> dict[str, str]:
    """``--name=value`` arguments of a command."""
    return dict(part[2:].split("=", 1) for part in command if part.startswith("--") and "=" in part)


def prometheus_config() -> dict:
    return yaml.safe_load((DEPLOY / "prometheus.yml").read_text())


def scrape_targets() -> dict[str, tuple[str, str, int, dict]]:
    """{job: (metrics path, host, port, labels)} of deploy/compose/prometheus.yml (one target per job)."""
    found = {}
    for job in prometheus_config()["scrape_configs"]:
        [static] = job["static_configs"]
        [target] = static["targets"]
        host, port = target.rsplit(":", 1)
        found[job["job_name"]] = (job.get("metrics_path", "/metrics"), host, int(port), static.get("labels", {}))
    return found


def grafana_provisioning(services: dict[str, dict], kind: str) -> list[dict]:
    """The provisioning files of one kind (datasources, dashboards) that compose mounts into Grafana."""
    source, mode = bind_mounts(services["grafana"])[f"/etc/grafana/provisioning/{kind}"]
    assert mode == "ro" and source.is_dir(), source
    files = sorted(source.glob("*.yml")) + sorted(source.glob("*.yaml"))
    assert files, f"no provisioning file in {source}"
    return [yaml.safe_load(path.read_text()) for path in files]


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def test_the_file_follows_the_compose_specification():
    checker = BIN / "check-jsonschema"
    assert checker.exists(), "check-jsonschema is missing: install requirements-dev.txt"
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_whole_system_is_there(services):
    assert {"rabbitmq", "postgres", "mailpit", "migrate", "sync-api", "sync-worker", "mailer", "booking-expiry",
            "booking-expiry-scheduler", "prometheus", "grafana"} <= set(services)
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert services["postgres"]["image"] == "postgres:16"
    assert re.fullmatch(r"axllent/mailpit:v\d+\.\d+\.\d+", services["mailpit"]["image"])
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", services["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", services["grafana"]["image"])


def test_every_image_not_built_here_is_pinned_by_an_explicit_version(services):
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        assert PINNED.fullmatch(image), f"{name} runs {image}: pin a version tag (not latest, not untagged)"
        assert not image.endswith(":latest"), name


def test_every_file_compose_mounts_from_the_repository_exists(services):
    for name, service in services.items():
        for target, (source, mode) in bind_mounts(service).items():
            assert source.exists(), f"{name} mounts {source.relative_to(ROOT)}, which is not in the repository"
            assert mode == "ro", f"{name} may write into the repository at {target}"
    # Stateful services keep their data in named volumes, declared at the top level
    named = {volume.split(":")[0] for service in services.values() for volume in service.get("volumes", [])
             if not volume.startswith((".", "/"))}
    assert named == {"postgres-data", "rabbitmq-data", "prometheus-data", "grafana-data", *CLUSTER_VOLUMES}
    assert named <= set(yaml.safe_load(COMPOSE.read_text())["volumes"])


def test_each_service_starts_once_what_it_needs_is_healthy_or_done(services):
    for name, service in services.items():
        for needed, condition in service.get("depends_on", {}).items():
            assert needed in services, f"{name} depends on {needed}, which is not defined"
            condition = condition["condition"]
            if needed == "migrate":
                assert condition == "service_completed_successfully", name
            else:
                assert condition == "service_healthy", f"{name} waits for {needed} to be {condition}"
                assert "healthcheck" in services[needed], f"{name} waits for {needed}, which has no healthcheck"

    # Every antrian service waits for the schema and the broker; the schema waits for PostgreSQL
    for name, service in ours(services).items():
        if name not in {"migrate", "dev-school-api", "dev-payment-gateway"}:
            assert {"migrate", "rabbitmq"} <= set(service["depends_on"]), name
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["command"] == ["antrian", "migrate"]
    assert services["migrate"]["restart"] == "no"
    assert "mailpit" in services["mailer"]["depends_on"]


def test_images_are_built_from_each_services_dockerfile_with_the_repository_as_context(services):
    built = ours(services)
    dockerfiles = {service["build"]["dockerfile"] for service in built.values()}
    assert dockerfiles == {f"services/{name}/Dockerfile" for name in ("sync-api", "mailer", "booking-expiry")}
    for name, service in built.items():
        assert service["build"]["context"] == ".", name
        assert (ROOT / service["build"]["dockerfile"]).is_file(), name
    # One image per Dockerfile, whichever services run it
    images = {}
    for service in built.values():
        images.setdefault(service["build"]["dockerfile"], set()).add(service["image"])
    assert all(len(names) == 1 for names in images.values()), images
    assert services["migrate"]["image"] == services["sync-api"]["image"] == services["sync-worker"]["image"]


def test_booking_expiry_and_its_scheduler_run_from_one_image(services):
    worker, scheduler = services["booking-expiry"], services["booking-expiry-scheduler"]
    assert worker["image"] == scheduler["image"]
    assert "entrypoint" not in worker and worker["command"][:1] == ["--processes"], "the image's ENTRYPOINT runs"
    assert scheduler["entrypoint"] == ["booking-expiry-scheduler"]
    port = DEFAULT_METRICS_PORTS["booking-expiry"]
    assert worker["environment"]["METRICS_PORT"] == str(port)
    assert f"127.0.0.1:{port}:{port}" in worker["ports"]
    assert "EXPIRY_SWEEP_SECONDS" in scheduler["environment"]
    # Stopping the worker lets a sweep run out its time limit; every worker outlasts Dramatiq's shutdown
    assert seconds(worker["stop_grace_period"]) > SWEEP.time_limit_ms / 1000
    for name in ("sync-worker", "mailer", "booking-expiry"):
        assert seconds(services[name]["stop_grace_period"]) > SHUTDOWN_TIMEOUT_MS / 1000, name


def test_every_variable_an_antrian_service_gets_is_a_setting_antrian_reads(services):
    for name, service in ours(services).items():
        unknown = set(service.get("environment", {})) - SETTING_NAMES - set(EXTRAS)
        assert not unknown, f"{name} sets {sorted(unknown)}, which no antrian setting reads"


def test_with_nothing_in_the_shell_every_service_gets_valid_settings_and_only_development_secrets(services):
    text = COMPOSE.read_text()
    for match in INTERPOLATION.finditer(text):
        assert match["op"] == ":-", f"{match[0]} has no default: `docker compose up` must work with an empty shell"

    for name, service in ours(services).items():
        environment = {key: interpolate(str(value), {}) for key, value in service.get("environment", {}).items()}
        settings = load_settings(environment)  # raises ConfigError naming the variable on a bad value
        for required in REQUIRED.get(name, ()):
            assert settings.require(required.lower()), name
        for secret in ("API_TOKEN", "PAYMENT_SERVER_KEY"):
            if secret in environment:
                assert environment[secret].startswith("dev-"), f"{secret}'s default must say it is for development"

    # A value from the shell wins over the default
    sync_api = services["sync-api"]["environment"]
    assert interpolate(sync_api["API_TOKEN"], {"API_TOKEN": "from-the-shell"}) == "from-the-shell"


def test_ports_are_published_on_loopback_only(services):
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
    published = {port for service in services.values() for port in service.get("ports", [])}
    assert {"127.0.0.1:8000:8000", "127.0.0.1:8025:8025", "127.0.0.1:15672:15672", "127.0.0.1:9090:9090",
            "127.0.0.1:3000:3000"} <= published


def test_the_header_lists_a_url_for_every_published_port(services):
    header = COMPOSE.read_text().split("\nname:", 1)[0]
    listed = set()
    for first, last in re.findall(r"http://127\.0\.0\.1:(\d+)(?:-(\d+))?", header):
        listed.update(range(int(first), int(last or first) + 1))
    for name, service in services.items():
        for port in service.get("ports", []):
            assert int(port.split(":")[1]) in listed, f"{name}'s {port} has no URL in the header comment"
    assert "docker compose up" in header


def test_each_worker_is_healthy_while_its_processes_beat_and_consume(services):
    shared_scripts = tomllib.loads((ROOT / "shared" / "pyproject.toml").read_text())["project"]["scripts"]
    assert "antrian-worker-probe" in shared_scripts, "every image installs the probe with the antrian package"
    for name in WORKERS:
        test = services[name]["healthcheck"]["test"]
        # The probe's service name is the folder the worker beats in (/tmp/antrian-heartbeat-<name>/)
        assert test == ["CMD", "antrian-worker-probe", name, "--ready"], name


def test_rabbitmq_serves_its_management_ui_and_prometheus_metrics(services):
    rabbitmq = services["rabbitmq"]
    source, _mode = bind_mounts(rabbitmq)["/etc/rabbitmq/enabled_plugins"]
    text = source.read_text()
    match = re.fullmatch(r"\s*\[\s*([a-z_,\s]*?)\s*\]\s*\.\s*", text)
    assert match, f"{source} is not an Erlang list of plugin names ending with a dot: {text!r}"
    plugins = {plugin.strip() for plugin in match[1].split(",")}
    assert {"rabbitmq_management", "rabbitmq_prometheus"} <= plugins
    assert str(RABBITMQ_PROMETHEUS_PORT) in [str(port) for port in rabbitmq.get("expose", [])]
    assert not any(str(RABBITMQ_PROMETHEUS_PORT) in port for port in rabbitmq["ports"]), "inside the network only"


def test_prometheus_scrapes_every_process_by_service_name_on_the_port_it_serves(services):
    targets = scrape_targets()
    # Every antrian process serves /metrics on its METRICS_PORT; sync-api's is not its API port
    expected = {
        **{name: int(services[name]["environment"]["METRICS_PORT"]) for name in DEFAULT_METRICS_PORTS},
        "rabbitmq": RABBITMQ_PROMETHEUS_PORT,
    }
    # Each compose port agrees with antrian's defaults, so an image run without them serves the same port
    assert all(expected[name] == DEFAULT_METRICS_PORTS[name] for name in DEFAULT_METRICS_PORTS)
    assert expected["sync-api"] != int(services["sync-api"]["environment"]["PORT"]) == Settings().port

    assert set(targets) == set(expected), "one job per process that serves metrics, named after its service"
    for job, (path, host, port, labels) in targets.items():
        assert host == job and host in services, f"job {job} scrapes {host}, which is not a compose service"
        assert port == expected[job], f"job {job} scrapes port {port}; {job} serves {expected[job]}"
        assert path == "/metrics", job
        assert labels == {"namespace": "compose"}, "the dashboard's namespace variable offers one namespace"
    assert 0 < float(prometheus_config()["global"]["scrape_interval"].rstrip("s")) <= 60


def test_prometheus_reads_the_mounted_config_and_keeps_its_data_in_a_volume(services):
    prometheus = services["prometheus"]
    options = flags(prometheus["command"])
    source, mode = bind_mounts(prometheus)[options["config.file"]]
    assert source == DEPLOY / "prometheus.yml" and mode == "ro"
    assert f"prometheus-data:{options['storage.tsdb.path']}" in prometheus["volumes"]
    assert "127.0.0.1:9090:9090" in prometheus["ports"]
    assert "9090/-/ready" in " ".join(prometheus["healthcheck"]["test"])


def test_prometheus_loads_antrians_alerts_and_sends_them_to_the_alertmanager(services):
    # Given the rule file compose mounts beside the config, and the config's rule_files
    prometheus = services["prometheus"]
    mounts = bind_mounts(prometheus)
    [rule_file] = prometheus_config()["rule_files"]
    source, mode = mounts[rule_file]
    assert source == DEPLOY / "alerts.rules.yml" and mode == "ro"
    # Then it holds exactly the PrometheusRule's groups (one source of truth: scripts/compose-alert-rules.py)
    generated = yaml.safe_load(source.read_text())
    spec = yaml.safe_load((ROOT / "k8s" / "base" / "observability" / "alerts.yaml").read_text())["spec"]
    assert generated == {"groups": spec["groups"]}, "run .venv/bin/python scripts/compose-alert-rules.py"
    promtool = ROOT / "var" / "tools" / "promtool"
    assert promtool.exists(), "var/tools/promtool is missing: run scripts/ensure-promtool.sh (make test does)"
    checked = subprocess.run([str(promtool), "check", "rules", str(source)], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # And the alerts it fires go to the compose Alertmanager
    [target] = prometheus_config()["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert target == "alertmanager:9093" and "alertmanager" in services


def test_grafana_provisions_the_compose_prometheus_as_its_data_source(services):
    [config] = grafana_provisioning(services, "datasources")
    assert config["apiVersion"] == 1
    [datasource] = config["datasources"]
    assert datasource["uid"] == "prometheus" and datasource["type"] == "prometheus"
    assert datasource["isDefault"] is True, "the dashboard's datasource variable defaults to the default one"
    assert datasource["url"] == f"http://prometheus:{services['prometheus']['ports'][0].rsplit(':', 1)[1]}"
    assert datasource["access"] == "proxy"
    assert datasource["jsonData"]["timeInterval"] == prometheus_config()["global"]["scrape_interval"]
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


def test_grafana_loads_the_repositorys_dashboards_from_the_folder_kubernetes_uses(services):
    grafana = services["grafana"]
    [config] = grafana_provisioning(services, "dashboards")
    [provider] = config["providers"]
    assert provider["type"] == "file"
    folder, mode = bind_mounts(grafana)[provider["options"]["path"]]
    assert folder == ROOT / "k8s" / "base" / "observability" and folder.is_dir() and mode == "ro"
    dashboards = sorted(folder.glob("*.json"))  # Grafana's file provider loads only *.json
    assert dashboards, f"no dashboard JSON in {folder.relative_to(ROOT)}"

    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard.get("title") and isinstance(dashboard.get("panels"), list), path.name
        # The dashboard picks its data source through a variable of type prometheus: the one provisioned
        variables = {item["name"]: item for item in dashboard.get("templating", {}).get("list", [])}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        for reference in datasource_references(dashboard):
            assert reference in DASHBOARD_DATASOURCES, f"{path.name} reads {reference}, which compose does not provide"

    # The home page is the antrian dashboard
    home = PurePosixPath(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == PurePosixPath(provider["options"]["path"]) and (folder / home.name) in dashboards


def test_grafana_is_open_to_viewers_and_its_admin_password_is_a_development_default(services):
    environment = services["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer", "anonymous visitors may look, not edit"
    password = interpolate(environment["GF_SECURITY_ADMIN_PASSWORD"], {})
    assert password.startswith("dev-"), "the admin password's default must say it is for development"
    assert interpolate(environment["GF_SECURITY_ADMIN_PASSWORD"], {"GRAFANA_ADMIN_PASSWORD": "x"}) == "x"
    assert "grafana-data:/var/lib/grafana" in services["grafana"]["volumes"]
    assert "127.0.0.1:3000:3000" in services["grafana"]["ports"]


def datasource_references(node) -> list:
    """Every ``datasource`` value anywhere in a dashboard (panels, targets, variables, annotations)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append(value)
            found.extend(datasource_references(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(datasource_references(item))
    return found


def test_the_cluster_profile_runs_three_rabbitmq_nodes_that_find_each_other_by_name(services):
    single = services["rabbitmq"]
    assert "profiles" not in single, "`docker compose up` keeps its single node"
    cookies = set()
    for node in CLUSTER_NODES:
        service = services[node]
        assert service["profiles"] == ["cluster"], node
        assert service["image"] == single["image"], "the same image as the single node"
        assert service["hostname"] == node, "the node name rabbit@<hostname> is what cluster.conf lists"
        assert service["environment"]["RABBITMQ_DEFAULT_USER"] == single["environment"]["RABBITMQ_DEFAULT_USER"]
        assert service["environment"]["RABBITMQ_DEFAULT_PASS"] == single["environment"]["RABBITMQ_DEFAULT_PASS"]
        assert "rabbitmq-diagnostics" in service["healthcheck"]["test"], node
        assert f"{node}-data:/var/lib/rabbitmq" in service["volumes"], "its own data volume"
        mounts = bind_mounts(service)
        assert mounts["/etc/rabbitmq/enabled_plugins"] == bind_mounts(single)["/etc/rabbitmq/enabled_plugins"]
        config, mode = mounts["/etc/rabbitmq/conf.d/20-cluster.conf"]
        assert config == DEPLOY / "rabbitmq" / "cluster.conf" and mode == "ro", node
        cookies.add(service["environment"]["RABBITMQ_ERLANG_COOKIE"])

    # One cookie for all three, from the shell; its default says it is for development
    [cookie] = cookies
    assert INTERPOLATION.fullmatch(cookie)["name"] == "RABBITMQ_ERLANG_COOKIE"
    assert interpolate(cookie, {}).startswith("dev-")
    assert interpolate(cookie, {"RABBITMQ_ERLANG_COOKIE": "from-the-shell"}) == "from-the-shell"

    # cluster.conf names exactly these three nodes, discovered by the classic config
    settings = dict(line.split(" = ", 1) for line in (DEPLOY / "rabbitmq" / "cluster.conf").read_text().splitlines()
                    if line.strip() and not line.startswith("#"))
    assert settings["cluster_formation.peer_discovery_backend"] == "classic_config"
    listed = {value for key, value in settings.items() if key.startswith("cluster_formation.classic_config.nodes.")}
    assert listed == {f"rabbit@{node}" for node in CLUSTER_NODES}


def test_the_antrian_services_reach_the_cluster_when_broker_url_names_its_nodes(services):
    cluster_url = ";".join(f"amqp://antrian:antrian-dev@{node}:5672/" for node in CLUSTER_NODES)
    for name, service in ours(services).items():
        if "BROKER_URL" not in service.get("environment", {}):
            continue
        broker_url = service["environment"]["BROKER_URL"]
        assert interpolate(broker_url, {}) == "amqp://antrian:antrian-dev@rabbitmq:5672/", name
        assert interpolate(broker_url, {"BROKER_URL": cluster_url}) == cluster_url, name
        load_settings({"BROKER_URL": cluster_url})  # antrian takes the ";"-separated nodes
    header = COMPOSE.read_text().split("\nname:", 1)[0]
    assert f"BROKER_URL='{cluster_url}'" in header and "docker compose --profile cluster up" in header, \
        "the header shows how"
