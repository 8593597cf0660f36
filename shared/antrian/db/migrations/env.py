"""Alembic environment: migrations run under an advisory lock, so two replicas never race."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.exc import ArgumentError

from antrian.db.engine import make_engine
from antrian.db.models import Base

#: Key of the advisory lock held while migrating (any fixed number; "antrian" in ASCII).
MIGRATION_LOCK_KEY = 0x616E747269616E

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:  # antrian.db.migrate.alembic_config always sets it; create_engine(None) raises this too
        raise ArgumentError("sqlalchemy.url is not set: migrations run through antrian.db.migrate")
    # No statement timeout (a long migration must not be cut off half-way) and no lock timeout (a replica waits
    # here for another's migrations to finish, however long they take); the idle-in-transaction bound stays.
    engine = make_engine(url, pool_size=1, max_overflow=0, statement_timeout_ms=0, lock_timeout_ms=0)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=Base.metadata)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
    engine.dispose()


run_migrations_online()
