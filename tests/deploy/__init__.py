"""Offline checks of what deploys antrian: docker-compose.yml, k8s/ and the services' Dockerfiles.

No Docker engine or cluster is needed: kustomize builds k8s/base, the Compose Specification's and
Kubernetes' JSON schemas (bundled with check-jsonschema and kubernetes-validate) check the shapes, and
the tests check the promises the code relies on (time limits, ports, settings' names, no secrets).
"""

from __future__ import annotations

from dataclasses import fields

from antrian.config import Settings

#: Every variable antrian's services read: SPEC's configuration, as antrian.config parses it.
SETTING_NAMES = frozenset(item.name.upper() for item in fields(Settings))
