"""The OCPP message log: every frame in both directions, as it was on the wire."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

APPEND_SQL = (
    "INSERT INTO ocpp_messages (charger_id, direction, message_type, unique_id, action, "
    "payload, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def append_message(
    db: Database,
    charger_id: str,
    direction: str,
    message_type: int | None,
    unique_id: str | None,
    action: str | None,
    payload: str,
    at_ms: int,
) -> None:
    db.conn.execute(
        APPEND_SQL, (charger_id, direction, message_type, unique_id, action, payload, at_ms)
    )


def recent_messages(
    db: Database, charger_id: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest `limit` frames, oldest first."""
    where, params = ("WHERE charger_id = ?", [charger_id]) if charger_id else ("", [])
    rows = list(
        db.query(f"SELECT * FROM ocpp_messages {where} ORDER BY id DESC LIMIT ?", [*params, limit])
    )
    return rows[::-1]
