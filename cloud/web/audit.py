"""The audit hook every action of the view calls: `await record(engine, actor, action,
target, detail)`; the entry is in the actor's fleet. `recent(engine, fleet_id)` reads
them back, newest first."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from cloud.store import audit as audit_store
from cloud.store.audit import AuditEntry
from cloud.store.users import User


def now() -> datetime:
    return datetime.now(UTC)


async def record(
    engine: Engine,
    actor: User | str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record that `actor` (a user, or a name such as "token") did `action` to `target`."""
    name = actor.email if isinstance(actor, User) else actor
    fleet_id = actor.fleet_id if isinstance(actor, User) else None
    await asyncio.to_thread(
        audit_store.record,
        engine,
        at=now(),
        actor=name,
        fleet_id=fleet_id,
        action=action,
        target=target,
        detail=detail,
    )


async def recent(engine: Engine, fleet_id: int, limit: int = 100) -> list[AuditEntry]:
    return await asyncio.to_thread(audit_store.recent, engine, fleet_id, limit)
