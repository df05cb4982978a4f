"""The OCPP message log: every frame in both directions, as it was on the wire.

Rows are buffered (`StoreWriter.insert_later`) and written with the next batch, so a
row must never be one SQLite refuses: `log_row` makes a charger's text storable
before the row is queued. A frame's text itself always is (WebSocket text frames are
valid UTF-8; binary frames are logged as hex); the uniqueId and action parsed out of
it may not be (a lone surrogate, `"\\ud800"` in JSON): such a character is kept as
its escape, `\\ud800`, so the row says what was sent.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

APPEND_SQL = (
    "INSERT INTO ocpp_messages (charger_id, direction, message_type, unique_id, action, "
    "payload, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def storable(text: str) -> str:
    """`text` as SQLite and UTF-8 can hold it: a lone surrogate becomes its escape."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def log_row(
    charger_id: str,
    direction: str,
    message_type: int | None,
    unique_id: str | None,
    action: str | None,
    payload: str,
    at_ms: int,
) -> tuple[Any, ...]:
    """The parameters of APPEND_SQL, every text storable."""
    return (
        charger_id,
        direction,
        message_type,
        None if unique_id is None else storable(unique_id),
        None if action is None else storable(action),
        storable(payload),
        at_ms,
    )


def prune_oldest_messages(db: Database, before_ms: int, limit: int = 5000) -> int:
    """Delete up to `limit` of the oldest frames logged before `before_ms`; how many went.

    Walks from the oldest row by id (ids grow with time), so each call is cheap and the
    writer is never held for long.
    """
    cursor = db.conn.execute(
        "DELETE FROM ocpp_messages WHERE id IN "
        "(SELECT id FROM ocpp_messages ORDER BY id LIMIT ?) AND at_ms < ?",
        (limit, before_ms),
    )
    return int(cursor.rowcount)


def recent_messages(
    db: Database, charger_id: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest `limit` frames, oldest first."""
    where, params = ("WHERE charger_id = ?", [charger_id]) if charger_id else ("", [])
    rows = list(
        db.query(f"SELECT * FROM ocpp_messages {where} ORDER BY id DESC LIMIT ?", [*params, limit])
    )
    return rows[::-1]
