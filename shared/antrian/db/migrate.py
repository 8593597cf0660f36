"""Apply Alembic migrations from code (``antrian migrate``), creating the database if it is missing."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, make_url, text


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "antrian.db:migrations")
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def create_database_if_missing(database_url: str) -> bool:
    """Create the URL's database through the server's ``postgres`` database; True if it was created."""
    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            ).scalar()
            if not exists:
                if url.database is None:  # antrian.config refuses such a URL; this is for a caller that did not ask it
                    raise ValueError("the database URL names no database")
                quoted = connection.dialect.identifier_preparer.quote(url.database)
                connection.execute(text(f"CREATE DATABASE {quoted}"))
            return not exists
    finally:
        admin.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
