"""Charging transactions: the transactionId a charger gets is this table's key."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from sqlite_utils import Database

from edge.store import charger_configuration, reservations

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunningTransaction:
    """A transaction under way on a connector, as a decision on a card needs it."""

    transaction_id: int
    id_tag: str
    parent_id_tag: str | None


@dataclass(frozen=True, slots=True)
class StartRequest:
    charger_id: str
    connector_id: int
    id_tag: str
    meter_start_wh: int
    started_at: str
    reservation_id: int | None = None


@dataclass(frozen=True, slots=True)
class StopRequest:
    charger_id: str
    transaction_id: int
    meter_stop_wh: int
    stopped_at: str
    id_tag: str | None = None
    reason: str | None = None


def open_transaction(db: Database, charger_id: str, connector_id: int) -> dict[str, Any] | None:
    rows = list(
        db.query(
            "SELECT * FROM transactions WHERE charger_id = ? AND connector_id = ? "
            "AND stopped_at IS NULL ORDER BY id DESC LIMIT 1",
            [charger_id, connector_id],
        )
    )
    return rows[0] if rows else None


def get_transaction(db: Database, transaction_id: int) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM transactions WHERE id = ?", [transaction_id]))
    return rows[0] if rows else None


def start_transaction(
    db: Database, request: StartRequest, id_tag_status: str, received_at: str
) -> tuple[int, bool]:
    """Allocate the transaction id for a StartTransaction; (id, True) for a repeat.

    A charger that did not get our answer sends the same StartTransaction again: it
    gets the same id. A different start on a connector that still has an open
    transaction means the charger lost the old one's stop; the old one is closed at
    its last known meter reading so it cannot stay open forever.
    """
    current = open_transaction(db, request.charger_id, request.connector_id)
    if current is not None:
        if (
            current["id_tag"].upper() == request.id_tag.upper()
            and current["meter_start_wh"] == request.meter_start_wh
            and current["started_at"] == request.started_at
        ):
            return int(current["id"]), True
        log.warning(
            "charger %s connector %s started a transaction while %s was open; closing it",
            request.charger_id,
            request.connector_id,
            current["id"],
        )
        db.execute(
            "UPDATE transactions SET stopped_at = ?, stop_received_at = ?, "
            "stop_reason = 'Other', closed_by_edge = 1, "
            "meter_stop_wh = coalesce(last_meter_wh, meter_start_wh) WHERE id = ?",
            [request.started_at, received_at, current["id"]],
        )
    cursor = db.execute(
        "INSERT INTO transactions (charger_id, connector_id, id_tag, id_tag_status, "
        "reservation_id, meter_start_wh, started_at, start_received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            request.charger_id,
            request.connector_id,
            request.id_tag,
            id_tag_status,
            request.reservation_id,
            request.meter_start_wh,
            request.started_at,
            received_at,
        ],
    )
    assert cursor.lastrowid is not None
    if request.reservation_id is not None:
        reservations.use_reservation(
            db, request.reservation_id, request.charger_id, cursor.lastrowid, received_at
        )
    return cursor.lastrowid, False


StopOutcome = Literal["stopped", "repeat", "unknown"]


def stop_transaction(db: Database, request: StopRequest, received_at: str) -> StopOutcome:
    """Close a transaction: 'stopped', 'repeat' (already closed) or 'unknown'."""
    current = get_transaction(db, request.transaction_id)
    if current is None or current["charger_id"] != request.charger_id:
        return "unknown"
    if current["stopped_at"] is not None and not current["closed_by_edge"]:
        return "repeat"
    db.execute(
        "UPDATE transactions SET meter_stop_wh = ?, stopped_at = ?, stop_received_at = ?, "
        "stop_id_tag = ?, stop_reason = ?, closed_by_edge = 0 WHERE id = ?",
        [
            request.meter_stop_wh,
            request.stopped_at,
            received_at,
            request.id_tag,
            request.reason or "Local",
            request.transaction_id,
        ],
    )
    charger_configuration.settle_scheduled_availability(
        db, request.charger_id, current["connector_id"]
    )
    return "stopped"


def record_unmatched_stop(
    db: Database, request: StopRequest, transaction_data: list[Any] | None, received_at: str
) -> None:
    db.execute(
        "INSERT INTO unmatched_stops (charger_id, transaction_id, id_tag, meter_stop_wh, "
        "charger_timestamp, reason, transaction_data, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            request.charger_id,
            request.transaction_id,
            request.id_tag,
            request.meter_stop_wh,
            request.stopped_at,
            request.reason,
            json.dumps(transaction_data) if transaction_data else None,
            received_at,
        ],
    )


def update_last_meter(db: Database, transaction_id: int, wh: int, at: str) -> None:
    db.execute(
        "UPDATE transactions SET last_meter_wh = ?, last_meter_at = ? WHERE id = ? "
        "AND (last_meter_at IS NULL OR last_meter_at <= ?)",
        [wh, at, transaction_id, at],
    )


def meter_start_of(db: Database, charger_id: str, transaction_id: int) -> int | None:
    """The meter reading `transaction_id` started at, if it is one of this charger's."""
    row = db.execute(
        "SELECT meter_start_wh FROM transactions WHERE id = ? AND charger_id = ?",
        [transaction_id, charger_id],
    ).fetchone()
    return int(row[0]) if row else None


def list_transactions(
    db: Database, *, limit: int = 50, charger_id: str | None = None, open_only: bool = False
) -> list[dict[str, Any]]:
    clauses, params = [], []
    if charger_id:
        clauses.append("charger_id = ?")
        params.append(charger_id)
    if open_only:
        clauses.append("stopped_at IS NULL")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return list(
        db.query(
            "SELECT *, CASE WHEN meter_stop_wh IS NULL THEN last_meter_wh - meter_start_wh "
            "ELSE meter_stop_wh - meter_start_wh END AS energy_wh "
            f"FROM transactions {where} ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
    )


def open_transaction_ids(db: Database) -> dict[tuple[str, int], int]:
    """(charger, connector) -> the transaction running there."""
    rows = db.execute(
        "SELECT charger_id, connector_id, id FROM transactions WHERE stopped_at IS NULL"
    )
    return {
        (charger_id, connector_id): transaction_id
        for charger_id, connector_id, transaction_id in rows
    }


def running_on_charger(db: Database, charger_id: str) -> dict[int, RunningTransaction]:
    """Connector -> the transaction running there, with its card's parent idTag."""
    rows = db.execute(
        "SELECT t.connector_id, t.id, t.id_tag, c.parent_id_tag FROM transactions t "
        "LEFT JOIN id_tags c ON c.id_tag = t.id_tag "
        "WHERE t.charger_id = ? AND t.stopped_at IS NULL",
        [charger_id],
    )
    return {row[0]: RunningTransaction(row[1], row[2], row[3]) for row in rows}
