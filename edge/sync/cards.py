"""Applying the card list the cloud wants this site to hold: one version at a time, all
of it or nothing, in one SQLite transaction with the `cards.applied` event that reports
it. The card table change then reaches every charger as its OCPP local list."""

from __future__ import annotations

import logging

from sqlite_utils import Database

from edge.store import id_tags
from edge.sync import protocol as wire
from edge.sync.outbox import Outbox

log = logging.getLogger(__name__)


def held_version(db: Database) -> int:
    return int(db.conn.execute("SELECT cards_version FROM sync_state WHERE id = 1").fetchone()[0])


def apply_card_list(db: Database, cards: wire.CardList, outbox: Outbox, now: str) -> str:
    """Make the cloud-managed cards equal `cards`: "applied", "held" (that version is
    already here) or "refused" (a delta from a version this edge does not hold; the
    held version is reported, so the cloud sends the full list).

    A full list replaces every card the cloud gave before (locally enrolled cards stay).
    A card the cloud removes becomes Invalid, so that chargers' local lists drop it too.
    """
    held = held_version(db)
    if cards.version == held:
        return "held"
    if not cards.full and cards.base_version != held:
        log.warning(
            "card list %s is a delta from %s, but this edge holds version %s",
            cards.version,
            cards.base_version,
            held,
        )
        outbox.append(db, wire.CardsApplied(version=held, cards=_cloud_cards(db)), now)
        return "refused"
    wanted = {entry.id_tag.upper() for entry in cards.cards}
    removed = {id_tag.upper() for id_tag in cards.removed}
    if cards.full:
        removed |= {
            row[0].upper()
            for row in db.conn.execute(
                "SELECT id_tag FROM id_tags WHERE source = 'cloud' AND status != 'Invalid'"
            )
        } - wanted
    for entry in cards.cards:
        current = id_tags.get_id_tag(db, entry.id_tag)
        wanted_record = (entry.status, entry.expiry_date, entry.parent_id_tag)
        # Unchanged cards are left alone: a change takes a local list version.
        if current is None or (current.status, current.expiry_date, current.parent_id_tag) != (
            wanted_record
        ):
            id_tags.save_id_tag(
                db,
                entry.id_tag,
                now,
                status=entry.status,
                expiry_date=entry.expiry_date,
                parent_id_tag=entry.parent_id_tag,
                label=entry.label,
            )
        db.conn.execute("UPDATE id_tags SET source = 'cloud' WHERE id_tag = ?", (entry.id_tag,))
        if id_tags.allowed_chargers(db, entry.id_tag) != frozenset(entry.chargers):
            id_tags.set_allowed_chargers(db, entry.id_tag, entry.chargers)
    for id_tag in removed:
        db.conn.execute(
            "UPDATE id_tags SET status = 'Invalid', updated_at = ? "
            "WHERE id_tag = ? AND source = 'cloud'",
            (now, id_tag),
        )
    db.conn.execute("UPDATE sync_state SET cards_version = ? WHERE id = 1", (cards.version,))
    outbox.append(db, wire.CardsApplied(version=cards.version, cards=_cloud_cards(db)), now)
    return "applied"


def _cloud_cards(db: Database) -> int:
    row = db.conn.execute(
        "SELECT count(*) FROM id_tags WHERE source = 'cloud' AND status != 'Invalid'"
    ).fetchone()
    return int(row[0])
