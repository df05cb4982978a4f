"""CSV imports of cards between their preview and their application: the file's text, who
previewed it in which fleet (and for which site), the fleet's cards revision it was
previewed at and the digest of the plan shown. Kept in the store so that any replica can
apply what another previewed; forgotten once applied, after `cards.import_preview_lifetime`
seconds, and beyond the latest `KEEP_PER_FLEET` of a fleet."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert, select

from cloud.store.database import reading
from cloud.store.schema import card_imports
from cloud.store.times import utc_now

KEEP_PER_FLEET = 20


@dataclass(frozen=True)
class StashedImport:
    import_id: str
    fleet_id: int
    user_id: int
    site: str | None
    filename: str
    content: str
    mark: int
    digest: str
    created_at: datetime


def stash_import(
    engine: Engine,
    *,
    fleet_id: int,
    user_id: int,
    site: str | None,
    filename: str,
    content: str,
    mark: int,
    digest: str,
    lifetime_s: float,
) -> str:
    """Keep a previewed import; its id (random: it names nothing of the fleet)."""
    now = utc_now()
    import_id = secrets.token_hex(16)
    with engine.begin() as connection:
        connection.execute(
            delete(card_imports).where(
                card_imports.c.created_at < now - timedelta(seconds=lifetime_s)
            )
        )
        older = connection.execute(
            select(card_imports.c.id)
            .where(card_imports.c.fleet_id == fleet_id)
            .order_by(card_imports.c.created_at.desc(), card_imports.c.id)
            .offset(KEEP_PER_FLEET - 1)
        ).scalars()
        stale = list(older)
        if stale:
            connection.execute(delete(card_imports).where(card_imports.c.id.in_(stale)))
        connection.execute(
            insert(card_imports).values(
                id=import_id,
                fleet_id=fleet_id,
                user_id=user_id,
                site=site,
                filename=filename,
                content=content,
                mark=mark,
                digest=digest,
                created_at=now,
            )
        )
    return import_id


def stashed_import(
    engine: Engine, import_id: str, fleet_id: int, user_id: int, lifetime_s: float
) -> StashedImport | None:
    """The import this user previewed in this fleet, while it is kept; else None."""
    with reading(engine) as connection:
        row = connection.execute(
            select(card_imports).where(
                card_imports.c.id == import_id,
                card_imports.c.fleet_id == fleet_id,
                card_imports.c.user_id == user_id,
                card_imports.c.created_at >= utc_now() - timedelta(seconds=lifetime_s),
            )
        ).one_or_none()
    if row is None:
        return None
    return StashedImport(
        row.id,
        row.fleet_id,
        row.user_id,
        row.site,
        row.filename,
        row.content,
        int(row.mark),
        row.digest,
        row.created_at,
    )


def drop_import(engine: Engine, import_id: str) -> None:
    with engine.begin() as connection:
        connection.execute(delete(card_imports).where(card_imports.c.id == import_id))
