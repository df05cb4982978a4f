"""Chargers' certificates: the requests they sent (SignCertificate) and what became of
them, and the certificates they reported installed."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database


def record_certificate_request(
    db: Database,
    charger_id: str,
    csr: str,
    received_at: str,
    status: str = "received",
    reason: str | None = None,
) -> int:
    cursor = db.execute(
        "INSERT INTO certificate_requests (charger_id, csr, status, reason, received_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [charger_id, csr, status, reason, received_at],
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def certificate_request_csr(db: Database, request_id: int) -> str:
    return str(
        db.execute("SELECT csr FROM certificate_requests WHERE id = ?", [request_id]).fetchone()[0]
    )


def mark_certificate_request(
    db: Database, request_id: int, status: str, reason: str | None, chain: str | None
) -> None:
    """What became of a request; a reason or chain already recorded stays unless replaced."""
    db.execute(
        "UPDATE certificate_requests SET status = ?, reason = coalesce(?, reason), "
        "certificate = coalesce(?, certificate) WHERE id = ?",
        [status, reason, chain, request_id],
    )


def list_certificate_requests(
    db: Database, charger_id: str, limit: int = 20
) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT id, status, reason, received_at FROM certificate_requests "
            "WHERE charger_id = ? ORDER BY id DESC LIMIT ?",
            [charger_id, limit],
        )
    )


def replace_installed_certificates(
    db: Database,
    charger_id: str,
    certificate_type: str,
    hashes: list[dict[str, Any]],
    now: str,
) -> None:
    """The certificates of one type a charger reported (GetInstalledCertificateIds)."""
    db.execute(
        "DELETE FROM installed_certificates WHERE charger_id = ? AND certificate_type = ?",
        [charger_id, certificate_type],
    )
    for hash_data in hashes:
        db.execute(
            "INSERT INTO installed_certificates (charger_id, certificate_type, serial_number, "
            "hash_data, reported_at) VALUES (?, ?, ?, ?, ?)",
            [charger_id, certificate_type, hash_data["serialNumber"], json.dumps(hash_data), now],
        )


def delete_installed_certificate(db: Database, charger_id: str, serial_number: str) -> None:
    db.execute(
        "DELETE FROM installed_certificates WHERE charger_id = ? AND serial_number = ?",
        [charger_id, serial_number],
    )


def list_installed_certificates(db: Database, charger_id: str) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT certificate_type, serial_number, reported_at FROM installed_certificates "
            "WHERE charger_id = ? ORDER BY certificate_type",
            [charger_id],
        )
    )
