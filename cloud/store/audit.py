"""The audit log: who did what in the fleet web view (logins, commands, card changes,
campaigns), per fleet, newest first. Written by cloud/web/audit.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select

from cloud.store.database import reading
from cloud.store.schema import audit_log, edges

# What a row's texts may hold: an actor or target is named, not described.
MAX_TEXT = 500


@dataclass(frozen=True)
class AuditEntry:
    entry_id: int
    at: datetime
    actor: str
    fleet_id: int | None
    action: str
    target: str
    detail: dict[str, Any] | None


def record(
    engine: Engine,
    *,
    at: datetime,
    actor: str,
    fleet_id: int | None,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(audit_log).values(
                at=at,
                actor=actor[:MAX_TEXT],
                fleet_id=fleet_id,
                action=action[:64],
                target=target[:MAX_TEXT],
                detail=detail,
            )
        )


def record_for_edge(
    engine: Engine,
    *,
    at: datetime,
    actor: str,
    edge_id: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """An entry in the fleet of `edge_id` (for an actor of no fleet: the API's token)."""
    fleet_of_edge = select(edges.c.fleet_id).where(edges.c.id == edge_id).scalar_subquery()
    with engine.begin() as connection:
        connection.execute(
            insert(audit_log).values(
                at=at,
                actor=actor[:MAX_TEXT],
                fleet_id=fleet_of_edge,
                action=action[:64],
                target=target[:MAX_TEXT],
                detail=detail,
            )
        )


def recent(engine: Engine, fleet_id: int, limit: int = 100) -> list[AuditEntry]:
    """The fleet's latest entries, newest first."""
    query = (
        select(audit_log)
        .where(audit_log.c.fleet_id == fleet_id)
        .order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
        .limit(limit)
    )
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [
        AuditEntry(int(row.id), row.at, row.actor, row.fleet_id, row.action, row.target, row.detail)
        for row in rows
    ]


def page(
    engine: Engine, fleet_id: int, before: int | None = None, limit: int = 50
) -> list[AuditEntry]:
    """A page of the fleet's entries, newest first: those older than entry `before`
    (keyset paging: a page deep in a long log costs what the first one does)."""
    query = select(audit_log).where(audit_log.c.fleet_id == fleet_id)
    if before is not None:
        query = query.where(audit_log.c.id < before)
    query = query.order_by(audit_log.c.id.desc()).limit(limit)
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [
        AuditEntry(int(row.id), row.at, row.actor, row.fleet_id, row.action, row.target, row.detail)
        for row in rows
    ]
