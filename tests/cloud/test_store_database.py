"""Opening the store: migrations from nothing, the schema they make, SQLite's pragmas,
and a database newer than the code refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from cloud.store.database import StoreError, alembic_config, open_store, schema_revision
from cloud.store.schema import metadata


def test_a_new_database_is_migrated_to_the_schema_module(empty_database_url: str) -> None:
    newest = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert newest is not None and newest >= "0002"
    engine = open_store(empty_database_url)
    try:
        assert schema_revision(engine) == newest
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            # The migrations make exactly what cloud/store/schema.py describes.
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()
    again = open_store(empty_database_url)  # a second start finds nothing to do
    assert schema_revision(again) == newest
    again.dispose()


def test_a_schema_newer_than_the_code_is_refused(empty_database_url: str) -> None:
    open_store(empty_database_url).dispose()
    engine = open_store(empty_database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(StoreError, match="revision 0099, newer than this ocpp-cloud"):
        open_store(empty_database_url)


def test_sqlite_connections_get_wal_full_sync_foreign_keys_and_a_busy_timeout(
    tmp_path: Path,
) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'deeper' / 'cloud.db'}")
    try:
        with engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar_one()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragma == {
            "journal_mode": "wal",
            "synchronous": 2,  # FULL
            "foreign_keys": 1,
            "busy_timeout": 10_000,
        }
        assert (tmp_path / "deeper" / "cloud.db").is_file()
    finally:
        engine.dispose()


def test_foreign_keys_hold(engine: Engine) -> None:
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO chargers (edge_id, charger_id, updated_at) "
                "VALUES ('nowhere', 'CP-1', CURRENT_TIMESTAMP)"
            )
        )


def test_unusable_urls_are_refused_with_what_to_write() -> None:
    with pytest.raises(StoreError, match="sqlite or postgresql"):
        open_store("mysql://user@host/db")
    with pytest.raises(StoreError, match="SQLite needs a file"):
        open_store("sqlite://")
    with pytest.raises(StoreError, match="not a database URL"):
        open_store("cloud.db")


def test_a_plain_postgresql_url_uses_psycopg(postgres_engine: Engine) -> None:
    url = postgres_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    engine = open_store(url)
    assert engine.url.drivername == "postgresql+psycopg"
    engine.dispose()
