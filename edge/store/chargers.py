"""Chargers and their connectors: registration, boot details, presence, status."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

BOOT_FIELDS = {
    "charge_point_vendor": "vendor",
    "charge_point_model": "model",
    "charge_point_serial_number": "serial_number",
    "charge_box_serial_number": "charge_box_serial_number",
    "firmware_version": "firmware_version",
    "iccid": "iccid",
    "imsi": "imsi",
    "meter_type": "meter_type",
    "meter_serial_number": "meter_serial_number",
}


def get_charger(db: Database, charger_id: str) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM chargers WHERE id = ?", [charger_id]))
    return rows[0] if rows else None


def add_charger(db: Database, charger_id: str, registration: str, now: str) -> None:
    """Register a charger; an existing one keeps its row but takes the new registration."""
    db.execute(
        "INSERT INTO chargers (id, registration, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET registration = excluded.registration",
        [charger_id, registration, now],
    )


# `[ocpp] unknown_chargers` -> the registration a first-time charger gets.
REGISTRATION_FOR_UNKNOWN = {"accept": "accepted", "pending": "pending", "reject": "rejected"}


def ensure_charger(db: Database, charger_id: str, unknown_chargers: str, now: str) -> str:
    """The charger's registration, registering it by `unknown_chargers` if new."""
    registration = REGISTRATION_FOR_UNKNOWN[unknown_chargers]
    db.execute(
        "INSERT INTO chargers (id, registration, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (id) DO NOTHING",
        [charger_id, registration, now],
    )
    row = db.execute("SELECT registration FROM chargers WHERE id = ?", [charger_id]).fetchone()
    return str(row[0])


def count_pending(db: Database) -> int:
    row = db.execute("SELECT count(*) FROM chargers WHERE registration = 'pending'").fetchone()
    return int(row[0])


def admit_charger(
    db: Database, charger_id: str, unknown_chargers: str, max_pending: int, now: str
) -> str | None:
    """The registration of a charger at its handshake, registering a new one by
    `unknown_chargers`; None when it must be turned away: unknown under "reject", or
    new under "pending" while `max_pending` chargers already wait for acceptance."""
    row = db.execute("SELECT registration FROM chargers WHERE id = ?", [charger_id]).fetchone()
    if row is not None:
        return str(row[0])
    if unknown_chargers == "reject":
        return None
    if unknown_chargers == "pending" and count_pending(db) >= max_pending:
        return None
    return ensure_charger(db, charger_id, unknown_chargers, now)


# Rows that name a charger without ON DELETE CASCADE, deleted with a forgotten pending
# charger. (Its connectors, status history, configuration, profiles and local list go
# by cascade; transactions and unmatched stops keep it; commands, frames in the message
# log and meter values outside transactions name it without a key and age out with them.)
PENDING_DEPENDANTS = (
    "security_events",
    "data_transfers",
    "charger_job_status",
    "certificate_requests",
    "reservations",
)


def forget_stale_pending(
    db: Database, unseen_since: str, keep: frozenset[str], limit: int = 100
) -> list[str]:
    """Delete up to `limit` pending chargers not seen since `unseen_since` (never connected
    ones, nor those in `keep`, nor any with a transaction on record), with what hangs off
    them; their ids."""
    stale = [
        str(row[0])
        for row in db.execute(
            "SELECT id FROM chargers WHERE registration = 'pending' AND connected = 0 "
            "AND coalesce(last_seen_at, created_at) < ? "
            "AND NOT EXISTS (SELECT 1 FROM transactions WHERE charger_id = chargers.id) "
            "AND NOT EXISTS (SELECT 1 FROM unmatched_stops WHERE charger_id = chargers.id) "
            "ORDER BY coalesce(last_seen_at, created_at) LIMIT ?",
            [unseen_since, limit + len(keep)],
        )
        if row[0] not in keep
    ][:limit]
    if stale:
        marks = ", ".join("?" for _ in stale)
        for table in PENDING_DEPENDANTS:
            db.execute(f"DELETE FROM {table} WHERE charger_id IN ({marks})", stale)
        db.execute(f"DELETE FROM chargers WHERE id IN ({marks})", stale)
    return stale


def record_boot(db: Database, charger_id: str, details: dict[str, Any], now: str) -> None:
    columns = {column: details.get(field) for field, column in BOOT_FIELDS.items()}
    assignments = ", ".join(f"{column} = ?" for column in columns)
    db.execute(
        f"UPDATE chargers SET {assignments}, last_boot_at = ?, last_seen_at = ? WHERE id = ?",
        [*columns.values(), now, now, charger_id],
    )


def mark_connected(db: Database, charger_id: str, now: str) -> None:
    db.execute(
        "UPDATE chargers SET connected = 1, connected_at = ?, last_seen_at = ? WHERE id = ?",
        [now, now, charger_id],
    )


def mark_disconnected(db: Database, charger_id: str, now: str) -> None:
    db.execute(
        "UPDATE chargers SET connected = 0, disconnected_at = ? WHERE id = ?", [now, charger_id]
    )


def mark_all_disconnected(db: Database, now: str) -> None:
    """At start no charger can be connected, whatever the last run left behind."""
    db.execute("UPDATE chargers SET connected = 0, disconnected_at = ? WHERE connected = 1", [now])


def touch(db: Database, charger_id: str, now: str) -> None:
    db.execute("UPDATE chargers SET last_seen_at = ? WHERE id = ?", [now, charger_id])


def record_status(
    db: Database,
    charger_id: str,
    connector_id: int,
    status: str,
    error_code: str,
    *,
    info: str | None,
    vendor_id: str | None,
    vendor_error_code: str | None,
    charger_timestamp: str | None,
    received_at: str,
) -> None:
    """Set a connector's current status and append it to the history."""
    values = [
        charger_id,
        connector_id,
        status,
        error_code,
        info,
        vendor_id,
        vendor_error_code,
        charger_timestamp,
        received_at,
    ]
    db.execute(
        "INSERT INTO status_history (charger_id, connector_id, status, error_code, info, "
        "vendor_id, vendor_error_code, charger_timestamp, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        values,
    )
    db.execute(
        "INSERT INTO connectors (charger_id, connector_id, status, error_code, info, vendor_id, "
        "vendor_error_code, charger_timestamp, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (charger_id, connector_id) DO UPDATE SET status = excluded.status, "
        "error_code = excluded.error_code, info = excluded.info, vendor_id = excluded.vendor_id, "
        "vendor_error_code = excluded.vendor_error_code, "
        "charger_timestamp = excluded.charger_timestamp, received_at = excluded.received_at",
        values,
    )


def list_chargers(db: Database) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM chargers ORDER BY id"))


def list_connectors(db: Database, charger_id: str | None = None) -> list[dict[str, Any]]:
    if charger_id is None:
        return list(db.query("SELECT * FROM connectors ORDER BY charger_id, connector_id"))
    return list(
        db.query(
            "SELECT * FROM connectors WHERE charger_id = ? ORDER BY connector_id", [charger_id]
        )
    )


def connector_statuses(db: Database, charger_id: str) -> dict[int, str | None]:
    """Connector (0: the charger itself) -> its last reported status."""
    rows = db.execute(
        "SELECT connector_id, status FROM connectors WHERE charger_id = ?", [charger_id]
    )
    return {row[0]: row[1] for row in rows}


def set_password_hash(db: Database, charger_id: str, password_hash: str) -> None:
    """The charger's HTTP Basic password (security profiles 1 and 2), hashed."""
    db.execute("UPDATE chargers SET password_hash = ? WHERE id = ?", [password_hash, charger_id])
