"""The card table: idTags the site accepts, blocks or has let expire."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlite_utils import Database

from edge.authorization import CachedDecision, CardFacts, IdTagRecord

STATUSES = ("Accepted", "Blocked", "Expired", "Invalid")
CARD_FIELDS = ("status", "expiry_date", "parent_id_tag", "label", "chargers")


class CardValues(NamedTuple):
    """One card as a file or a form gives it, its chargers included."""

    id_tag: str
    status: str = "Accepted"
    expiry_date: str | None = None
    parent_id_tag: str | None = None
    label: str | None = None
    chargers: tuple[str, ...] = ()


class ImportedCards(NamedTuple):
    added: int
    changed: int
    unchanged: int


def get_id_tag(db: Database, id_tag: str) -> IdTagRecord | None:
    row = db.execute(
        "SELECT id_tag, status, expiry_date, parent_id_tag FROM id_tags WHERE id_tag = ?",
        [id_tag],
    ).fetchone()
    return IdTagRecord(*row) if row else None


def save_id_tag(
    db: Database,
    id_tag: str,
    now: str,
    *,
    status: str = "Accepted",
    expiry_date: str | None = None,
    parent_id_tag: str | None = None,
    label: str | None = None,
) -> None:
    """Add a card or replace what is known of it."""
    db.execute(
        "INSERT INTO id_tags (id_tag, status, expiry_date, parent_id_tag, label, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id_tag) DO UPDATE SET "
        "status = excluded.status, expiry_date = excluded.expiry_date, "
        "parent_id_tag = excluded.parent_id_tag, label = coalesce(excluded.label, label), "
        "updated_at = excluded.updated_at",
        [id_tag, status, expiry_date, parent_id_tag, label, now, now],
    )


def set_id_tag_status(db: Database, id_tag: str, status: str, now: str) -> bool:
    """Change a known card's status; False if the card is unknown."""
    cursor = db.execute(
        "UPDATE id_tags SET status = ?, updated_at = ? WHERE id_tag = ?", [status, now, id_tag]
    )
    return cursor.rowcount > 0


def list_id_tags(db: Database) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM id_tags ORDER BY id_tag"))


def set_allowed_chargers(db: Database, id_tag: str, charger_ids: list[str]) -> None:
    """Limit a card to `charger_ids` (an empty list: any charger)."""
    db.execute("DELETE FROM id_tag_chargers WHERE id_tag = ?", [id_tag])
    for charger_id in charger_ids:
        db.execute(
            "INSERT OR IGNORE INTO id_tag_chargers (id_tag, charger_id) VALUES (?, ?)",
            [id_tag, charger_id],
        )


def allowed_chargers(db: Database, id_tag: str) -> frozenset[str]:
    rows = db.execute("SELECT charger_id FROM id_tag_chargers WHERE id_tag = ?", [id_tag])
    return frozenset(row[0] for row in rows)


def card_facts(
    db: Database, id_tag: str, charger_id: str | None, connector_id: int | None
) -> CardFacts:
    """Everything a decision on `id_tag` at this charger/connector needs. With no
    connector, a transaction anywhere on this charger is not "elsewhere" (a card shown
    there again is likely stopping it)."""
    record = get_id_tag(db, id_tag)
    cached = None
    if record is None:
        row = db.execute(
            "SELECT status, decided_at, source, expiry_date, parent_id_tag "
            "FROM authorization_cache WHERE id_tag = ?",
            [id_tag],
        ).fetchone()
        cached = CachedDecision(*row) if row else None
    busy = db.execute(
        "SELECT 1 FROM transactions WHERE id_tag = ? AND stopped_at IS NULL "
        "AND NOT (charger_id IS ? AND (? IS NULL OR connector_id = ?)) LIMIT 1",
        [id_tag, charger_id, connector_id, connector_id],
    ).fetchone()
    return CardFacts(
        record=record,
        allowed_chargers=allowed_chargers(db, id_tag) if record else frozenset(),
        cached=cached,
        charging_elsewhere=busy is not None,
    )


def cloud_cards_in_force(db: Database) -> list[str]:
    """The cards the cloud gave that it has not removed."""
    rows = db.execute("SELECT id_tag FROM id_tags WHERE source = 'cloud' AND status != 'Invalid'")
    return [row[0] for row in rows]


def count_cloud_cards(db: Database) -> int:
    row = db.execute(
        "SELECT count(*) FROM id_tags WHERE source = 'cloud' AND status != 'Invalid'"
    ).fetchone()
    return int(row[0])


def mark_from_cloud(db: Database, id_tag: str) -> None:
    db.execute("UPDATE id_tags SET source = 'cloud' WHERE id_tag = ?", [id_tag])


def invalidate_cloud_card(db: Database, id_tag: str, now: str) -> None:
    """A card the cloud removed becomes Invalid (chargers' local lists drop it); a card
    enrolled on the site is not the cloud's to remove."""
    db.execute(
        "UPDATE id_tags SET status = 'Invalid', updated_at = ? "
        "WHERE id_tag = ? AND source = 'cloud'",
        [now, id_tag],
    )


def all_cards(db: Database) -> list[CardValues]:
    """The card table, each card with the chargers it is limited to, by idTag."""
    limits: dict[str, list[str]] = {}
    for id_tag, charger_id in db.execute(
        "SELECT id_tag, charger_id FROM id_tag_chargers ORDER BY id_tag, charger_id"
    ):
        limits.setdefault(id_tag, []).append(charger_id)
    return [
        CardValues(
            row["id_tag"],
            row["status"],
            row["expiry_date"],
            row["parent_id_tag"],
            row["label"],
            tuple(limits.get(row["id_tag"], ())),
        )
        for row in db.query(
            "SELECT id_tag, status, expiry_date, parent_id_tag, label FROM id_tags ORDER BY id_tag"
        )
    ]


def import_cards(
    db: Database, cards: Sequence[CardValues], columns: Iterable[str], now: str
) -> ImportedCards:
    """Add or change `cards`; a field whose column the file lacks keeps a known card's
    value. A card that would not change is not written (each write moves the local-list
    version on, and chargers would be sent it again). The caller holds the transaction."""
    given = frozenset(columns)
    known = {card.id_tag: card for card in all_cards(db)}
    added = changed = 0
    for card in cards:
        before = known.get(card.id_tag)
        after = card if before is None else _merged(before, card, given)
        if after == before:
            continue
        save_id_tag(
            db,
            after.id_tag,
            now,
            status=after.status,
            expiry_date=after.expiry_date,
            parent_id_tag=after.parent_id_tag,
            label=after.label,
        )
        if before is None or after.chargers != before.chargers:
            set_allowed_chargers(db, after.id_tag, list(after.chargers))
        added, changed = (added + 1, changed) if before is None else (added, changed + 1)
    return ImportedCards(added, changed, len(cards) - added - changed)


def _merged(before: CardValues, card: CardValues, given: frozenset[str]) -> CardValues:
    return before._replace(
        **{name: getattr(card, name) for name in CARD_FIELDS if name in given},
    )
