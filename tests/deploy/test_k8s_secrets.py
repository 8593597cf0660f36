"""Each workload gets only the keys of the Secret antrian-secrets that its process reads, one by one (env
secretKeyRef), never the whole Secret: the mailer holds no API_TOKEN nor PAYMENT_SERVER_KEY, and so on.

The expected keys are a table here, and the table is checked against the code: the secret settings that each
process can reach (the modules its entry point imports, followed statically) must be the ones it is given."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import re
from pathlib import Path

import pytest

from tests.deploy.k8s import (
    BASE,
    BUILDS,
    SECRET_NAME,
    build,
    compose_images,
    containers,
    pod_spec,
    process_argv,
    repository,
    the_container,
    workloads,
)

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast

#: Workload → the Secret's keys it reads → whether the key is optional (a required one, missing, keeps the pod
#: from starting). PGPASSWORD (libpq's) or a whole DATABASE_URL: whichever the operator put in the Secret.
EXPECTED: dict[str, dict[str, bool]] = {
    "sync-api": {"API_TOKEN": False, "PGPASSWORD": True, "DATABASE_URL": True, "BROKER_URL": False,
                 "PAYMENT_SERVER_KEY": True, "RABBITMQ_MANAGEMENT_URL": True},
    "sync-worker": {"PGPASSWORD": True, "DATABASE_URL": True, "BROKER_URL": False, "UPSTREAM_TOKEN": True},
    "mailer": {"PGPASSWORD": True, "DATABASE_URL": True, "BROKER_URL": False, "SMTP_USERNAME": True,
               "SMTP_PASSWORD": True},
    "booking-expiry": {"PGPASSWORD": True, "DATABASE_URL": True, "BROKER_URL": False, "PAYMENT_SERVER_KEY": True},
    "booking-expiry-schedule": {"PGPASSWORD": True, "DATABASE_URL": True, "BROKER_URL": False},
    "antrian-migrate": {"PGPASSWORD": True, "DATABASE_URL": True},
}
#: The setting (antrian.config.Settings) behind each key of the Secret; PGPASSWORD goes with DATABASE_URL.
KEY_SETTINGS = {"API_TOKEN": "api_token", "PGPASSWORD": "database_url", "DATABASE_URL": "database_url",
                "BROKER_URL": "broker_url", "UPSTREAM_TOKEN": "upstream_token", "SMTP_USERNAME": "smtp_username",
                "SMTP_PASSWORD": "smtp_password", "PAYMENT_SERVER_KEY": "payment_server_key",
                "RABBITMQ_MANAGEMENT_URL": "rabbitmq_management_url"}
#: antrian's own packages: the imports followed. antrian.config defines every setting and reads none for a process.
PACKAGES = ("antrian", "sync_api", "mailer", "booking_expiry")
DEFINITIONS = {"antrian.config"}


@pytest.fixture(scope="module", params=list(BUILDS))
def built(request) -> list[dict]:
    return build(request.param)


def secret_keys(workload: dict) -> dict[str, bool]:
    """The Secret's keys a workload's containers get (key → optional); fails on any way of getting the whole
    Secret (envFrom secretRef, a secret volume), which would hand it every key."""
    name = workload["metadata"]["name"]
    keys: dict[str, bool] = {}
    for container in containers(workload):
        whole = [source for source in container.get("envFrom", []) if "secretRef" in source]
        assert not whole, f"{name} loads a whole Secret (envFrom {whole}): give it the keys it reads, one by one"
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                continue
            assert ref["name"] == SECRET_NAME, (name, ref)
            assert item["name"] == ref["key"], f"{name}: {ref['key']} is read as {item['name']}, not by its own name"
            keys[ref["key"]] = ref.get("optional", False)
    for volume in pod_spec(workload).get("volumes", []):
        projected = [source for source in volume.get("projected", {}).get("sources", []) if "secret" in source]
        assert "secret" not in volume and not projected, f"{name} mounts a Secret as files ({volume['name']})"
    return keys


def test_every_workload_reads_exactly_the_secret_keys_of_the_table(built):
    found = {workload["metadata"]["name"]: secret_keys(workload) for workload in workloads(built)}
    assert set(found) == set(EXPECTED), "a workload without a row here: add its keys to EXPECTED"
    for name, keys in found.items():
        assert keys == EXPECTED[name], f"{name} reads {keys}, the table says {EXPECTED[name]}"


def test_the_mailer_gets_neither_the_api_token_nor_the_payment_server_key(built):
    mailer = secret_keys(next(item for item in workloads(built) if item["metadata"]["name"] == "mailer"))
    assert not {"API_TOKEN", "PAYMENT_SERVER_KEY", "UPSTREAM_TOKEN"} & set(mailer), mailer


def test_the_kustomizations_header_lists_every_key_and_who_reads_it():
    """The operators' list of the Secret's keys (k8s/base/kustomization.yaml) names the keys the workloads read."""
    header = (BASE / "kustomization.yaml").read_text().split("\napiVersion:")[0]
    listed = {}
    for line in header.splitlines():
        row = re.match(r"#   ((?:[A-Z_]+)(?:, [A-Z_]+)*) {2,}(\S.*)", line)
        if row:
            for key in row.group(1).split(", "):
                listed[key] = row.group(2)
    read = {key for keys in EXPECTED.values() for key in keys}
    assert set(listed) == read, (set(listed) ^ read)
    for key, readers in listed.items():
        readers = readers.split(":")[0]
        names = {name for name, keys in EXPECTED.items() if key in keys}
        required = "(required)" in readers
        assert all(EXPECTED[name][key] is not required for name in names), f"{key}: required is {required}?"
        if readers.startswith("every workload"):
            but = re.match(r"every workload but ([\w-]+)", readers)
            assert names == set(EXPECTED) - {but.group(1) if but else None}, f"{key}: {readers!r}, read by {names}"
        else:
            assert set(re.findall(r"[a-z][\w-]*[a-z]", readers)) & set(EXPECTED) == names, f"{key}: {readers!r}"
    assert set(KEY_SETTINGS) == read


# --- what the code reads ---------------------------------------------------------------------------------------

def _source(module: str) -> Path | None:
    if module.split(".")[0] not in PACKAGES:
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ModuleNotFoundError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


@functools.cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_source(module).read_text())


def _imported(module: str, nodes: list[ast.AST]) -> set[str]:
    """The modules ``nodes`` import: import statements, and strings naming a module of antrian's (what gunicorn
    loads, ``sync_api.wsgi:app``; the module a worker boots, ``boot("mailer", "mailer.emails.actors")``)."""
    package = module if _source(module).name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in (inner for outer in nodes for inner in ast.walk(outer)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            named = re.fullmatch(r"(?:python:)?([a-z_][a-z0-9_.]*)(?::[A-Za-z_]\w*)?", node.value)
            if named and "." in named.group(1):
                found.add(named.group(1))
    return {name for name in found if _source(name) is not None}


def _settings_read(nodes: list[ast.AST]) -> set[str]:
    """The secret settings ``nodes`` name: ``settings.api_token``, ``require=("api_token",)``."""
    names = set(KEY_SETTINGS.values())
    found = set()
    for node in (inner for outer in nodes for inner in ast.walk(outer)):
        if isinstance(node, ast.Attribute) and node.attr in names:
            found.add(node.attr)
        elif isinstance(node, ast.Constant) and node.value in names:
            found.add(node.value)
    return found


def _module_level(tree: ast.Module) -> list[ast.AST]:
    return [node for node in tree.body if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]


def read_by(roots: set[str], nodes: list[ast.AST], module: str) -> set[str]:
    """The secret settings that code can read, starting from ``nodes`` of ``module`` (an entry point's function)
    and following imports: a module imported is read whole; a package that only contains one (its
    ``__init__`` runs, its functions need not) is read at its top level."""
    read = _settings_read(nodes) if module not in DEFINITIONS else set()
    whole, seen, top_level = set(), set(), set()
    todo = sorted(roots | _imported(module, nodes))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        whole.add(name)
        parents = [name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)]
        top_level |= set(parents)
        body = _tree(name).body
        if name not in DEFINITIONS:
            read |= _settings_read(body)
        todo += sorted(_imported(name, body) - seen)
    for parent in sorted(top_level - whole):
        nodes = _module_level(_tree(parent))
        read |= _settings_read(nodes)
        todo = sorted(_imported(parent, nodes) - seen)
        if todo:  # what a package's top level imports is read whole
            read |= read_by(set(todo), [], todo[0])
    return read


def code_reads(workload: dict) -> set[str]:
    """The secret settings the process a workload's container starts can read, from its console script on."""
    container = the_container(workload)
    argv = process_argv(container, compose_images()[repository(container["image"])])
    [script] = importlib.metadata.entry_points(group="console_scripts", name=argv[0])
    module, _, attribute = script.value.partition(":")
    tree = _tree(module)
    [function] = [node for node in tree.body if getattr(node, "name", None) == attribute] or [None]
    if isinstance(function, ast.FunctionDef):  # that function, and what its module imports at its top
        return read_by(set(), [function, *_module_level(tree)], module)
    return read_by({module}, [], module)  # a command of many (antrian's click group): all of it


def test_each_long_running_process_is_given_exactly_the_secrets_its_code_reads():
    """For a Deployment, the table's keys are the secret settings its code reaches: a key it is given and never
    reads fails, and so does a setting its code started to read that no key gives it."""
    for workload in workloads(build("base")):
        name = workload["metadata"]["name"]
        reads = code_reads(workload)
        given = {KEY_SETTINGS[key] for key in EXPECTED[name]}
        if workload["kind"] == "Deployment":
            assert given == reads, f"{name}: given {sorted(given)}, its code reads {sorted(reads)}"
        else:
            # `antrian COMMAND` imports every command; what one command needs is the table's (never more)
            assert given <= reads, f"{name} is given {sorted(given - reads)}, which antrian's code never reads"


def test_the_code_check_sees_what_it_should():
    """The reading above is not blind: the mailer's code reads the SMTP login and not the API token, sync-api's
    the API token, sync-worker's the upstream token, booking-expiry's the payment server key."""
    base = {item["metadata"]["name"]: item for item in workloads(build("base"))}
    assert {"smtp_username", "smtp_password"} <= code_reads(base["mailer"])
    assert not {"api_token", "payment_server_key", "upstream_token"} & code_reads(base["mailer"])
    assert {"api_token", "payment_server_key", "rabbitmq_management_url"} <= code_reads(base["sync-api"])
    assert "api_token" not in code_reads(base["sync-worker"]) and "upstream_token" in code_reads(base["sync-worker"])
    assert "payment_server_key" in code_reads(base["booking-expiry"])
