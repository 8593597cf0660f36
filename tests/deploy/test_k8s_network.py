"""The namespace's network as k8s/ builds it: every pod denied everything in and out by default, then exactly the
flows each one needs (a table here), DNS for all, metrics ports open to Prometheus only, internet ports that do
not open the cluster's private networks, and ports that agree with the settings they serve."""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

import pytest

from antrian.config import DEFAULT_METRICS_PORTS, load_settings
from tests.deploy.k8s import (
    BUILDS,
    NAME_LABEL,
    build,
    config_map,
    find,
    kustomization,
    of_kind,
    pod_labels,
    schema_problems,
    the_container,
    workloads,
)

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast

#: The peers outside the namespace, as network-policies.yaml documents them, by the name the table uses.
PEERS = {
    "kube-dns": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}},
    "prometheus": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                   "podSelector": {"matchLabels": {NAME_LABEL: "prometheus"}}},
    "ingress-nginx": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
                      "podSelector": {"matchLabels": {NAME_LABEL: "ingress-nginx"}}},
    "keda": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
             "podSelector": {"matchLabels": {NAME_LABEL: "keda-operator"}}},
}
#: Address ranges an internet rule must leave out: private (RFC 1918, IPv6 ULA), shared (CGNAT, some clusters'
#: pods), link-local (the cloud's metadata service) and loopback.
PRIVATE = [ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                                                   "169.254.0.0/16", "127.0.0.0/8", "fc00::/7", "fe80::/10", "::1/128")]
ANY, INTERNET = "any", "internet"
DNS = {("kube-dns", "UDP", 53), ("kube-dns", "TCP", 53)}


def tcp(peer: str, *ports: int) -> set[tuple[str, str, int]]:
    return {(peer, "TCP", port) for port in ports}


#: Pod (its app.kubernetes.io/name) → what may reach it: (peer, protocol, port). A peer is one of PEERS, a pod of
#: the namespace by name, ANY (a rule naming ports only) or INTERNET (public addresses, PRIVATE left out).
INGRESS = {
    "sync-api": tcp("ingress-nginx", 8000) | tcp("prometheus", DEFAULT_METRICS_PORTS["sync-api"]),
    "sync-worker": tcp("prometheus", DEFAULT_METRICS_PORTS["sync-worker"]),
    "mailer": tcp("prometheus", DEFAULT_METRICS_PORTS["mailer"]),
    "booking-expiry": tcp("prometheus", DEFAULT_METRICS_PORTS["booking-expiry"]),
    "booking-expiry-schedule": set(),
    "antrian-migrate": set(),
}
#: Pod → where it may connect. PostgreSQL (5432) and the base's RabbitMQ (5672, management 15672) by port only,
#: wherever they run.
EGRESS = {
    "sync-api": DNS | tcp(ANY, 5432, 5672, 15672) | tcp(INTERNET, 443),  # + the payment gateway
    "sync-worker": DNS | tcp(ANY, 5432, 5672) | tcp(INTERNET, 443, 80),  # + the school's API
    "mailer": DNS | tcp(ANY, 5432, 5672) | tcp(INTERNET, 25, 465, 587),  # + SMTP
    "booking-expiry": DNS | tcp(ANY, 5432, 5672) | tcp(INTERNET, 443),  # + the gateway, for reconcile-payments
    "booking-expiry-schedule": DNS | tcp(ANY, 5432, 5672),
    "antrian-migrate": DNS | tcp(ANY, 5432),
}
#: prod's RabbitMQ cluster (pods app.kubernetes.io/name=rabbitmq): AMQP from what publishes or consumes and from
#: KEDA, management from sync-api, its nodes between them, its metrics from Prometheus; out to its nodes and
#: the Kubernetes API (peer discovery).
RABBITMQ_CLIENTS = ("sync-api", "sync-worker", "mailer", "booking-expiry", "booking-expiry-schedule")
RABBITMQ_INGRESS = ({(name, "TCP", 5672) for name in RABBITMQ_CLIENTS} | tcp("keda", 5672) | tcp("sync-api", 15672)
                    | tcp("rabbitmq", 4369, 25672) | tcp("prometheus", 15692))
RABBITMQ_EGRESS = DNS | tcp("rabbitmq", 4369, 25672) | tcp(ANY, 443, 6443)
#: The ports that serve metrics without a login: Prometheus alone may reach them.
METRICS_PORTS = {**{name: {port} for name, port in DEFAULT_METRICS_PORTS.items()}, "rabbitmq": {15692}}


@pytest.fixture(scope="module", params=list(BUILDS))
def built(request) -> list[dict]:
    return build(request.param)


def pods(built: list[dict]) -> dict[str, dict]:
    """Every pod the build runs in its namespace, by name: its workloads' and the RabbitMQ cluster's, whose
    operator labels them app.kubernetes.io/name=<the cluster's name>."""
    found = {workload["metadata"]["name"]: pod_labels(workload) for workload in workloads(built)}
    found |= {cluster["metadata"]["name"]: {NAME_LABEL: cluster["metadata"]["name"]}
              for cluster in of_kind(built, "RabbitmqCluster")}
    return found


def selects_pod(selector: dict, labels: dict) -> bool:
    """A NetworkPolicy's podSelector: the empty one selects every pod of the namespace."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if {"In": labels.get(key) not in values, "NotIn": labels.get(key) in values,
                "Exists": key not in labels, "DoesNotExist": key in labels}[operator]:
            return False
    return True


def is_internet(block: dict) -> bool:
    """An ipBlock of every public address: all of IPv4 or IPv6, less every PRIVATE range of its family."""
    network = ipaddress.ip_network(block["cidr"])
    excepted = [ipaddress.ip_network(net) for net in block.get("except", [])]
    private = [net for net in PRIVATE if net.version == network.version]
    return network.prefixlen == 0 and all(any(net.subnet_of(out) for out in excepted) for net in private)


def peer_names(peer: dict, everyone: dict[str, dict]) -> set[str]:
    """What a from/to entry names, in the table's words; anything else comes back as its JSON, to fail."""
    for name, known in PEERS.items():
        if peer == known:
            return {name}
    if set(peer) == {"ipBlock"} and is_internet(peer["ipBlock"]):
        return {INTERNET}
    if set(peer) == {"podSelector"}:  # pods of this namespace
        return {name for name, labels in everyone.items() if selects_pod(peer["podSelector"], labels)}
    return {json.dumps(peer, sort_keys=True)}


def flows(built: list[dict], pod: str, direction: str) -> set[tuple[str, str, int]]:
    """What the policies selecting ``pod`` allow it (Ingress: from whom; Egress: to what), as their union."""
    everyone = pods(built)
    found = set()
    isolated = False  # a pod no policy selects for a direction is open to anything in that direction
    for policy in of_kind(built, "NetworkPolicy"):
        spec = policy["spec"]
        if direction not in spec["policyTypes"] or not selects_pod(spec["podSelector"], everyone[pod]):
            continue
        isolated = True
        for rule in spec.get(direction.lower(), []):
            peers = rule.get("from" if direction == "Ingress" else "to")
            names = set().union(*(peer_names(peer, everyone) for peer in peers)) if peers else {ANY}
            ports = [(port.get("protocol", "TCP"), port["port"]) for port in rule.get("ports", [])]
            assert ports, f"{policy['metadata']['name']}: a rule without ports opens every port"
            assert all(set(port) <= {"protocol", "port"} for port in rule["ports"]), "no port ranges"
            found |= {(name, protocol, port) for name in names for protocol, port in ports}
    return found if isolated else {(ANY, "any protocol", "any port")}


def expected(built: list[dict], direction: str) -> dict[str, set]:
    table = dict(INGRESS if direction == "Ingress" else EGRESS)
    if of_kind(built, "RabbitmqCluster"):
        table["rabbitmq"] = RABBITMQ_INGRESS if direction == "Ingress" else RABBITMQ_EGRESS
    return table


def test_every_network_policy_passes_the_networking_v1_schema(built):
    policies = of_kind(built, "NetworkPolicy")
    assert policies and all(item["apiVersion"] == "networking.k8s.io/v1" for item in policies)
    problems = [problem for item in policies for problem in schema_problems(item)]
    assert not problems, "\n".join(problems)


def test_every_pod_of_the_namespace_is_denied_everything_by_default(built):
    deny = find(built, "NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, "no rule: nothing allowed"
    # Every other policy names its pods; only DNS is for all, and only out
    for policy in of_kind(built, "NetworkPolicy"):
        if policy["spec"]["podSelector"] == {} and policy is not deny:
            assert policy["metadata"]["name"] == "allow-dns" and policy["spec"]["policyTypes"] == ["Egress"]
    # Each pod is also named by a policy of its own, for both directions
    for name, labels in pods(built).items():
        own = [policy for policy in of_kind(built, "NetworkPolicy") if policy["spec"]["podSelector"]
               and selects_pod(policy["spec"]["podSelector"], labels)]
        assert [policy["metadata"]["name"] for policy in own] == [name], name
        assert own[0]["spec"]["policyTypes"] == ["Ingress", "Egress"], name


@pytest.mark.parametrize("direction", ["Ingress", "Egress"])
def test_every_pod_is_allowed_exactly_the_flows_of_the_table(built, direction):
    table = expected(built, direction)
    assert set(pods(built)) == set(table), "a pod without a row in the table (or a row without a pod)"
    for pod, allowed in table.items():
        found = flows(built, pod, direction)
        assert found == allowed, (f"{pod} {direction}: allowed beyond the table {sorted(found - allowed)}, "
                                  f"missing {sorted(allowed - found)}")


def test_every_pod_may_resolve_names_through_the_clusters_dns(built):
    for pod in pods(built):
        assert DNS <= flows(built, pod, "Egress"), pod


def test_metrics_ports_answer_prometheus_only_and_serve_what_the_monitors_scrape(built):
    for pod, ports in METRICS_PORTS.items():
        if pod not in pods(built):
            continue
        ingress = flows(built, pod, "Ingress")
        for port in ports:
            assert {peer for peer, _, allowed in ingress if allowed == port} == {"prometheus"}, (pod, port)
    # Prometheus reaches nothing else, and every port a policy opens on a workload is one its container serves
    for workload in workloads(built):
        name = workload["metadata"]["name"]
        served = {port["containerPort"] for port in the_container(workload).get("ports", [])}
        ingress = flows(built, name, "Ingress")
        assert {port for _, _, port in ingress} <= served, name
        assert {port for peer, _, port in ingress if peer == "prometheus"} == {
            port["containerPort"] for port in the_container(workload).get("ports", []) if port["name"] == "metrics"}
    # The monitors scrape the ports named metrics, which are those
    assert {endpoint["port"] for monitor in of_kind(built, "ServiceMonitor")
            for endpoint in monitor["spec"]["endpoints"]} == {"metrics"}
    assert {endpoint["port"] for monitor in of_kind(built, "PodMonitor")
            for endpoint in monitor["spec"]["podMetricsEndpoints"]} == {"metrics"}


def test_internet_rules_leave_the_clusters_private_networks_out(built):
    for policy in of_kind(built, "NetworkPolicy"):
        for rule in policy["spec"].get("egress", []) + policy["spec"].get("ingress", []):
            blocks = [peer["ipBlock"] for peer in rule.get("to", rule.get("from", [])) if "ipBlock" in peer]
            assert all(is_internet(block) for block in blocks), (policy["metadata"]["name"], blocks)
            if blocks:  # both families, so an IPv6 or dual-stack cluster reaches the same hosts
                assert {ipaddress.ip_network(block["cidr"]).version for block in blocks} == {4, 6}


def test_the_egress_ports_are_those_of_the_configured_services(built):
    """The ports the settings name (DATABASE_URL, BROKER_URL, UPSTREAM_BASE_URL, PAYMENT_API_BASE_URL, SMTP_PORT)
    are among those the policies open to the workloads that use them."""
    settings = load_settings(config_map(built)["data"])

    def port_of(url: str) -> int:
        parts = urlsplit(url)
        return parts.port or {"https": 443, "http": 80, "amqp": 5672, "amqps": 5671}.get(parts.scheme, 5432)

    def opened(pod: str, peers: set[str]) -> set[int]:
        return {port for peer, protocol, port in flows(built, pod, "Egress") if peer in peers and protocol == "TCP"}

    in_namespace = set(pods(built))
    for pod, keys in {"sync-api": ("db", "broker", "payment"), "sync-worker": ("db", "broker", "upstream"),
                      "mailer": ("db", "broker", "smtp"), "booking-expiry": ("db", "broker", "payment"),
                      "booking-expiry-schedule": ("db", "broker"), "antrian-migrate": ("db",)}.items():
        needs = {"db": (port_of(settings.database_url), {ANY}),
                 "broker": (port_of(settings.broker_url), {ANY} | in_namespace),
                 "payment": (port_of(settings.payment_status_api_url()), {INTERNET}),
                 "upstream": (port_of(settings.upstream_base_url), {INTERNET}),
                 "smtp": (settings.smtp_port, {INTERNET})}
        for key in keys:
            port, peers = needs[key]
            assert port in opened(pod, peers), f"{pod} cannot reach {key} on {port}"


def test_sync_api_reaches_the_management_api_where_it_looks_for_it(built):
    """/api/queues asks RABBITMQ_MANAGEMENT_URL, or BROKER_URL's host on 15672 (antrian.jobs.queue_stats)."""
    from antrian.jobs.queue_stats import MANAGEMENT_PORT

    assert ("any", "TCP", MANAGEMENT_PORT) in flows(built, "sync-api", "Egress")


def test_prods_rabbitmq_policy_is_its_overlays_and_names_the_clusters_pods():
    built = build("prod")
    cluster = find(built, "RabbitmqCluster", "rabbitmq")
    policy = find(built, "NetworkPolicy", cluster["metadata"]["name"])
    assert policy["spec"]["podSelector"] == {"matchLabels": {NAME_LABEL: cluster["metadata"]["name"]}}
    assert "rabbitmq-network.yaml" in kustomization("prod")["resources"]
    # Every antrian pod that reaches RabbitMQ in the table is one the cluster admits, and no other
    talks = {pod for pod, allowed in EGRESS.items() if any(port == 5672 for _, _, port in allowed)}
    assert talks == set(RABBITMQ_CLIENTS)
