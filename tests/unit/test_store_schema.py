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


def test_command_history_pruning_keeps_recent_unfinished_and_referenced_commands(
    tmp_path: Path,
) -> None:
    from edge.store.commands import CommandOutcome, add_command, prune_oldest_commands

    db = open_database(tmp_path / "edge.db")
    db.conn.execute("INSERT INTO chargers (id, created_at) VALUES ('CP1', 'x')")
    old, recent = "2026-01-01T00:00:00.000Z", "2026-06-01T00:00:00.000Z"

    def command(requested_at: str, outcome: CommandOutcome = "answered") -> int:
        return add_command(db, "CP1", "Reset", {"type": "Soft"}, outcome, requested_at, None)

    gone = [command(old) for _ in range(3)]
    waiting = command(old, "sent")  # its answer may still come
    installing = command(old)
    db.conn.execute(
        "INSERT INTO firmware_installs (charger_id, image, version, command_id, status, "
        "requested_at, updated_at) VALUES ('CP1', 'fw.bin', '2', ?, 'installing', 'x', 'x')",
        [installing],
    )
    reported = command(old)
    db.conn.execute(
        "INSERT INTO charger_job_status (charger_id, kind, status, received_at, command_id) "
        "VALUES ('CP1', 'log', 'Uploading', 'x', ?)",
        [reported],
    )
    kept_recent = command(recent)
    cutoff = "2026-03-01T00:00:00.000Z"
    # The oldest 2 first, then the rest of what may go, then nothing.
    assert prune_oldest_commands(db, before=cutoff, limit=2) == 2
    assert prune_oldest_commands(db, before=cutoff, limit=100) == 1
    assert prune_oldest_commands(db, before=cutoff, limit=100) == 0
    left = [row["id"] for row in db.query("SELECT id FROM commands ORDER BY id")]
    assert left == [waiting, installing, reported, kept_recent]
    assert not set(gone) & set(left)
