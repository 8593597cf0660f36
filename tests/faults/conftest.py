"""Fixtures of the fault tests that break a server: each gets a private one (tests/nodes.py), never the shared ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from antrian.db.migrate import upgrade
from tests.nodes import PostgresInstance, RabbitNode, postgresql_instance, rabbitmq_node
from tests.support import show_output_if_failed


@pytest.fixture
def rabbit_node(request) -> Iterator[RabbitNode]:
    """A private RabbitMQ node for this test alone (its log shown when the test failed)."""
    with rabbitmq_node() as node:
        yield node
        show_output_if_failed(request, {f"RabbitMQ node {node.name}": node.log})


@pytest.fixture
def private_postgres(request) -> Iterator[PostgresInstance]:
    """A private PostgreSQL (``max_connections`` 20) holding a migrated database ``antrian``."""
    with postgresql_instance(max_connections=20) as instance:
        upgrade(instance.create_database("antrian"))
        yield instance
        show_output_if_failed(request, {f"PostgreSQL on port {instance.port}": instance.log})


@pytest.fixture
def private_engine(private_postgres) -> Iterator[Engine]:
    """The test's own engine on the private database; it keeps no connection open between uses."""
    engine = create_engine(private_postgres.url("antrian"), poolclass=NullPool)
    yield engine
    engine.dispose()
