"""Each charger's connector status history: every status an edge reported, kept in
`connector_history` by ingest (cloud/store/projections.py) and trimmed in the same
transaction to the latest `limits.status_history_per_charger` per charger, so that a
charger flapping for a year holds a bounded number of rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, select

from cloud.store.database import reading
from cloud.store.schema import connector_history

# Statuses kept per charger unless `limits.status_history_per_charger` says otherwise.
STATUS_HISTORY_PER_CHARGER = 200


@dataclass(frozen=True)
class StatusChange:
    seq: int
    connector_id: int
    status: str
    error_code: str
    info: str | None
    at: datetime  # the edge's clock, UTC


def trim_status_history(
    connection: Connection, edge_id: str, charger_ids: Iterable[str], keep: int
) -> None:
    """Drop all but the `keep` latest statuses of each of these chargers."""
    history = connector_history.c
    for charger_id in sorted(set(charger_ids)):
        oldest_kept = (
            select(history.seq)
            .where(history.edge_id == edge_id, history.charger_id == charger_id)
            .order_by(history.seq.desc())
            .offset(keep - 1)
            .limit(1)
            .scalar_subquery()
        )
        connection.execute(
            delete(connector_history).where(
                history.edge_id == edge_id,
                history.charger_id == charger_id,
                history.seq < oldest_kept,
            )
        )


def status_history(
    engine: Engine, edge_id: str, charger_id: str, limit: int = 50
) -> list[StatusChange]:
    """The charger's latest statuses, newest first."""
    history = connector_history.c
    query = (
        select(connector_history)
        .where(history.edge_id == edge_id, history.charger_id == charger_id)
        .order_by(history.seq.desc())
        .limit(limit)
    )
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [
        StatusChange(
            int(row.seq), int(row.connector_id), row.status, row.error_code, row.info, row.at
        )
        for row in rows
    ]
