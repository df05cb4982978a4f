"""Reservations: made by ReserveNow, answered by the charger, cancelled, expired, and
used by the StartTransaction that names them (see `transactions.start_transaction`)."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database


def add_reservation(
    db: Database,
    charger_id: str,
    connector_id: int,
    id_tag: str,
    parent_id_tag: str | None,
    expiry_date: str,
    now: str,
) -> int:
    """A reservation about to be asked for; its id is the ReserveNow's reservationId."""
    cursor = db.execute(
        "INSERT INTO reservations (charger_id, connector_id, id_tag, parent_id_tag, "
        "expiry_date, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [charger_id, connector_id, id_tag, parent_id_tag, expiry_date, now, now],
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def record_reservation_answer(db: Database, reservation_id: int, answer: str, now: str) -> None:
    """The charger's answer to ReserveNow: active if Accepted, else rejected."""
    db.execute(
        "UPDATE reservations SET status = ?, answer = ?, updated_at = ? WHERE id = ?",
        ["active" if answer == "Accepted" else "rejected", answer, now, reservation_id],
    )


def cancel_reservation(db: Database, reservation_id: int, now: str) -> None:
    db.execute(
        "UPDATE reservations SET status = 'cancelled', updated_at = ? WHERE id = ?",
        [now, reservation_id],
    )


def expire_reservations(db: Database, now: str) -> int:
    """Mark reservations past their expiry date as expired; how many were."""
    cursor = db.execute(
        "UPDATE reservations SET status = 'expired', updated_at = ? "
        "WHERE status IN ('requested', 'active') AND expiry_date < ?",
        [now, now],
    )
    return int(cursor.rowcount)


def active_reservations(db: Database, charger_id: str) -> dict[int, tuple[str, str | None]]:
    """Connector (0: the whole charger) -> the card and its parent it is reserved for."""
    rows = db.execute(
        "SELECT connector_id, id_tag, parent_id_tag FROM reservations "
        "WHERE charger_id = ? AND status = 'active'",
        [charger_id],
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def list_reservations(db: Database, charger_id: str, limit: int = 50) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT id, connector_id, id_tag, expiry_date, status, transaction_id "
            "FROM reservations WHERE charger_id = ? ORDER BY id DESC LIMIT ?",
            [charger_id, limit],
        )
    )


def use_reservation(
    db: Database, reservation_id: int, charger_id: str, transaction_id: int, now: str
) -> None:
    """The StartTransaction that names an active reservation of this charger uses it."""
    db.execute(
        "UPDATE reservations SET status = 'used', transaction_id = ?, updated_at = ? "
        "WHERE id = ? AND charger_id = ? AND status = 'active'",
        [transaction_id, now, reservation_id, charger_id],
    )
