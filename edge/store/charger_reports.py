"""What chargers report besides charging: data transfers, firmware/diagnostics/log
progress, security events and certificate signing requests."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

JOB_KINDS = ("firmware", "diagnostics", "signed_firmware", "log")


def record_data_transfer(
    db: Database,
    charger_id: str,
    vendor_id: str,
    message_id: str | None,
    data: str | None,
    response_status: str,
    response_data: str | None,
    received_at: str,
) -> None:
    db.execute(
        "INSERT INTO data_transfers (charger_id, vendor_id, message_id, data, response_status, "
        "response_data, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [charger_id, vendor_id, message_id, data, response_status, response_data, received_at],
    )


def record_job_status(
    db: Database,
    charger_id: str,
    kind: str,
    status: str,
    request_id: int | None,
    received_at: str,
) -> None:
    action = {
        "firmware": "UpdateFirmware",
        "diagnostics": "GetDiagnostics",
        "signed_firmware": "SignedUpdateFirmware",
        "log": "GetLog",
    }[kind]
    # The request this status reports on: the latest of its kind (with the same
    # requestId where the message carries one).
    request_filter = (
        " AND json_extract(request, '$.requestId') = ?" if request_id is not None else ""
    )
    row = db.conn.execute(
        "SELECT id FROM commands WHERE charger_id = ? AND action = ? "
        "AND outcome IN ('sent', 'answered')"
        f"{request_filter} ORDER BY id DESC LIMIT 1",
        (charger_id, action, *([request_id] if request_id is not None else [])),
    ).fetchone()
    db.execute(
        "INSERT INTO charger_job_status (charger_id, kind, status, request_id, received_at, "
        "command_id) VALUES (?, ?, ?, ?, ?, ?)",
        [charger_id, kind, status, request_id, received_at, row[0] if row else None],
    )


def record_security_event(
    db: Database,
    charger_id: str,
    event_type: str,
    tech_info: str | None,
    charger_timestamp: str,
    received_at: str,
) -> None:
    db.execute(
        "INSERT INTO security_events (charger_id, type, tech_info, charger_timestamp, "
        "received_at) VALUES (?, ?, ?, ?, ?)",
        [charger_id, event_type, tech_info, charger_timestamp, received_at],
    )


def list_security_events(
    db: Database, charger_id: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    where, params = ("WHERE charger_id = ?", [charger_id]) if charger_id else ("", [])
    return list(
        db.query(
            f"SELECT * FROM security_events {where} ORDER BY id DESC LIMIT ?", [*params, limit]
        )
    )
