"""Opening the aggregator's store and bringing its schema up to date.

`open_store(url)` gives an Engine on SQLite or PostgreSQL with the schema migrated by
Alembic (the migrations ship in cloud/store/migrations; no alembic.ini is read). A
database written by a newer release is refused, not used.

On SQLite every connection gets WAL, `synchronous=FULL`, foreign keys and a busy timeout,
and every transaction opened with `engine.begin()` starts with `BEGIN IMMEDIATE`: it
holds the write lock from its first statement, so two writers wait for each other
instead of failing halfway. Reads go through `reading(engine)`, which does not take it.
On PostgreSQL, writers lock the rows they depend on (`SELECT ... FOR UPDATE`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

MIGRATIONS = Path(__file__).parent / "migrations"
# Seconds a SQLite writer waits for another one before giving up.
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Replicas starting together against one PostgreSQL migrate one at a time.
_MIGRATION_LOCK_KEY = 0x6F637070  # "ocpp"
_READING = "ocpp_cloud_reading"


class StoreError(Exception):
    """The store cannot be opened or used; the message says what to do."""


def open_store(url: str) -> Engine:
    """An Engine on the store at `url` (sqlite:///PATH or postgresql+psycopg://...), its
    schema created or migrated to the newest this code knows."""
    engine = create_store_engine(url)
    try:
        migrate(engine)
    except SQLAlchemyError as error:
        engine.dispose()
        raise StoreError(f"cannot open the store at {_safe(url)}: {error}") from error
    except StoreError:
        engine.dispose()
        raise
    return engine


def create_store_engine(url: str) -> Engine:
    """An Engine with this store's connection settings, without touching the schema."""
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise StoreError(f"not a database URL: {url!r}") from error
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # the driver we ship
    if parsed.drivername.startswith("sqlite"):
        if parsed.database in (None, "", ":memory:"):
            raise StoreError("SQLite needs a file: sqlite:///cloud.db")
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        _configure_sqlite(engine)
        return engine
    if parsed.drivername == "postgresql+psycopg":
        return create_engine(parsed, pool_pre_ping=True)
    raise StoreError(f"unsupported database {parsed.drivername!r}: use sqlite or postgresql")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        # BEGIN is ours to send (below); pysqlite's own would start too late and deferred.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: an event is on disk before the edge is told it may forget it.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        reading = connection.get_execution_options().get(_READING, False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads only: on SQLite without the write lock, on PostgreSQL a
    read-only snapshot, so that several queries see one state."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        else:
            connection.execution_options(**{_READING: True})
        yield connection


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(engine: Engine) -> str:
    """Apply every migration the database lacks, in one transaction; the revision now."""
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    known = {revision.revision for revision in script.walk_revisions()}
    head = script.get_current_head()
    assert head is not None
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        current = MigrationContext.configure(connection).get_current_revision()
        if current is not None and current not in known:
            raise StoreError(
                f"the store's schema is at revision {current}, newer than this ocpp-cloud "
                f"knows (up to {head}): run the newer release that wrote it, or restore a backup"
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return head


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with reading(engine) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unreadable URL)"
