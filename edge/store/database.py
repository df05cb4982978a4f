"""Opening the SQLite file and bringing its schema up to date.

Migrations are numbered SQL files in `migrations/`; `PRAGMA user_version` holds
the number of the last one applied. A file written by a newer release is refused
rather than used or overwritten.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import sqlite_utils


class StoreError(Exception):
    """The store cannot be opened or used; the message says what to do."""


_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration shipped, in order."""
    found = []
    for entry in resources.files("edge.store").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (version, name, _) in enumerate(found, start=1):
        if version != expected:
            raise StoreError(f"migration {name} is out of sequence (expected {expected:04d})")
    return found


def latest_schema_version() -> int:
    return len(migrations())


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the pragmas every user of the store needs.

    `isolation_level=None` leaves transactions to the caller (BEGIN/COMMIT are
    explicit), so group commit in the writer is not disturbed by implicit ones.
    """
    if readonly:
        uri = f"file:{Path(path).resolve()}?mode=ro"
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 5000")
    connection.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        connection.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before we answer a charger (money depends on it).
        connection.execute("PRAGMA synchronous = FULL")
    return connection


def schema_version(connection: sqlite3.Connection) -> int:
    """The number of the last migration applied to the file (0: none)."""
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection) -> int:
    """Apply every migration newer than the file's version; return the version now."""
    current = schema_version(connection)
    available = migrations()
    if current > len(available):
        raise StoreError(
            f"the database schema is version {current}, newer than this ocpp-edge knows "
            f"({len(available)}): install the newer ocpp-edge that wrote it, or restore a backup"
        )
    for version, name, sql in available[current:]:
        try:
            connection.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise StoreError(f"migration {name} failed: {error}") from error
    return len(available)


def open_database(path: Path | str) -> sqlite_utils.Database:
    """Open (creating if needed) and migrate the store at `path`."""
    try:
        connection = connect(path)
        migrate(connection)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the store at {path}: {error}") from error
    return sqlite_utils.Database(connection)


def open_readonly(path: Path | str) -> sqlite_utils.Database:
    """Open an existing store for reading (the CLI beside a running daemon)."""
    if not Path(path).is_file():
        raise StoreError(f"no store at {path}: start the daemon once, or pass --config")
    connection = connect(path, readonly=True)
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version != latest_schema_version():
        raise StoreError(
            f"the store at {path} is schema version {version}, this ocpp-edge expects "
            f"{latest_schema_version()}: start the daemon to migrate it"
        )
    return sqlite_utils.Database(connection)


@contextmanager
def savepoint(db: sqlite_utils.Database, name: str, *, keep: bool = True) -> Iterator[None]:
    """Work inside a unit of work that is undone alone if it raises (the exception goes
    on), or always when `keep` is False (work done only to check it can be done)."""
    if not name.isidentifier():
        raise ValueError(f"savepoint name {name!r}: letters, digits and _ only")
    db.conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        db.conn.execute(f"ROLLBACK TO {name}")
        db.conn.execute(f"RELEASE {name}")
        raise
    if not keep:
        db.conn.execute(f"ROLLBACK TO {name}")
    db.conn.execute(f"RELEASE {name}")
