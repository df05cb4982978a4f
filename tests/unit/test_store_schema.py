"""The store's file: pragmas, migrations, and refusing a newer schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.store.database import (
    StoreError,
    latest_schema_version,
    open_database,
    open_readonly,
)


def test_new_store_is_migrated_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    db = open_database(tmp_path / "edge.db")
    connection = db.conn
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert connection.execute("PRAGMA user_version").fetchone()[0] == latest_schema_version()
    assert {
        "chargers",
        "connectors",
        "id_tags",
        "transactions",
        "meter_values",
        "status_history",
        "ocpp_messages",
    } <= set(db.table_names())


def test_reopening_keeps_data(tmp_path: Path) -> None:
    db = open_database(tmp_path / "edge.db")
    db.conn.execute("INSERT INTO chargers (id, created_at) VALUES ('CP1', 'x')")
    db.conn.close()
    again = open_database(tmp_path / "edge.db")
    assert [row["id"] for row in again.query("SELECT id FROM chargers")] == ["CP1"]


def test_newer_schema_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    open_database(path).conn.close()
    newer = latest_schema_version() + 1
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(StoreError, match="newer"):
        open_database(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == newer


def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    db = open_database(tmp_path / "edge.db")
    with pytest.raises(sqlite3.IntegrityError):
        db.conn.execute(
            "INSERT INTO connectors (charger_id, connector_id, status, error_code, received_at) "
            "VALUES ('nobody', 1, 'Available', 'NoError', 'x')"
        )


def test_readonly_open_of_a_missing_store_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="start the daemon once"):
        open_readonly(tmp_path / "missing.db")


def test_message_log_pruning_removes_only_old_frames_in_steps(tmp_path: Path) -> None:
    from edge.store.message_log import APPEND_SQL, log_row, prune_oldest_messages

    db = open_database(tmp_path / "edge.db")
    rows = [log_row("CP1", "in", 2, "u", "Heartbeat", "[]", at) for at in (1000, 2000, 3000, 9000)]
    db.conn.executemany(APPEND_SQL, rows)  # as the store writer's batched inserts do
    assert prune_oldest_messages(db, before_ms=5000, limit=2) == 2
    assert prune_oldest_messages(db, before_ms=5000, limit=2) == 1
    assert prune_oldest_messages(db, before_ms=5000, limit=2) == 0
    assert [row["at_ms"] for row in db.query("SELECT at_ms FROM ocpp_messages")] == [9000]
