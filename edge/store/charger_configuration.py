"""What a charger reported of its configuration keys, the changes it accepted, and the
availability the edge asked of its connectors."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database


def record_reported_key(
    db: Database, charger_id: str, key: str, value: str | None, readonly: bool, now: str
) -> None:
    """A key as GetConfiguration reported it (a change in flight is settled by it)."""
    db.execute(
        "INSERT INTO charger_configuration (charger_id, key, value, readonly, reported_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (charger_id, key) DO UPDATE SET "
        "value = excluded.value, readonly = excluded.readonly, "
        "reported_at = excluded.reported_at, change_status = NULL",
        [charger_id, key, value, int(readonly), now],
    )


def forget_keys(db: Database, charger_id: str, keys: list[str]) -> None:
    """Keys the charger answered it does not know."""
    for key in keys:
        db.execute(
            "DELETE FROM charger_configuration WHERE charger_id = ? AND key = ?", [charger_id, key]
        )


def record_changed_key(
    db: Database, charger_id: str, key: str, value: str, change_status: str, now: str
) -> None:
    """A ChangeConfiguration the charger accepted (or will apply after a reboot)."""
    db.execute(
        "INSERT INTO charger_configuration (charger_id, key, value, readonly, reported_at, "
        "change_status) VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (charger_id, key) DO UPDATE "
        "SET value = excluded.value, change_status = excluded.change_status",
        [charger_id, key, value, now, change_status],
    )


def list_configuration(db: Database, charger_id: str) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT key, value, readonly, change_status, reported_at FROM charger_configuration "
            "WHERE charger_id = ? ORDER BY key",
            [charger_id],
        )
    )


def record_availability_request(
    db: Database, charger_id: str, connector_id: int, requested: str, now: str
) -> None:
    db.execute(
        "INSERT INTO availability_requests (charger_id, connector_id, requested, answer, "
        "requested_at) VALUES (?, ?, ?, 'Sent', ?) ON CONFLICT (charger_id, connector_id) "
        "DO UPDATE SET requested = excluded.requested, answer = 'Sent', "
        "requested_at = excluded.requested_at",
        [charger_id, connector_id, requested, now],
    )


def record_availability_answer(
    db: Database, charger_id: str, connector_id: int, answer: str | None
) -> None:
    db.execute(
        "UPDATE availability_requests SET answer = ? WHERE charger_id = ? AND connector_id = ?",
        [answer, charger_id, connector_id],
    )


def settle_scheduled_availability(db: Database, charger_id: str, connector_id: int) -> None:
    """An availability change the charger scheduled for a transaction's end is now done."""
    db.execute(
        "UPDATE availability_requests SET answer = 'Accepted' WHERE charger_id = ? "
        "AND connector_id IN (0, ?) AND answer = 'Scheduled'",
        [charger_id, connector_id],
    )


def list_availability_requests(db: Database, charger_id: str) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT connector_id, requested, answer, requested_at FROM availability_requests "
            "WHERE charger_id = ? ORDER BY connector_id",
            [charger_id],
        )
    )
