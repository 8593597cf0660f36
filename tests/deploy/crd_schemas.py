"""Schemas of the custom resources k8s/ uses, which kubernetes-validate has none of (it knows core kinds only).

The models are cloudcoil's, generated from the CRDs that KEDA (cloudcoil-models-keda) and prometheus-operator
(cloudcoil-models-prometheus-operator) publish, pinned in requirements-dev.txt. They are pydantic models that
ignore unknown fields, so :func:`problems` validates in strict mode (no "3" for 3) and then dumps the model
back: a field of the manifest that did not come back out is one the CRD does not have (misspelt or misplaced).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as monitoring

#: (apiVersion, kind) → model. A custom resource of another kind fails the tests until it is added here.
MODELS: dict[tuple[str, str], type[pydantic.BaseModel]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): monitoring.PodMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
}
#: (apiVersion, kind) → the CRD's openAPIV3Schema stored in crds/ (JSON), for operators without a cloudcoil
#: model: RabbitMQ's cluster operator (its "$comment" names the operator's commit it was taken from).
SCHEMAS: dict[tuple[str, str], str] = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmq.com_rabbitmqclusters.v1beta1.json",
    # prometheus-operator's AlertmanagerConfig, which cloudcoil's models do not have (k8s/base/observability).
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): "monitoring.coreos.com_alertmanagerconfigs.v1alpha1.json",
}
CRDS = Path(__file__).parent / "crds"
#: The API groups whose objects are checked here rather than by kubernetes-validate.
GROUPS = {api_version.split("/")[0] for api_version, _ in [*MODELS, *SCHEMAS]}


def knows(item: dict) -> bool:
    """Whether ``item`` belongs here: a kind of KEDA or prometheus-operator (known or not)."""
    api_version = item.get("apiVersion", "")
    return "/" in api_version and api_version.split("/")[0] in GROUPS


def problems(item: dict) -> list[str]:
    """Why ``item`` does not match its CRD's schema; empty when it does."""
    key = (item.get("apiVersion"), item.get("kind"))
    if key in SCHEMAS:
        return _schema_problems(item, SCHEMAS[key])  # type: ignore[index]
    model = MODELS.get(key)  # type: ignore[arg-type]
    if model is None:
        known = sorted([*MODELS, *SCHEMAS])
        return [f"no model for {item.get('apiVersion')} {item.get('kind')} (known: {known})"]
    try:
        parsed = model.model_validate(item, strict=True)
    except pydantic.ValidationError as exc:
        return [f"{_path(error['loc'])}: {error['msg']} (got {error.get('input')!r})" for error in exc.errors()]
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return list(_differences(item, dumped, ()))


def _differences(given: Any, kept: Any, path: tuple) -> list[str]:
    if isinstance(given, dict) and isinstance(kept, dict):
        found = [f"{_path((*path, key))}: unknown field" for key in given if key not in kept]
        for key in given.keys() & kept.keys():
            found += _differences(given[key], kept[key], (*path, key))
        return found
    if isinstance(given, list) and isinstance(kept, list) and len(given) == len(kept):
        return [problem for index, (one, other) in enumerate(zip(given, kept, strict=True))
                for problem in _differences(one, other, (*path, index))]
    if given != kept:
        return [f"{_path(path)}: {given!r} was read as {kept!r}"]
    return []


def _path(location: tuple) -> str:
    return ".".join(str(part) for part in location) or "(the object)"


def _schema_problems(item: dict, file: str) -> list[str]:
    """``item`` against a stored openAPIV3Schema, strictly: a field the schema does not list is an error."""
    body = {key: value for key, value in item.items() if key not in {"apiVersion", "kind", "metadata"}}
    return [f"{_path(tuple(error.absolute_path))}: {error.message}"
            for error in sorted(_validator(file).iter_errors(body), key=lambda error: list(error.absolute_path))]


@functools.cache
def _validator(file: str) -> jsonschema.Draft7Validator:
    schema = json.loads((CRDS / file).read_text())
    schema.pop("$comment", None)
    properties = schema.get("properties", {})
    # metadata is the API server's (checked by kubectl), as in the pydantic models
    schema["properties"] = {key: value for key, value in properties.items() if key not in {"apiVersion", "kind",
                                                                                             "metadata"}}
    return jsonschema.Draft7Validator(_strict(schema))


def _strict(node: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever it lists properties and does not keep unknown
    fields (as the API server prunes them), and ``x-kubernetes-int-or-string`` as an integer or a string."""
    if isinstance(node, list):
        return [_strict(one) for one in node]
    if not isinstance(node, dict):
        return node
    node = {key: _strict(value) for key, value in node.items()}
    if node.get("x-kubernetes-int-or-string"):
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    return node
