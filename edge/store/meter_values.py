"""Meter values: every sampled value a charger reports, raw and normalised."""

from __future__ import annotations

from sqlite_utils import Database

from edge.metering import SampledValue

# What one reading's values share, then each value's own fields: a row is the two joined.
_READING_COLUMNS = (
    "charger_id",
    "connector_id",
    "transaction_id",
    "unknown_transaction_id",
    "charger_timestamp",
    "received_at",
)
_COLUMNS = (*_READING_COLUMNS, *SampledValue._fields)
_INSERT_SQL = (
    f"INSERT INTO meter_values ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
)


def insert_meter_values(
    db: Database,
    charger_id: str,
    connector_id: int,
    transaction_id: int | None,
    unknown_transaction_id: int | None,
    charger_timestamp: str,
    received_at: str,
    values: list[SampledValue],
) -> None:
    reading = (
        charger_id,
        connector_id,
        transaction_id,
        unknown_transaction_id,
        charger_timestamp,
        received_at,
    )
    db.conn.executemany(_INSERT_SQL, [reading + value for value in values])
