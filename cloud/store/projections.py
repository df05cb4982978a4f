"""The views events feed: each event kind updates the rows it describes, inside the
transaction that stores the event, so views and events never disagree.

One handler per kind, registered in `HANDLERS`. A handler only writes what its event
says; it never refuses an event for what the store holds (a meter for a transaction
started before the edge synced makes the row, a result for a command the cloud does not
know changes nothing): refusing would stop the edge's whole outbox behind that event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, update

from cloud.store.schema import (
    card_uses,
    charger_jobs,
    chargers,
    commands,
    connector_history,
    connectors,
    edges,
    firmware_installs,
    firmware_status,
    transactions,
)
from cloud.store.session_writes import SessionWrites
from cloud.store.statements import PendingWrites
from cloud.store.times import parse_time
from contract.protocol import (
    CardsApplied,
    CardUsed,
    ChargerBoot,
    ChargerConnection,
    ChargerJob,
    CommandResult,
    ConnectorStatus,
    EdgeHealth,
    EventData,
    FirmwareInstall,
    FirmwareProgress,
    TransactionMeter,
    TransactionStarted,
    TransactionStopped,
)


class InvalidEvent(ValueError):
    """An event whose content cannot be used (a time that is not a time)."""


@dataclass(frozen=True)
class Applying:
    """Where and when the event being applied happened."""

    connection: Connection
    edge_id: str
    seq: int
    at: datetime  # the event's time, edge clock, UTC
    # Row writes, sent together once the batch is applied (statements.PendingWrites).
    pending: PendingWrites
    # Samples, sync delays and costs of sessions, written after the rows.
    sessions: SessionWrites
    # The edge's fleet (its row, locked for the batch): kept on each new session.
    fleet_id: int | None = None


def apply_event(applying: Applying, data: EventData) -> None:
    HANDLERS[type(data)](applying, data)


def _time(text: str, field: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as error:
        raise InvalidEvent(f"{field} {text!r} is not an ISO 8601 time") from error


def _charger(applying: Applying, charger_id: str, **values: Any) -> None:
    """Make or update the charger's row; every charger event moves `updated_at`."""
    applying.pending.upsert(
        chargers,
        {"edge_id": applying.edge_id, "charger_id": charger_id, "updated_at": applying.at} | values,
        key=["edge_id", "charger_id"],
    )


def on_charger_boot(applying: Applying, data: ChargerBoot) -> None:
    _charger(
        applying,
        data.charger_id,
        vendor=data.vendor,
        model=data.model,
        serial_number=data.serial_number,
        firmware_version=data.firmware_version,
        booted_at=applying.at,
    )


def on_charger_connection(applying: Applying, data: ChargerConnection) -> None:
    _charger(applying, data.charger_id, connected=data.connected, connection_changed_at=applying.at)


def on_connector_status(applying: Applying, data: ConnectorStatus) -> None:
    _charger(applying, data.charger_id)
    applying.pending.upsert(
        connectors,
        {
            "edge_id": applying.edge_id,
            "charger_id": data.charger_id,
            "connector_id": data.connector_id,
            "status": data.status,
            "error_code": data.error_code,
            "info": data.info,
            "status_at": applying.at,
        },
        key=["edge_id", "charger_id", "connector_id"],
    )
    # The charger page's status history (trimmed per charger once the batch is applied:
    # cloud/store/status_history.py).
    applying.pending.insert(
        connector_history,
        {
            "edge_id": applying.edge_id,
            "seq": applying.seq,
            "charger_id": data.charger_id,
            "connector_id": data.connector_id,
            "status": data.status,
            "error_code": data.error_code,
            "info": data.info,
            "at": applying.at,
        },
    )


def _transaction(applying: Applying, charger_id: str, transaction_id: int, **values: Any) -> None:
    _charger(applying, charger_id)
    applying.pending.upsert(
        transactions,
        {
            "edge_id": applying.edge_id,
            "transaction_id": transaction_id,
            "charger_id": charger_id,
            "updated_at": applying.at,
        }
        | values,
        key=["edge_id", "transaction_id"],
        # Listed by its start; until the start is heard of, by its first event.
        on_insert={"session_at": applying.at, "fleet_id": applying.fleet_id},
    )
    applying.sessions.heard(transaction_id, applying.at)


def on_transaction_started(applying: Applying, data: TransactionStarted) -> None:
    started_at = _time(data.started_at, "started_at")
    _transaction(
        applying,
        data.charger_id,
        data.transaction_id,
        connector_id=data.connector_id,
        id_tag=data.id_tag,
        id_tag_status=data.id_tag_status,
        meter_start_wh=data.meter_start_wh,
        started_at=started_at,
        session_at=started_at,
        account=data.parent_id_tag,
    )


def on_transaction_meter(applying: Applying, data: TransactionMeter) -> None:
    _transaction(
        applying,
        data.charger_id,
        data.transaction_id,
        energy_wh=data.energy_wh,
        power_w=data.power_w,
    )
    applying.sessions.sample(
        applying.seq,
        data.transaction_id,
        applying.at,
        data.meter_wh,
        data.energy_wh,
        data.power_w,
    )


def on_transaction_stopped(applying: Applying, data: TransactionStopped) -> None:
    _transaction(
        applying,
        data.charger_id,
        data.transaction_id,
        meter_stop_wh=data.meter_stop_wh,
        energy_wh=data.energy_wh,
        power_w=None,
        stopped_at=_time(data.stopped_at, "stopped_at"),
        stop_reason=data.reason,
    )
    applying.sessions.stopped(data.transaction_id)


def on_card_used(applying: Applying, data: CardUsed) -> None:
    applying.pending.insert(
        card_uses,
        {
            "edge_id": applying.edge_id,
            "seq": applying.seq,
            "at": applying.at,
            "id_tag": data.id_tag,
            "source": data.source,
            "action": data.action,
            "status": data.status,
            "reason": data.reason,
            "charger_id": data.charger_id,
            "connector_id": data.connector_id,
            "reader_id": data.reader_id,
        },
    )


def on_charger_job(applying: Applying, data: ChargerJob) -> None:
    _charger(applying, data.charger_id)
    applying.pending.upsert(
        charger_jobs,
        {
            "edge_id": applying.edge_id,
            "charger_id": data.charger_id,
            "job": data.job,
            "status": data.status,
            "request_id": data.request_id,
            "at": applying.at,
        },
        key=["edge_id", "charger_id", "job"],
    )


def on_command_result(applying: Applying, data: CommandResult) -> None:
    # The edge's word is final, also over an `expired` the cloud set while waiting for it.
    applying.connection.execute(
        update(commands)
        .where(commands.c.id == data.command_id, commands.c.edge_id == applying.edge_id)
        .values(
            status=data.status,
            detail=data.detail,
            response=data.response,
            finished_at=applying.at,
        )
    )


def on_cards_applied(applying: Applying, data: CardsApplied) -> None:
    # `refused`: why the edge did not take the list it was sent (None once it takes one).
    applying.connection.execute(
        update(edges)
        .where(edges.c.id == applying.edge_id)
        .values(cards_version_reported=data.version, cards_refused=data.refused)
    )


def on_firmware_progress(applying: Applying, data: FirmwareProgress) -> None:
    applying.pending.upsert(
        firmware_status,
        {
            "edge_id": applying.edge_id,
            "image": data.image,
            "status": data.status,
            "bytes": data.bytes,
            "detail": data.detail,
            "updated_at": applying.at,
        },
        key=["edge_id", "image"],
    )


def on_firmware_install(applying: Applying, data: FirmwareInstall) -> None:
    """A charger's latest install; an `installed` one is also the version it runs."""
    values: dict[str, Any] = {
        "edge_id": applying.edge_id,
        "charger_id": data.charger_id,
        "image": data.image,
        "version": data.version,
        "status": data.status,
        "detail": data.detail,
        "forced": data.forced,
        "command_id": data.command_id,
        "updated_at": applying.at,
    }
    if data.status == "installed":
        values |= {
            "installed_image": data.image,
            "installed_version": data.version,
            "installed_at": applying.at,
        }
    applying.pending.upsert(firmware_installs, values, key=["edge_id", "charger_id"])


def on_edge_health(applying: Applying, data: EdgeHealth) -> None:
    connection, edge = applying.connection, edges.c
    connection.execute(
        update(edges)
        .where(edge.id == applying.edge_id)
        .values(
            health=data.model_dump(mode="json"),
            health_at=applying.at,
            software_version=data.software_version,
        )
    )
    # A health event from a backlog is older than the live status's figures: keep those.
    connection.execute(
        update(edges)
        .where(
            edge.id == applying.edge_id,
            or_(edge.figures_at.is_(None), edge.figures_at < applying.at),
        )
        .values(backlog=data.backlog, oldest_age_s=data.oldest_age_s, figures_at=applying.at)
    )
    if data.backlog == 0:
        # Everything the edge recorded before this had reached the cloud (month closing).
        connection.execute(
            update(edges)
            .where(
                edge.id == applying.edge_id,
                or_(edge.backlog_empty_at.is_(None), edge.backlog_empty_at < applying.at),
            )
            .values(backlog_empty_at=applying.at)
        )


HANDLERS: dict[type[Any], Callable[[Applying, Any], None]] = {
    ChargerBoot: on_charger_boot,
    ChargerConnection: on_charger_connection,
    ConnectorStatus: on_connector_status,
    TransactionStarted: on_transaction_started,
    TransactionMeter: on_transaction_meter,
    TransactionStopped: on_transaction_stopped,
    CardUsed: on_card_used,
    ChargerJob: on_charger_job,
    CommandResult: on_command_result,
    CardsApplied: on_cards_applied,
    FirmwareProgress: on_firmware_progress,
    FirmwareInstall: on_firmware_install,
    EdgeHealth: on_edge_health,
}
