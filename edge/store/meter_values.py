"""Meter values: every sampled value a charger reports, raw and normalised."""

from __future__ import annotations

from sqlite_utils import Database

from edge.metering import SampledValue


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
    db.conn.executemany(
        "INSERT INTO meter_values (charger_id, connector_id, transaction_id, "
        "unknown_transaction_id, charger_timestamp, received_at, measurand, phase, unit, "
        "context, location, format, value, normalized, wh) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                charger_id,
                connector_id,
                transaction_id,
                unknown_transaction_id,
                charger_timestamp,
                received_at,
                value.measurand,
                value.phase,
                value.unit,
                value.context,
                value.location,
                value.format,
                value.value,
                value.normalized,
                value.wh,
            )
            for value in values
        ],
    )
