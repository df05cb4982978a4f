"""Each edge's presence over time: a row for every change (online, or not), written in
the transaction that takes the status saying so, and read newest first.

An edge that flaps cannot grow its history without bound: past `keep` rows, its oldest
are deleted as each new one is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, insert, select

from cloud.store.database import reading
from cloud.store.schema import edge_presence

# Changes kept per edge unless the settings say otherwise (limits.presence_history_per_edge).
PRESENCE_HISTORY_PER_EDGE = 1000


@dataclass(frozen=True)
class PresenceChange:
    online: bool
    at: datetime  # when the cloud heard it


def record_change(
    connection: Connection, edge_id: str, online: bool, at: datetime, keep: int
) -> None:
    """Append a change of `edge_id`'s presence; keep its newest `keep` changes."""
    connection.execute(insert(edge_presence).values(edge_id=edge_id, online=online, at=at))
    oldest_kept = (
        select(edge_presence.c.id)
        .where(edge_presence.c.edge_id == edge_id)
        .order_by(edge_presence.c.id.desc())
        .limit(1)
        .offset(keep)
        .scalar_subquery()
    )
    connection.execute(
        delete(edge_presence).where(
            edge_presence.c.edge_id == edge_id, edge_presence.c.id <= oldest_kept
        )
    )


def presence_history(
    engine: Engine, edge_id: str, limit: int = 100, before: int | None = None
) -> list[tuple[int, PresenceChange]]:
    """`edge_id`'s changes, newest first, with their ids (give the last one as `before`
    for the next page)."""
    query = (
        select(edge_presence.c.id, edge_presence.c.online, edge_presence.c.at)
        .where(edge_presence.c.edge_id == edge_id)
        .order_by(edge_presence.c.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(edge_presence.c.id < before)
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [(int(row.id), PresenceChange(bool(row.online), row.at)) for row in rows]
