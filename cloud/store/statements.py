"""Statements every writer of the store shares, written once for SQLite and PostgreSQL:
insert-or-update by key, and taking an edge's row (made on first contact) with a lock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from cloud.store.schema import DEFAULT_FLEET_ID, edges, metadata
from contract.protocol import check_edge_id


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


class PendingWrites:
    """Row writes of a batch of events, gathered and then sent as one statement per table
    and column set. Upserts of one key merge in order, later values winning, which ends
    in the same row as running them one after another: a batch of 500 events touches a
    few dozen rows, not 500."""

    def __init__(self) -> None:
        # Per table and key: the values to write, the key's columns, and values written
        # only when the row is made (never over an existing row's).
        self._upserts: dict[
            Table, dict[tuple[Any, ...], tuple[dict[str, Any], tuple[str, ...], dict[str, Any]]]
        ]
        self._upserts = {}
        self._inserts: dict[Table, list[dict[str, Any]]] = {}

    def upsert(
        self,
        table: Table,
        values: Mapping[str, Any],
        key: Sequence[str],
        *,
        on_insert: Mapping[str, Any] | None = None,
    ) -> None:
        """Write `values` to the row of `key`; `on_insert` only if the row is new (the
        first such value of the batch counts; a column in `values` takes precedence)."""
        rows = self._upserts.setdefault(table, {})
        identity = tuple(values[column] for column in key)
        if identity in rows:
            rows[identity][0].update(values)
            for column, value in (on_insert or {}).items():
                rows[identity][2].setdefault(column, value)
        else:
            rows[identity] = (dict(values), tuple(key), dict(on_insert or {}))

    def insert(self, table: Table, values: Mapping[str, Any]) -> None:
        self._inserts.setdefault(table, []).append(dict(values))

    def flush(self, connection: Connection) -> None:
        """Write everything, parents before children (the schema's foreign keys)."""
        for table in metadata.sorted_tables:
            groups: dict[
                tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], list[dict[str, Any]]
            ] = {}
            for values, key, on_insert in self._upserts.get(table, {}).values():
                row = {k: v for k, v in on_insert.items() if k not in values} | values
                group = (tuple(sorted(row)), key, tuple(sorted(values)))
                groups.setdefault(group, []).append(row)
            for (_, key, updated), rows in groups.items():
                _upsert_many(connection, table, key, updated, rows)
            if table in self._inserts:
                connection.execute(insert(table), self._inserts[table])
        self._upserts.clear()
        self._inserts.clear()


def _upsert_many(
    connection: Connection,
    table: Table,
    key: Sequence[str],
    updated: Sequence[str],
    rows: list[dict[str, Any]],
) -> None:
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(table)
    changes = {column: statement.excluded[column] for column in updated if column not in key}
    connection.execute(
        statement.on_conflict_do_update(index_elements=list(key), set_=changes)
        if changes
        else statement.on_conflict_do_nothing(index_elements=list(key)),
        rows,
    )


def lock_edge(connection: Connection, edge_id: str, now: datetime) -> Row[Any]:
    """The edge's row, created if it is new, locked until the transaction ends: on
    PostgreSQL by `FOR UPDATE`, on SQLite by the write lock `BEGIN IMMEDIATE` took.
    InvalidEdgeId for text that is no edge id: no row is ever made for one."""
    check_edge_id(edge_id)
    upsert(
        connection,
        edges,
        {"id": edge_id, "created_at": now, "fleet_id": DEFAULT_FLEET_ID},
        key=["id"],
        # The change marker the web view polls: one more writer on a row already locked.
        update={"revision": edges.c.revision + 1},
    )
    return connection.execute(select(edges).where(edges.c.id == edge_id).with_for_update()).one()
