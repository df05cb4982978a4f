"""Operator commands the cloud sent, by their id: each is run once, and its result
(done, rejected, failed, expired, interrupted) is kept."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from sqlite_utils import Database


class StoredCommand(NamedTuple):
    id: str
    action: str
    charger_id: str
    arguments: str  # JSON, as received
    expires_at: str


def command_status(db: Database, command_id: str) -> str | None:
    """The status of the command with this id (None: never received)."""
    row = db.execute("SELECT status FROM cloud_commands WHERE id = ?", [command_id]).fetchone()
    return None if row is None else str(row[0])


def add_command(
    db: Database,
    command_id: str,
    action: str,
    charger_id: str,
    arguments: dict[str, Any],
    expires_at: str,
    now: str,
    *,
    expired: bool,
) -> None:
    """A command received: `received` to be run, or `expired` (and finished) already."""
    db.execute(
        "INSERT INTO cloud_commands (id, action, charger_id, arguments, expires_at, "
        "received_at, status, detail, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            command_id,
            action,
            charger_id,
            json.dumps(arguments),
            expires_at,
            now,
            "expired" if expired else "received",
            f"expired at {expires_at}" if expired else None,
            now if expired else None,
        ],
    )


def add_rejected(db: Database, command_id: str, detail: str, now: str) -> bool:
    """A command message no command could be made of, rejected by its id; False if that
    id was recorded already."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO cloud_commands (id, action, charger_id, arguments, expires_at, "
        "received_at, status, detail, finished_at) "
        "VALUES (?, '', '', '{}', ?, ?, 'rejected', ?, ?)",
        [command_id, now, now, detail, now],
    )
    return cursor.rowcount > 0


def finish_command(
    db: Database, command_id: str, status: str, detail: str | None, now: str
) -> None:
    db.execute(
        "UPDATE cloud_commands SET status = ?, detail = ?, finished_at = ? WHERE id = ?",
        [status, detail, now, command_id],
    )


def unfinished_commands(db: Database) -> list[StoredCommand]:
    """Commands received and never finished, in the order they came."""
    rows = db.execute(
        "SELECT id, action, charger_id, arguments, expires_at FROM cloud_commands "
        "WHERE status = 'received' ORDER BY received_at, id"
    ).fetchall()
    return [StoredCommand(*row) for row in rows]
