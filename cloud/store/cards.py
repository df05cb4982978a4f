"""What the fleet web view's cards pages read, always within one fleet: each edge's card
list version wanted (the latest the cloud holds) against the one the edge applied; the
fleet's cards, a page at a time (keyset on the card's upper-cased id tag), each with the
sites holding it and its entry at each; and the cards the edges refused, with the reason
each edge recorded.

Card lists are written through `card_writes` (the API's `PUT /api/edges/{edge}/cards` and
the view's changes, `card_edits`), which keeps `edge_cards` equal to each latest list.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from cloud.store.card_writes import card_key, entry_of
from cloud.store.database import reading
from cloud.store.schema import card_lists, card_uses, edge_cards, edges, fleet_cards
from contract.protocol import CardEntry

# A decision the edge recorded with this status let the card charge.
ACCEPTED = "Accepted"


@dataclass(frozen=True)
class EdgeCards:
    edge_id: str
    site_name: str | None
    wanted_version: int | None  # the latest list the cloud holds; None: none yet
    applied_version: int | None  # what the edge last reported applied
    refused: str | None  # why the edge last refused a list it was sent

    @property
    def name(self) -> str:
        return self.site_name or self.edge_id

    @property
    def in_step(self) -> bool:
        return self.wanted_version is None or self.wanted_version == self.applied_version


@dataclass(frozen=True)
class CardRefusal:
    edge_id: str
    at: datetime  # the edge's time of the decision
    id_tag: str
    status: str
    reason: str
    action: str
    charger_id: str | None
    connector_id: int | None


def fleet_card_versions(
    engine: Engine, fleet_id: int, edge_id: str | None = None
) -> list[EdgeCards]:
    """The fleet's edges (or one of them) by id, each with its list versions."""
    latest = (
        select(card_lists.c.edge_id, func.max(card_lists.c.version).label("version"))
        .group_by(card_lists.c.edge_id)
        .subquery()
    )
    query = (
        select(
            edges.c.id,
            edges.c.site_name,
            edges.c.cards_version_reported,
            edges.c.cards_refused,
            latest.c.version,
        )
        .select_from(edges.outerjoin(latest, latest.c.edge_id == edges.c.id))
        .where(edges.c.fleet_id == fleet_id)
        .order_by(edges.c.id)
    )
    if edge_id is not None:
        query = query.where(edges.c.id == edge_id)
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [
        EdgeCards(
            edge_id=row.id,
            site_name=row.site_name,
            wanted_version=None if row.version is None else int(row.version),
            applied_version=(
                None if row.cards_version_reported is None else int(row.cards_version_reported)
            ),
            refused=row.cards_refused,
        )
        for row in rows
    ]


def card_refusals(
    engine: Engine,
    fleet_id: int,
    edge_id: str | None = None,
    limit: int = 50,
    id_tag: str | None = None,
) -> list[CardRefusal]:
    """The fleet's latest refused card decisions (of one edge, or all; of one card as the
    edge spelled it, or all), newest first, as the edges recorded them, also those made
    while the site was offline."""
    query = (
        select(card_uses)
        .where(
            card_uses.c.status != ACCEPTED,
            card_uses.c.edge_id.in_(select(edges.c.id).where(edges.c.fleet_id == fleet_id)),
        )
        .order_by(card_uses.c.at.desc(), card_uses.c.seq.desc())
        .limit(limit)
    )
    if edge_id is not None:
        query = query.where(card_uses.c.edge_id == edge_id)
    if id_tag is not None:
        query = query.where(card_uses.c.id_tag == id_tag)  # as the edge spelled it: indexed
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [
        CardRefusal(
            edge_id=row.edge_id,
            at=row.at,
            id_tag=row.id_tag,
            status=row.status,
            reason=row.reason,
            action=row.action,
            charger_id=row.charger_id,
            connector_id=None if row.connector_id is None else int(row.connector_id),
        )
        for row in rows
    ]


# -- the fleet's card list --------------------------------------------------------------


@dataclass(frozen=True)
class SiteEntry:
    edge_id: str
    entry: CardEntry
    version: int  # the list version the entry last changed in


@dataclass(frozen=True)
class FleetCard:
    """One card of a fleet: its entry at each site holding it, and its last change."""

    key: str
    id_tag: str
    sites: tuple[SiteEntry, ...]  # by site id
    revision: int  # what an edit form carries (0: not changed since kept per card)
    changed_at: datetime | None
    changed_by: str | None
    change: str | None

    def values(self, field: str) -> list[Any]:
        """The field's distinct values across the sites, in site order."""
        found: list[Any] = []
        for site in self.sites:
            value = getattr(site.entry, field)
            if value not in found:
                found.append(value)
        return found

    def entries(self) -> dict[str, CardEntry]:
        return {site.edge_id: site.entry for site in self.sites}

    def at(self, edge_id: str) -> CardEntry | None:
        return next((site.entry for site in self.sites if site.edge_id == edge_id), None)


@dataclass(frozen=True)
class CardFilter:
    fleet_id: int
    site: str | None = None  # cards this site holds
    status: str | None = None  # cards with this status at some site (at `site`, if set)
    text: str | None = None  # in the id tag, label or account, any case


@dataclass(frozen=True)
class CardPage:
    cards: list[FleetCard]
    next_after: str | None  # the key to continue after; None: the last page


def card_page(engine: Engine, query: CardFilter, after: str | None, limit: int) -> CardPage:
    """Up to `limit` cards of the fleet past the key `after`, by key."""
    with reading(engine) as connection:
        keys = list(connection.execute(_keys(query, after, limit + 1)).scalars())
        cards = _cards(connection, query.fleet_id, keys[:limit])
    return CardPage(cards, keys[limit - 1] if len(keys) > limit else None)


def export_cards(
    engine: Engine, query: CardFilter, page: int = 1000
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every card the filter selects, by key, as (id tag, its rows by site): the rows as
    read (status, expiry_date, parent_id_tag, label, chargers), not made into entries,
    for an export of hundreds of thousands."""
    after = None
    while True:
        with reading(engine) as connection:
            keys = list(connection.execute(_keys(query, after, page + 1)).scalars())
            rows = connection.execute(
                select(edge_cards)
                .where(
                    edge_cards.c.fleet_id == query.fleet_id, edge_cards.c.id_key.in_(keys[:page])
                )
                .order_by(edge_cards.c.id_key, edge_cards.c.edge_id)
            ).all()
        held: dict[str, dict[str, Any]] = {}
        for row in rows:
            held.setdefault(row.id_key, {})[row.edge_id] = row
        for key in keys[:page]:
            sites = held.get(key)
            if sites:
                yield next(iter(sites.values())).id_tag, sites
        if len(keys) <= page:
            return
        after = keys[page - 1]


def fleet_card(engine: Engine, fleet_id: int, id_tag: str) -> FleetCard | None:
    """The card (any case) as the fleet's sites hold it; None when no site holds it."""
    with reading(engine) as connection:
        cards = _cards(connection, fleet_id, [card_key(id_tag)])
    return cards[0] if cards else None


def _keys(query: CardFilter, after: str | None, limit: int) -> Any:
    """The keys of a page: one row per card of the fleet (`fleet_cards`), in key order;
    the site and status are looked up in the card's own `edge_cards` rows (an index)."""
    statement = select(fleet_cards.c.id_key).where(
        fleet_cards.c.fleet_id == query.fleet_id, fleet_cards.c.sites > 0
    )
    if after is not None:
        statement = statement.where(fleet_cards.c.id_key > after)
    if query.text:
        escaped = query.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(fleet_cards.c.search.like(f"%{escaped}%", escape="\\"))
    if query.site is not None or query.status is not None:
        held = select(edge_cards.c.id_key).where(
            edge_cards.c.fleet_id == query.fleet_id, edge_cards.c.id_key == fleet_cards.c.id_key
        )
        if query.site is not None:
            held = held.where(edge_cards.c.edge_id == query.site)
        if query.status is not None:
            held = held.where(edge_cards.c.status == query.status)
        statement = statement.where(held.exists())
    return statement.order_by(fleet_cards.c.id_key).limit(limit)


def _cards(connection: Connection, fleet_id: int, keys: Sequence[str]) -> list[FleetCard]:
    if not keys:
        return []
    rows = connection.execute(
        select(edge_cards)
        .where(edge_cards.c.fleet_id == fleet_id, edge_cards.c.id_key.in_(keys))
        .order_by(edge_cards.c.id_key, edge_cards.c.edge_id)
    ).all()
    changes = {
        row.id_key: row
        for row in connection.execute(
            select(fleet_cards).where(
                fleet_cards.c.fleet_id == fleet_id, fleet_cards.c.id_key.in_(keys)
            )
        )
    }
    sites: dict[str, list[SiteEntry]] = {}
    for row in rows:
        sites.setdefault(row.id_key, []).append(
            SiteEntry(row.edge_id, entry_of(row), int(row.version))
        )
    cards = []
    for key in keys:
        held = sites.get(key)
        if not held:
            continue
        change = changes.get(key)
        cards.append(
            FleetCard(
                key=key,
                id_tag=held[0].entry.id_tag,
                sites=tuple(held),
                revision=int(change.revision) if change is not None else 0,
                changed_at=change.changed_at if change is not None else None,
                changed_by=change.changed_by if change is not None else None,
                change=change.change if change is not None else None,
            )
        )
    return cards
