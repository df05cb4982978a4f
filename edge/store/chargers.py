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
