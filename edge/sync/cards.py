"""Applying the card list the cloud wants this site to hold: one version at a time, all
of it or nothing, in one SQLite transaction with the `cards.applied` event that reports
it. The card table change then reaches every charger as its OCPP local list.

A list too large for one message comes in parts, kept in `card_list_parts` until every
part of its version is here. A list the edge cannot take is refused whole and the refusal
reported (`cards.applied` with the version held and `refused`), so the cloud shows why.
"""

from __future__ import annotations

import logging
import sqlite3

from pydantic import ValidationError
from sqlite_utils import Database

from contract import protocol as wire
from edge.store import card_lists, id_tags
from edge.store.database import savepoint
from edge.sync.outbox import Outbox

log = logging.getLogger(__name__)


def apply_card_part(db: Database, cards: wire.CardList, outbox: Outbox, now: str) -> str:
    """Take one message of a card list: a whole list is applied at once; a part is kept
    until its version's last part arrives, then the whole list is applied."""
    if cards.parts is None or cards.part is None:
        return apply_card_list(db, cards, outbox, now)
    if cards.version == card_lists.held_version(db):
        return "held"
    document = cards.model_dump_json()
    have = card_lists.keep_part(db, cards.version, cards.part, cards.parts, document, now)
    if have < cards.parts:
        return f"part {cards.part} of {cards.parts} kept"
    documents = [
        wire.CardList.model_validate_json(text) for text in card_lists.take_parts(db, cards.version)
    ]
    first = documents[0]
    if any((d.full, d.base_version) != (first.full, first.base_version) for d in documents):
        return refuse_card_list(
            db, cards.version, "its parts disagree on full/base_version", outbox, now
        )
    try:
        whole = wire.CardList(
            version=first.version,
            full=first.full,
            base_version=first.base_version,
            cards=[card for document in documents for card in document.cards],
            removed=[id_tag for document in documents for id_tag in document.removed],
        )
    except ValidationError as error:
        return refuse_card_list(db, cards.version, str(error.errors()[:1]), outbox, now)
    return apply_card_list(db, whole, outbox, now)


def refuse_card_list(
    db: Database, version: int | None, detail: str, outbox: Outbox, now: str
) -> str:
    """Report that the list `version` (None: unreadable) was not taken, and why."""
    what = f"card list {version}" if version is not None else "a card list"
    log.warning("%s from the cloud refused: %s", what, detail)
    refused = f"{what}: {detail}"[:500]
    outbox.append(
        db,
        wire.CardsApplied(
            version=card_lists.held_version(db),
            cards=id_tags.count_cloud_cards(db),
            refused=refused,
        ),
        now,
    )
    return "refused"


def apply_card_list(db: Database, cards: wire.CardList, outbox: Outbox, now: str) -> str:
    """`_apply_card_list` inside a savepoint: a list that fails halfway leaves the card
    table as it was, and the refusal is reported in the same transaction."""
    try:
        with savepoint(db, "card_list"):
            return _apply_card_list(db, cards, outbox, now)
    except (sqlite3.Error, ValueError) as error:
        return refuse_card_list(db, cards.version, f"{type(error).__name__}: {error}", outbox, now)


def _apply_card_list(db: Database, cards: wire.CardList, outbox: Outbox, now: str) -> str:
    """Make the cloud-managed cards equal `cards`: "applied", "held" (that version is
    already here) or "refused" (a delta from a version this edge does not hold; the
    held version is reported, so the cloud sends the full list).

    A full list replaces every card the cloud gave before (locally enrolled cards stay).
    A card the cloud removes becomes Invalid, so that chargers' local lists drop it too.
    """
    held = card_lists.held_version(db)
    if cards.version == held:
        return "held"
    if not cards.full and cards.base_version != held:
        log.warning(
            "card list %s is a delta from %s, but this edge holds version %s",
            cards.version,
            cards.base_version,
            held,
        )
        outbox.append(db, wire.CardsApplied(version=held, cards=id_tags.count_cloud_cards(db)), now)
        return "refused"
    wanted = {entry.id_tag.upper() for entry in cards.cards}
    removed = {id_tag.upper() for id_tag in cards.removed}
    if cards.full:
        removed |= {id_tag.upper() for id_tag in id_tags.cloud_cards_in_force(db)} - wanted
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
        id_tags.mark_from_cloud(db, entry.id_tag)
        if id_tags.allowed_chargers(db, entry.id_tag) != frozenset(entry.chargers):
            id_tags.set_allowed_chargers(db, entry.id_tag, entry.chargers)
    for id_tag in removed:
        id_tags.invalidate_cloud_card(db, id_tag, now)
    card_lists.set_held_version(db, cards.version)
    outbox.append(
        db, wire.CardsApplied(version=cards.version, cards=id_tags.count_cloud_cards(db)), now
    )
    return "applied"
