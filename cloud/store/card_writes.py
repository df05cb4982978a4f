"""Writing an edge's card list: the one path every change to a card list takes, from the
API's `PUT /api/edges/{edge}/cards` (`desired.set_card_list`) and from the fleet web view
(`card_edits.change_cards`), inside the caller's transaction:

1. `bump_cards_revision` raises the fleet's `cards_revision` (and so orders every change
   to the fleet's cards: the fleet's row is taken before any edge's);
2. `write_card_list` (a whole list) or `write_card_changes` (some cards of the latest)
   stores the edge's new list as a new version (above every version the cloud or the
   edge has held: the aggregator sends it, as a delta from the version the edge reports),
   keeps `edge_cards` equal to it, and forgets the versions no delta will start from (all
   but the new one and the edge's reported one);
3. `record_card_changes` gives every card that changed the fleet's new revision, with who
   changed it and what the change was, in words (`fleet_cards`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from cloud.store.database import StoreError
from cloud.store.schema import DEFAULT_FLEET_ID, card_lists, edge_cards, edges, fleet_cards, fleets
from cloud.store.statements import PendingWrites
from contract.protocol import CARD_LIST_PART_BYTES, MAX_CARD_LIST_PARTS, CardEntry

# Rows read or written per statement.
BATCH = 500
# What `fleet_cards.change` and a change's words hold at most.
MAX_CHANGE_TEXT = 500
# The bytes a list may take: its parts are filled to about half their size on average,
# so a list that could need more parts than an edge takes is refused when it is set.
MAX_LIST_BYTES = CARD_LIST_PART_BYTES * MAX_CARD_LIST_PARTS // 2


class CardListError(StoreError):
    """A card list that cannot be stored as asked; the message says why."""


def card_key(id_tag: str) -> str:
    """One card however its id tag is typed (OCPP idTags compare case-insensitively)."""
    return id_tag.upper()


@dataclass(frozen=True)
class EntryChange:
    """One card at one edge, before and after (None: the list lacks it)."""

    before: CardEntry | None
    after: CardEntry | None


@dataclass(frozen=True)
class WrittenList:
    version: int
    changes: dict[str, EntryChange]  # by card key: the cards that changed


def bump_cards_revision(connection: Connection, fleet_id: int) -> int:
    """The fleet's next cards revision; its row stays locked until the transaction ends
    (on SQLite, `BEGIN IMMEDIATE` holds every writer off already)."""
    revision = connection.execute(
        update(fleets)
        .where(fleets.c.id == fleet_id)
        .values(cards_revision=fleets.c.cards_revision + 1)
        .returning(fleets.c.cards_revision)
    ).scalar_one_or_none()
    if revision is None:
        raise CardListError(f"no fleet with id {fleet_id}")
    return int(revision)


def fleet_of_edge(connection: Connection, edge_id: str) -> int:
    """The fleet an edge is in (the default fleet for one the cloud has no row for yet)."""
    found = connection.execute(select(edges.c.fleet_id).where(edges.c.id == edge_id)).scalar()
    return DEFAULT_FLEET_ID if found is None else int(found)


def check_card_list(cards: Iterable[CardEntry]) -> None:
    """CardListError when the list holds a card twice or is larger than an edge takes."""
    seen: set[str] = set()
    size = 0
    count = 0
    for card in cards:
        count += 1
        if card_key(card.id_tag) in seen:
            raise CardListError(f"card {card.id_tag} is in the list twice")
        seen.add(card_key(card.id_tag))
        size += len(card.model_dump_json(exclude_none=True)) + 1
    if size > MAX_LIST_BYTES:
        raise CardListError(
            f"{count} cards ({size} bytes) are more than one card list holds "
            f"({MAX_LIST_BYTES} bytes)"
        )


def latest_card_version(connection: Connection, edge_id: str) -> int | None:
    latest = connection.execute(
        select(func.max(card_lists.c.version)).where(card_lists.c.edge_id == edge_id)
    ).scalar_one()
    return None if latest is None else int(latest)


def card_list_document(
    connection: Connection, edge_id: str, version: int
) -> dict[str, CardEntry] | None:
    """The list of one version, by id tag (None: the cloud does not hold that version)."""
    document = connection.execute(
        select(card_lists.c.document).where(
            card_lists.c.edge_id == edge_id, card_lists.c.version == version
        )
    ).scalar_one_or_none()
    if document is None:
        return None
    entries = (CardEntry.model_validate(entry) for entry in document)
    return {entry.id_tag: entry for entry in entries}


def held_entries(connection: Connection, edge_id: str) -> dict[str, CardEntry]:
    """The edge's latest list by card key, as `edge_cards` holds it."""
    rows = connection.execute(select(edge_cards).where(edge_cards.c.edge_id == edge_id)).all()
    return {row.id_key: entry_of(row) for row in rows}


def entry_of(row: Any) -> CardEntry:
    return CardEntry.model_validate(
        {
            "id_tag": row.id_tag,
            "status": row.status,
            "expiry_date": row.expiry_date,
            "parent_id_tag": row.parent_id_tag,
            "label": row.label,
            "chargers": row.chargers or [],
        }
    )


# What a card is, as plain values: lists of tens of thousands are compared this way,
# without making an object of every card.
_Shape = tuple[str, str, str | None, str | None, str | None, tuple[str, ...]]


def _shape_of_row(row: Any) -> _Shape:
    return (
        row.id_tag,
        row.status,
        row.expiry_date,
        row.parent_id_tag,
        row.label,
        tuple(row.chargers or ()),
    )


def shape_of_card(card: CardEntry) -> _Shape:
    return (
        card.id_tag,
        card.status,
        card.expiry_date,
        card.parent_id_tag,
        card.label,
        tuple(card.chargers),
    )


def write_card_list(
    connection: Connection, edge: Any, cards: list[CardEntry], now: datetime
) -> WrittenList:
    """Store `cards` as the locked `edge` row's new list (the API's path: the whole list)."""
    check_card_list(cards)
    held = {
        row.id_key: row
        for row in connection.execute(select(edge_cards).where(edge_cards.c.edge_id == edge.id))
    }
    wanted = {card_key(card.id_tag): card for card in cards}
    changes: dict[str, EntryChange] = {}
    for key in held.keys() | wanted.keys():
        row, card = held.get(key), wanted.get(key)
        if row is None or card is None or _shape_of_row(row) != shape_of_card(card):
            changes[key] = EntryChange(None if row is None else entry_of(row), card)
    document = [card.model_dump(mode="json") for card in cards]
    return _store(connection, edge, document, changes, now)


def write_card_changes(
    connection: Connection,
    edge: Any,
    changes: Mapping[str, EntryChange],
    now: datetime,
) -> WrittenList:
    """Store the locked `edge` row's latest list with `changes` (by card key, each made
    on the list as it is: the caller holds the fleet's row, which every writer of cards
    takes first) as its new list (the fleet view's path: some cards of a long list)."""
    latest = latest_card_version(connection, edge.id)
    document: list[dict[str, Any]] = []
    if latest is not None:
        document = connection.execute(
            select(card_lists.c.document).where(
                card_lists.c.edge_id == edge.id, card_lists.c.version == latest
            )
        ).scalar_one()
    entries = {card_key(str(entry["id_tag"])): entry for entry in document}
    for key, change in changes.items():
        if change.after is None:
            entries.pop(key, None)
        else:
            entries[key] = change.after.model_dump(mode="json")
    new_document = list(entries.values())
    # The whole list's size, counted as check_card_list counts it, when it may be too large.
    if len(json.dumps(new_document, ensure_ascii=False)) > MAX_LIST_BYTES:
        check_card_list(CardEntry.model_validate(entry) for entry in new_document)
    return _store(connection, edge, new_document, changes, now)


def _store(
    connection: Connection,
    edge: Any,
    document: list[dict[str, Any]],
    changes: Mapping[str, EntryChange],
    now: datetime,
) -> WrittenList:
    edge_id: str = edge.id
    latest = latest_card_version(connection, edge_id) or 0
    reported = edge.cards_version_reported
    version = max(latest, reported or 0) + 1
    connection.execute(
        insert(card_lists).values(
            edge_id=edge_id, version=version, document=document, created_at=now
        )
    )
    # A delta starts from the version the edge reports, else the list goes whole: no
    # other version is ever read again.
    kept = [version] + ([reported] if reported else [])
    connection.execute(
        delete(card_lists).where(card_lists.c.edge_id == edge_id, card_lists.c.version.not_in(kept))
    )
    fleet_id = edge.fleet_id or DEFAULT_FLEET_ID
    changed = list(changes)
    for start in range(0, len(changed), BATCH):
        connection.execute(
            delete(edge_cards).where(
                edge_cards.c.edge_id == edge_id,
                edge_cards.c.id_key.in_(changed[start : start + BATCH]),
            )
        )
    rows = [
        _row(edge_id, fleet_id, key, change.after, version)
        for key, change in changes.items()
        if change.after is not None
    ]
    for start in range(0, len(rows), BATCH):
        connection.execute(insert(edge_cards), rows[start : start + BATCH])
    return WrittenList(version, dict(changes))


def _row(edge_id: str, fleet_id: int, key: str, card: CardEntry, version: int) -> dict[str, Any]:
    return {
        "edge_id": edge_id,
        "id_key": key,
        "id_tag": card.id_tag,
        "fleet_id": fleet_id,
        "status": card.status,
        "expiry_date": card.expiry_date,
        "parent_id_tag": card.parent_id_tag,
        "label": card.label,
        "chargers": list(card.chargers) or None,
        "version": version,
    }


def record_card_changes(
    connection: Connection,
    fleet_id: int,
    revision: int,
    changes: Mapping[str, Mapping[str, EntryChange]],
    actor: str,
    now: datetime,
    site_names: Mapping[str, str] | None = None,
    words_known: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Give each changed card (`changes`: by edge, then card key) the fleet's `revision`,
    with who and what (`words_known`, when the caller has put the change in words), and
    its sites and text to search as `edge_cards` now has them; the words of each card's
    change, by card key."""
    by_card: dict[str, dict[str, EntryChange]] = {}
    for edge_id, edge_changes in changes.items():
        for key, change in edge_changes.items():
            by_card.setdefault(key, {})[edge_id] = change
    words: dict[str, str] = {}
    stamps: dict[str, dict[str, Any]] = {}
    id_tags: dict[str, str] = {}
    for key, per_edge in by_card.items():
        known = (words_known or {}).get(key)
        words[key] = known if known is not None else describe_change(per_edge, site_names or {})
        stamps[key] = {
            "revision": revision,
            "changed_at": now,
            "changed_by": actor[:MAX_CHANGE_TEXT],
            "change": words[key],
        }
        any_change = next(iter(per_edge.values()))
        entry = any_change.after or any_change.before
        assert entry is not None
        id_tags[key] = entry.id_tag
    refresh_card_index(connection, fleet_id, id_tags, stamps)
    return words


def refresh_card_index(
    connection: Connection,
    fleet_id: int,
    id_tags: Mapping[str, str],
    stamps: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """The `fleet_cards` rows of these cards (`id_tags` by card key) made equal to what
    the fleet's sites hold (how many, the text to search), with `stamps` (revision, who,
    when, what) where given; a card new to the fleet starts at revision 0."""
    keys = list(id_tags)
    held: dict[str, list[Any]] = {}
    for start in range(0, len(keys), BATCH):
        for row in connection.execute(
            select(
                edge_cards.c.id_key,
                edge_cards.c.id_tag,
                edge_cards.c.label,
                edge_cards.c.parent_id_tag,
            ).where(
                edge_cards.c.fleet_id == fleet_id,
                edge_cards.c.id_key.in_(keys[start : start + BATCH]),
            )
        ):
            held.setdefault(row.id_key, []).append(row)
    writes = PendingWrites()  # one statement for every card, not one per card
    for key in keys:
        rows = held.get(key, [])
        texts = (text for row in rows for text in (row.id_tag, row.label, row.parent_id_tag))
        values = {
            "fleet_id": fleet_id,
            "id_key": key,
            "id_tag": rows[0].id_tag if rows else id_tags[key],
            "sites": len(rows),
            "search": search_text(texts),
        }
        writes.upsert(
            fleet_cards,
            values | dict((stamps or {}).get(key, {})),
            key=["fleet_id", "id_key"],
            on_insert={"revision": 0},
        )
    writes.flush(connection)


def search_text(texts: Iterable[str | None]) -> str:
    """What a card is found by: its id tag, labels and accounts, lower-cased, each once."""
    return "\n".join(dict.fromkeys(text.lower() for text in texts if text))


def follow_edge_fleet(connection: Connection, edge_id: str, fleet_id: int) -> None:
    """An edge moved to another fleet: its cards are in that fleet's list from now on,
    and no longer in the one it left (unless another of its sites holds them)."""
    rows = connection.execute(
        select(edge_cards.c.fleet_id, edge_cards.c.id_key, edge_cards.c.id_tag).where(
            edge_cards.c.edge_id == edge_id, edge_cards.c.fleet_id != fleet_id
        )
    ).all()
    if not rows:
        return
    connection.execute(
        update(edge_cards).where(edge_cards.c.edge_id == edge_id).values(fleet_id=fleet_id)
    )
    id_tags = {row.id_key: row.id_tag for row in rows}
    refresh_card_index(connection, fleet_id, id_tags)
    for left in {row.fleet_id for row in rows}:
        refresh_card_index(
            connection, left, {row.id_key: row.id_tag for row in rows if row.fleet_id == left}
        )


# -- a change in words ------------------------------------------------------------------

_FIELD_WORDS = (
    ("status", "status"),
    ("expiry_date", "expiry"),
    ("parent_id_tag", "account"),
    ("label", "label"),
    ("chargers", "chargers"),
)


def entry_differences(before: CardEntry | None, after: CardEntry | None) -> list[str]:
    """What changed in one card at one site, in short phrases."""
    if before is None and after is None:
        return []
    if before is None:
        assert after is not None
        return [f"added ({after.status})"]
    if after is None:
        return ["removed"]
    phrases = []
    for field, word in _FIELD_WORDS:
        old, new = getattr(before, field), getattr(after, field)
        if old != new:
            phrases.append(f"{word} {_value(field, old)} → {_value(field, new)}")
    return phrases


def _value(field: str, value: Any) -> str:
    if field == "chargers":
        return "; ".join(value) if value else "all"
    return "\u2013" if value in (None, "") else repr(value) if field == "label" else str(value)


def describe_change(per_edge: Mapping[str, EntryChange], site_names: Mapping[str, str]) -> str:
    """One card's change at its sites in words: sites with the same change grouped
    ("status Accepted → Blocked at Depot North, Depot South"); at most MAX_CHANGE_TEXT."""
    groups: dict[str, list[str]] = {}
    for edge_id in sorted(per_edge):
        change = per_edge[edge_id]
        phrase = ", ".join(entry_differences(change.before, change.after))
        if phrase:
            groups.setdefault(phrase, []).append(site_names.get(edge_id, edge_id))
    parts = []
    for phrase, sites in groups.items():
        shown = ", ".join(sites[:5]) + (f" and {len(sites) - 5} more" if len(sites) > 5 else "")
        parts.append(f"{phrase} at {shown}")
    text = "; ".join(parts) or "no change"
    return text if len(text) <= MAX_CHANGE_TEXT else text[: MAX_CHANGE_TEXT - 1] + "…"
