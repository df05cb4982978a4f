"""The card table's local-list version and the version each charger confirmed.

Every change to a card moves `local_list_counter` on and stamps the card with it
(triggers in the migrations), so what a charger lacks is the cards stamped after the
version it confirmed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlite_utils import Database


class ListedCard(NamedTuple):
    """A card changed since a version, and whether it is for the charger asked about."""

    id_tag: str
    status: str
    expiry_date: str | None
    parent_id_tag: str | None
    limited: bool  # the card is limited to some chargers...
    allowed: bool  # ...and this charger is one of them


def card_list_version(db: Database) -> int:
    return int(db.execute("SELECT version FROM local_list_counter").fetchone()[0])


def confirmed_version(db: Database, charger_id: str) -> int:
    """The list version `charger_id` last confirmed (0: none)."""
    row = db.execute(
        "SELECT version FROM local_lists WHERE charger_id = ?", [charger_id]
    ).fetchone()
    return int(row[0]) if row else 0


def confirmed_versions(db: Database) -> dict[str, int]:
    return {
        row[0]: int(row[1]) for row in db.execute("SELECT charger_id, version FROM local_lists")
    }


def get_confirmed(db: Database, charger_id: str) -> dict[str, Any] | None:
    rows = list(
        db.query("SELECT version, updated_at FROM local_lists WHERE charger_id = ?", [charger_id])
    )
    return rows[0] if rows else None


def confirm_version(db: Database, charger_id: str, version: int, now: str) -> None:
    db.execute(
        "INSERT INTO local_lists (charger_id, version, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (charger_id) DO UPDATE SET version = excluded.version, "
        "updated_at = excluded.updated_at",
        [charger_id, version, now],
    )


def cards_changed_since(db: Database, charger_id: str, since: int) -> list[ListedCard]:
    """Cards stamped after list version `since` (-1: every card), by idTag."""
    rows = db.execute(
        "SELECT id_tag, status, expiry_date, parent_id_tag, "
        "EXISTS (SELECT 1 FROM id_tag_chargers c WHERE c.id_tag = t.id_tag), "
        "EXISTS (SELECT 1 FROM id_tag_chargers c WHERE c.id_tag = t.id_tag "
        "AND c.charger_id = ?) FROM id_tags t WHERE list_version > ? ORDER BY id_tag",
        [charger_id, since],
    )
    return [
        ListedCard(id_tag, status, expiry, parent, bool(limited), bool(allowed))
        for id_tag, status, expiry, parent, limited, allowed in rows
    ]
