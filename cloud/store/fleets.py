"""Fleets (organisations) and which edges belong to each: every edge is in one fleet,
the default fleet (id 1) until an operator assigns it, with an optional site name and
location. The web view scopes every query by the signed-in user's fleet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.store.card_writes import follow_edge_fleet
from cloud.store.database import StoreError, reading
from cloud.store.schema import edges as edge_rows
from cloud.store.schema import fleets, users
from cloud.store.statements import lock_edge
from cloud.store.tariffs import edge_moved, lock_tariffs
from cloud.store.times import utc_now

MAX_FLEET_NAME = 100
MAX_SITE_TEXT = 200


@dataclass(frozen=True)
class Fleet:
    fleet_id: int
    name: str
    created_at: datetime
    edges: int = 0
    users: int = 0


def _checked_text(what: str, text: str, limit: int) -> str:
    text = text.strip()
    if not text or len(text) > limit or not text.isprintable():
        raise StoreError(f"a {what} is 1-{limit} printable characters, not {text[:limit]!r}")
    return text


def add_fleet(engine: Engine, name: str) -> Fleet:
    name = _checked_text("fleet name", name, MAX_FLEET_NAME)
    now = utc_now()
    try:
        with engine.begin() as connection:
            fleet_id = connection.execute(
                insert(fleets).values(name=name, created_at=now).returning(fleets.c.id)
            ).scalar_one()
    except IntegrityError as error:
        raise StoreError(f"there is a fleet named {name!r} already") from error
    return Fleet(int(fleet_id), name, now)


def list_fleets(engine: Engine) -> list[Fleet]:
    """Every fleet with how many edges and users it has, by id."""
    edge_counts = (
        select(edge_rows.c.fleet_id, func.count().label("edges"))
        .group_by(edge_rows.c.fleet_id)
        .subquery()
    )
    user_counts = (
        select(users.c.fleet_id, func.count().label("users")).group_by(users.c.fleet_id).subquery()
    )
    with reading(engine) as connection:
        rows = connection.execute(
            select(fleets, edge_counts.c.edges, user_counts.c.users)
            .outerjoin(edge_counts, edge_counts.c.fleet_id == fleets.c.id)
            .outerjoin(user_counts, user_counts.c.fleet_id == fleets.c.id)
            .order_by(fleets.c.id)
        ).all()
    return [
        Fleet(int(row.id), row.name, row.created_at, int(row.edges or 0), int(row.users or 0))
        for row in rows
    ]


def find_fleet(engine: Engine, name_or_id: str) -> Fleet:
    """The fleet named `name_or_id` (or with that id); StoreError when there is none."""
    with reading(engine) as connection:
        row = connection.execute(select(fleets).where(fleets.c.name == name_or_id)).first()
        if row is None and name_or_id.isdigit():
            row = connection.execute(select(fleets).where(fleets.c.id == int(name_or_id))).first()
    if row is None:
        raise StoreError(f"no fleet {name_or_id!r}: `ocpp-cloud fleets list` shows them")
    return Fleet(int(row.id), row.name, row.created_at)


def assign_edge(
    engine: Engine,
    edge_id: str,
    fleet_id: int,
    *,
    site_name: str | None = None,
    location: str | None = None,
) -> None:
    """Put an edge (known or not yet in touch) in a fleet, with its site's name and
    location when given (an empty text clears them). Its sessions go with it, and are
    priced again (in the background) by the tariffs of the fleet it joins."""
    values: dict[str, object] = {"fleet_id": fleet_id}
    if site_name is not None:
        values["site_name"] = (
            _checked_text("site name", site_name, MAX_SITE_TEXT) if site_name.strip() else None
        )
    if location is not None:
        values["location"] = (
            _checked_text("location", location, MAX_SITE_TEXT) if location.strip() else None
        )
    try:
        with engine.begin() as connection:
            # Tariffs first, as every writer that prices (a move changes which apply).
            lock_tariffs(connection)
            before = lock_edge(connection, edge_id, utc_now())
            connection.execute(update(edge_rows).where(edge_rows.c.id == edge_id).values(values))
            follow_edge_fleet(connection, edge_id, fleet_id)
            if before.fleet_id != fleet_id:
                edge_moved(connection, edge_id, fleet_id)
    except IntegrityError as error:
        raise StoreError(f"no fleet with id {fleet_id}") from error
