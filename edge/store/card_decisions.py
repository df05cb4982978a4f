"""Decisions on cards and what became of them, and the cards seen that are not in the
card table (the authorization cache)."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from edge.authorization import Authorization
from edge.events import CardAction, CardDecided, EventRecorder
from edge.tap_outcome import TapResult, moves_forward


def record_card_decision(
    db: Database,
    outbox: EventRecorder,
    *,
    id_tag: str,
    source: str,
    action: CardAction,
    authorization: Authorization,
    reason: str,
    now: str,
    reader_id: str | None = None,
    charger_id: str | None = None,
    connector_id: int | None = None,
) -> int:
    """Store one decision with its reason, and record its `CardDecided` event;
    returns its id (a tap's outcome is added later)."""
    decided = CardDecided(
        id_tag, action, authorization.status, reason, charger_id, connector_id, reader_id
    )
    outbox.record(db, decided, now)
    cursor = db.execute(
        "INSERT INTO card_decisions (decided_at, id_tag, source, reader_id, charger_id, "
        "connector_id, action, status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            now,
            id_tag,
            source,
            reader_id,
            charger_id,
            connector_id,
            action,
            authorization.status,
            reason,
        ],
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def record_tap_outcome(
    db: Database,
    decision_id: int,
    result: TapResult,
    *,
    detail: str | None = None,
    command_id: int | None = None,
    transaction_id: int | None = None,
) -> None:
    """Add what came of a tap: the command and transaction always, the outcome only if
    it moves the recorded one forward (see `moves_forward`)."""
    row = db.execute("SELECT outcome FROM card_decisions WHERE id = ?", [decision_id]).fetchone()
    if row is None:
        return
    outcome = result.value if detail is None else f"{result.value}: {detail}"
    db.execute(
        "UPDATE card_decisions SET outcome = CASE WHEN ? THEN ? ELSE outcome END, "
        "command_id = coalesce(?, command_id), transaction_id = coalesce(?, transaction_id) "
        "WHERE id = ?",
        [moves_forward(row[0], result), outcome, command_id, transaction_id, decision_id],
    )


def remember_unknown_card(
    db: Database, id_tag: str, authorization: Authorization, where: str, now: str
) -> None:
    """Note a card outside the card table: where it was seen, and (unless the cloud
    decided on it) the decision the unknown_cards setting gave."""
    db.execute(
        "INSERT INTO authorization_cache (id_tag, status, expiry_date, parent_id_tag, source, "
        "decided_at, first_seen_at, last_seen_at, last_seen_where) "
        "VALUES (?, ?, ?, ?, 'setting', ?, ?, ?, ?) ON CONFLICT (id_tag) DO UPDATE SET "
        "status = CASE WHEN source = 'cloud' THEN status ELSE excluded.status END, "
        "decided_at = CASE WHEN source = 'cloud' THEN decided_at ELSE excluded.decided_at END, "
        "last_seen_at = excluded.last_seen_at, last_seen_where = excluded.last_seen_where, "
        "times_seen = times_seen + 1",
        [
            id_tag,
            authorization.status,
            authorization.expiry_date,
            authorization.parent_id_tag,
            now,
            now,
            now,
            where,
        ],
    )


def list_seen_cards(db: Database) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM authorization_cache ORDER BY last_seen_at DESC"))


def list_card_decisions(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM card_decisions ORDER BY id DESC LIMIT ?", [limit]))
