"""Fixtures for the aggregator's store: every store test runs on a real SQLite file and on
a real PostgreSQL (started once per test run, see tests/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from cloud.store.database import open_store
from cloud.store.schema import metadata
from tests.postgres import PostgresServer

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty, migrated store."""
    if request.param == "sqlite":
        sqlite_engine = open_store(f"sqlite:///{tmp_path / 'cloud.db'}")
        yield sqlite_engine
        sqlite_engine.dispose()
        return
    postgres_engine: Engine = request.getfixturevalue("postgres_engine")
    names = ", ".join(table.name for table in metadata.sorted_tables)
    with postgres_engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        # The default fleet, as the migration made it: every new edge goes into it.
        connection.execute(
            text("INSERT INTO fleets (id, name, created_at) VALUES (1, 'default', now())")
        )
        connection.execute(text("SELECT setval(pg_get_serial_sequence('fleets', 'id'), 1)"))
    yield postgres_engine


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database with no schema at all."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cloud.db'}"
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return postgres.create_database().render_as_string(hide_password=False)
