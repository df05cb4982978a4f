"""Secrets every replica must share (the key that signs web session cookies): made once
by whichever replica needs one first, then read by all."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, select

from cloud.store.schema import secrets
from cloud.store.statements import upsert
from cloud.store.times import utc_now


def shared_secret(engine: Engine, name: str, make: Callable[[], str]) -> str:
    """The secret called `name`; when there is none yet, `make()`'s, kept. Two replicas
    racing both read the one that was inserted first."""
    with engine.begin() as connection:
        upsert(
            connection,
            secrets,
            {"name": name, "value": make(), "created_at": utc_now()},
            key=["name"],
            update={},
        )
        value: str = connection.execute(
            select(secrets.c.value).where(secrets.c.name == name)
        ).scalar_one()
    return value
