"""What the fleet web view's cards page reads, always within one fleet: each edge's card
list version wanted (the latest the cloud holds) against the one the edge applied, and
the cards the edges refused, with the reason each edge recorded.

Card lists are written by `desired.set_card_list`, the same path as the API's
`PUT /api/edges/{edge}/cards`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from cloud.store.database import reading
from cloud.store.schema import card_lists, card_uses, edges

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
    engine: Engine, fleet_id: int, edge_id: str | None = None, limit: int = 50
) -> list[CardRefusal]:
    """The fleet's latest refused card decisions (of one edge, or all), newest first,
    as the edges recorded them, also those made while the site was offline."""
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
