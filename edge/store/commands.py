"""The commands the edge sent to its chargers: the request as it went on the wire, and
its outcome (answered, callerror, timeout, offline) with the charger's answer."""

from __future__ import annotations

import json
from typing import Any, Literal

from sqlite_utils import Database

# sent: on the wire, no answer yet; the others are where a command ends.
CommandOutcome = Literal["sent", "answered", "callerror", "timeout", "offline"]


def add_command(
    db: Database,
    charger_id: str,
    action: str,
    request: dict[str, Any],
    outcome: CommandOutcome,
    requested_at: str,
    finished_at: str | None,
) -> int:
    """Record a command before it is sent (outcome `sent`), or one that could not be."""
    text = json.dumps(request, default=str)
    return add_command_text(db, charger_id, action, text, outcome, requested_at, finished_at)


def add_command_text(
    db: Database,
    charger_id: str,
    action: str,
    request_text: str,
    outcome: CommandOutcome,
    requested_at: str,
    finished_at: str | None,
) -> int:
    """`add_command` for a request already in its JSON form."""
    cursor = db.execute(
        "INSERT INTO commands (charger_id, action, request, outcome, requested_at, "
        "finished_at) VALUES (?, ?, ?, ?, ?, ?)",
        [charger_id, action, request_text, outcome, requested_at, finished_at],
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def finish_command(
    db: Database,
    command_id: int,
    outcome: CommandOutcome,
    response: dict[str, Any] | None,
    code: str | None,
    description: str | None,
    finished_at: str,
) -> None:
    db.execute(
        "UPDATE commands SET outcome = ?, response = ?, error_code = ?, error_description = ?, "
        "finished_at = ? WHERE id = ?",
        [
            outcome,
            json.dumps(response) if response is not None else None,
            code,
            description,
            finished_at,
            command_id,
        ],
    )


def list_commands(db: Database, charger_id: str, limit: int) -> list[dict[str, Any]]:
    """A charger's latest commands, newest first, request and response decoded."""
    rows = list(
        db.query(
            "SELECT * FROM commands WHERE charger_id = ? ORDER BY id DESC LIMIT ?",
            [charger_id, limit],
        )
    )
    for row in rows:
        row["request"] = json.loads(row["request"])
        row["response"] = json.loads(row["response"]) if row["response"] else None
    return rows


def prune_oldest_commands(db: Database, before: str, limit: int = 5000) -> int:
    """Delete up to `limit` of the oldest commands requested before `before` (UTC text)
    that have ended; how many went. A command still awaiting its answer, or one a
    firmware install or a job status points at, stays."""
    cursor = db.conn.execute(
        "DELETE FROM commands WHERE id IN (SELECT id FROM commands "
        "WHERE requested_at < ? AND outcome != 'sent' "
        "AND NOT EXISTS (SELECT 1 FROM firmware_installs WHERE command_id = commands.id) "
        "AND NOT EXISTS (SELECT 1 FROM charger_job_status WHERE command_id = commands.id) "
        "ORDER BY requested_at LIMIT ?)",
        (before, limit),
    )
    return int(cursor.rowcount)
