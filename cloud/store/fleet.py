"""What the fleet view and the REST API read: edges with their presence and sync lag,
chargers with their connectors, transactions, counts of refused payloads and the events
quarantined. Plain frozen dataclasses, newest or most relevant first."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from cloud.store.database import reading
from cloud.store.schema import (
    chargers,
    connectors,
    edge_epochs,
    edges,
    quarantined_events,
    rejections,
    transactions,
)


@dataclass(frozen=True)
class EdgeView:
    edge_id: str
    state: str  # unknown (never reported presence), online, offline
    last_seq: int
    sync_lag_s: float | None  # now - the newest of: last stored event's time, last status
    backlog: int | None  # events the edge had not had acknowledged, as it last said
    oldest_age_s: float | None  # the age of the oldest of them, then
    software_version: str | None
    cards_version_reported: int | None
    rejections: int  # payloads refused from this edge, all reasons
    duplicate_events: int  # events it sent again after they were stored
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    epoch: str | None = None  # its store's identity (None: a release before epochs)
    epochs: int = 0  # stores it has had, as the cloud saw them
    epoch_started_at: datetime | None = None
    quarantined_events: int = 0  # its events put aside, never stored
    cards_refused: str | None = None  # why it refused the last card list it was sent
    state_since: datetime | None = None  # when its presence last changed, as the cloud heard

    @property
    def online(self) -> bool:
        return self.state == "online"


@dataclass(frozen=True)
class ConnectorView:
    connector_id: int
    status: str
    error_code: str
    info: str | None
    status_at: datetime


@dataclass(frozen=True)
class ChargerView:
    edge_id: str
    charger_id: str
    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware_version: str | None
    connected: bool | None
    connection_changed_at: datetime | None
    booted_at: datetime | None
    updated_at: datetime
    connectors: list[ConnectorView] = field(default_factory=list)


@dataclass(frozen=True)
class TransactionView:
    edge_id: str
    transaction_id: int
    charger_id: str
    connector_id: int | None
    id_tag: str | None
    id_tag_status: str | None
    meter_start_wh: int | None
    meter_stop_wh: int | None
    energy_wh: int
    power_w: float | None
    started_at: datetime | None
    stopped_at: datetime | None
    stop_reason: str | None

    @property
    def running(self) -> bool:
        return self.stopped_at is None


@dataclass(frozen=True)
class QuarantinedEvent:
    edge_id: str
    seq: int  # in the edge's events, across its stores
    epoch: str | None
    edge_seq: int  # the store's own seq, as the edge's log names it
    kind: str | None
    at: datetime | None
    reason: str  # invalid, too_large, unstorable
    detail: str
    raw: str  # the event as JSON, non-ASCII escaped, cut to limits.quarantine_sample_bytes
    raw_bytes: int
    received_at: datetime


@dataclass(frozen=True)
class RejectionCount:
    source: str  # the edge id, or the topic when it named none
    reason: str
    count: int
    first_at: datetime
    last_at: datetime
    sample: str


def list_edges(engine: Engine, now: datetime) -> list[EdgeView]:
    """Every edge the cloud knows, by id."""
    refused = (
        select(rejections.c.source, func.sum(rejections.c.count).label("total"))
        .group_by(rejections.c.source)
        .subquery()
    )
    stores = (
        select(
            edge_epochs.c.edge_id,
            func.count().label("epochs"),
            func.max(edge_epochs.c.started_at).label("epoch_started_at"),
        )
        .group_by(edge_epochs.c.edge_id)
        .subquery()
    )
    with reading(engine) as connection:
        rows = connection.execute(
            select(edges, refused.c.total, stores.c.epochs, stores.c.epoch_started_at)
            .outerjoin(refused, refused.c.source == edges.c.id)
            .outerjoin(stores, stores.c.edge_id == edges.c.id)
            .order_by(edges.c.id)
        ).all()
    return [
        EdgeView(
            edge_id=row.id,
            state=row.state,
            last_seq=int(row.last_seq),
            sync_lag_s=_lag(now, row.last_event_at, row.status_at),
            backlog=row.backlog,
            oldest_age_s=row.oldest_age_s,
            software_version=row.software_version,
            cards_version_reported=row.cards_version_reported,
            rejections=int(row.total or 0),
            duplicate_events=int(row.duplicate_events),
            first_seen_at=row.first_seen_at,
            last_seen_at=row.last_seen_at,
            epoch=row.epoch,
            epochs=int(row.epochs or 0),
            epoch_started_at=row.epoch_started_at,
            quarantined_events=int(row.quarantined_events),
            cards_refused=row.cards_refused,
            state_since=row.state_since,
        )
        for row in rows
    ]


def _lag(now: datetime, *moments: datetime | None) -> float | None:
    known = [moment for moment in moments if moment is not None]
    return (now - max(known)).total_seconds() if known else None


def list_chargers(engine: Engine, edge_id: str | None = None) -> list[ChargerView]:
    """Chargers with their connectors, by edge and charger id."""
    charger_query = select(chargers).order_by(chargers.c.edge_id, chargers.c.charger_id)
    connector_query = select(connectors).order_by(connectors.c.connector_id)
    if edge_id is not None:
        charger_query = charger_query.where(chargers.c.edge_id == edge_id)
        connector_query = connector_query.where(connectors.c.edge_id == edge_id)
    with reading(engine) as connection:
        charger_rows = connection.execute(charger_query).all()
        connector_rows = connection.execute(connector_query).all()
    by_charger: dict[tuple[str, str], list[ConnectorView]] = {}
    for row in connector_rows:
        by_charger.setdefault((row.edge_id, row.charger_id), []).append(
            ConnectorView(row.connector_id, row.status, row.error_code, row.info, row.status_at)
        )
    return [
        ChargerView(
            edge_id=row.edge_id,
            charger_id=row.charger_id,
            vendor=row.vendor,
            model=row.model,
            serial_number=row.serial_number,
            firmware_version=row.firmware_version,
            connected=row.connected,
            connection_changed_at=row.connection_changed_at,
            booted_at=row.booted_at,
            updated_at=row.updated_at,
            connectors=by_charger.get((row.edge_id, row.charger_id), []),
        )
        for row in charger_rows
    ]


def list_transactions(
    engine: Engine, edge_id: str | None = None, limit: int = 100
) -> list[TransactionView]:
    """The latest transactions, newest first (by start, else by last update)."""
    newest = func.coalesce(transactions.c.started_at, transactions.c.updated_at)
    query = (
        select(transactions)
        .order_by(newest.desc(), transactions.c.edge_id, transactions.c.transaction_id.desc())
        .limit(limit)
    )
    if edge_id is not None:
        query = query.where(transactions.c.edge_id == edge_id)
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [TransactionView(**_fields(row._mapping, TransactionView)) for row in rows]


def rejection_counts(engine: Engine) -> list[RejectionCount]:
    """Refused payloads per source and reason, the most recent first."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(rejections).order_by(rejections.c.last_at.desc(), rejections.c.source)
        ).all()
    return [RejectionCount(**_fields(row._mapping, RejectionCount)) for row in rows]


def list_quarantined(
    engine: Engine, edge_id: str | None = None, limit: int = 100
) -> list[QuarantinedEvent]:
    """Events put aside, newest first: of one edge, or of all."""
    query = (
        select(quarantined_events)
        .order_by(quarantined_events.c.received_at.desc(), quarantined_events.c.seq.desc())
        .limit(limit)
    )
    if edge_id is not None:
        query = query.where(quarantined_events.c.edge_id == edge_id)
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [QuarantinedEvent(**_fields(row._mapping, QuarantinedEvent)) for row in rows]


def _fields(mapping: Any, view: type[Any]) -> dict[str, Any]:
    """The columns of `mapping` that `view` has fields for."""
    names = view.__dataclass_fields__
    return {name: value for name, value in mapping.items() if name in names}
