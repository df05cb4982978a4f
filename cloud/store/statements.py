"""Statements every writer of the store shares, written once for SQLite and PostgreSQL:
insert-or-update by key, and taking an edge's row (made on first contact) with a lock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from cloud.store.schema import edges


def upsert(
    connection: Connection,
    table: Table,
    values: Mapping[str, Any],
    key: Sequence[str],
    update: Mapping[str, Any] | None = None,
) -> None:
    """Insert `values`; when a row with the same `key` exists, set `update` on it instead
    (by default every column of `values` outside the key; empty: leave the row as it is).
    `update` values may be expressions on the existing row (`table.c.count + 1`)."""
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(table).values(**values)
    changes = update if update is not None else {k: v for k, v in values.items() if k not in key}
    if changes:
        connection.execute(statement.on_conflict_do_update(index_elements=key, set_=changes))
    else:
        connection.execute(statement.on_conflict_do_nothing(index_elements=key))


def lock_edge(connection: Connection, edge_id: str, now: datetime) -> Row[Any]:
    """The edge's row, created if it is new, locked until the transaction ends: on
    PostgreSQL by `FOR UPDATE`, on SQLite by the write lock `BEGIN IMMEDIATE` took."""
    upsert(connection, edges, {"id": edge_id, "created_at": now}, key=["id"], update={})
    return connection.execute(select(edges).where(edges.c.id == edge_id).with_for_update()).one()
