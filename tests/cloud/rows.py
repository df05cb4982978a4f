"""Reading the store's tables directly, as a test checks what was written."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Table, func, select

from cloud.store.database import reading


def count(engine: Engine, table: Table) -> int:
    with reading(engine) as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def rows(engine: Engine, table: Table, *order_by: Any) -> list[Any]:
    with reading(engine) as connection:
        return list(connection.execute(select(table).order_by(*order_by)).all())
