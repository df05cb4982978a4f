"""What the fleet web view reads, always within one fleet: each edge's presence, sync
lag, backlog, refusals and health with its chargers counted by connector status (the
overview), one site's edge with its chargers (the site page), and the change marker the
live view polls. An edge of another fleet is never returned, whatever its id."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, func, select

from cloud.store.database import reading
from cloud.store.fleet import ChargerView, list_chargers
from cloud.store.schema import chargers, connectors, edges, rejections


@dataclass(frozen=True)
class EdgeSummary:
    edge_id: str
    site_name: str | None
    location: str | None
    state: str  # unknown, online, offline
    state_at: datetime | None  # when its status last changed or was restated
    last_seen_at: datetime | None  # the last message from it of any kind
    last_event_at: datetime | None  # the edge-clock time of its newest stored event
    backlog: int | None  # events not yet acknowledged, as it last said
    oldest_age_s: float | None  # the age of the oldest of them, then
    figures_at: datetime | None  # when it said so
    software_version: str | None
    disk_free_mb: float | None
    uptime_s: float | None
    health_at: datetime | None  # when disk_free_mb and uptime_s were reported
    rejections: int
    quarantined_events: int
    chargers: int
    chargers_disconnected: int
    connectors: dict[str, int] = field(default_factory=dict)  # by status
    faulted: int = 0  # connectors whose status is Faulted or who report an error code
    revision: int = 0

    @property
    def name(self) -> str:
        return self.site_name or self.edge_id


@dataclass(frozen=True)
class SiteView:
    edge: EdgeSummary
    chargers: list[ChargerView]


def fleet_edges(engine: Engine, fleet_id: int) -> list[EdgeSummary]:
    """Every edge of the fleet, by id, with its chargers counted."""
    with reading(engine) as connection:
        return _summaries(connection, fleet_id, None)


def site(engine: Engine, fleet_id: int, edge_id: str) -> SiteView | None:
    """One edge of the fleet with its chargers; None when the fleet has no such edge."""
    with reading(engine) as connection:
        found = _summaries(connection, fleet_id, edge_id)
    if not found:
        return None
    return SiteView(found[0], list_chargers(engine, edge_id))


def edge_revisions(engine: Engine) -> dict[str, tuple[int | None, int]]:
    """Every edge's fleet and change marker: what the live view compares between polls."""
    with reading(engine) as connection:
        rows = connection.execute(select(edges.c.id, edges.c.fleet_id, edges.c.revision)).all()
    return {row.id: (row.fleet_id, int(row.revision)) for row in rows}


def _summaries(connection: Any, fleet_id: int, edge_id: str | None) -> list[EdgeSummary]:
    scope = [edges.c.fleet_id == fleet_id]
    if edge_id is not None:
        scope.append(edges.c.id == edge_id)
    in_scope = select(edges.c.id).where(*scope)
    refused = (
        select(rejections.c.source, func.sum(rejections.c.count).label("total"))
        .where(rejections.c.source.in_(in_scope))
        .group_by(rejections.c.source)
        .subquery()
    )
    charger_counts = (
        select(
            chargers.c.edge_id,
            func.count().label("chargers"),
            func.sum(case((chargers.c.connected.is_(False), 1), else_=0)).label("disconnected"),
        )
        .where(chargers.c.edge_id.in_(in_scope))
        .group_by(chargers.c.edge_id)
        .subquery()
    )
    rows = connection.execute(
        select(
            edges.c.id,
            edges.c.site_name,
            edges.c.location,
            edges.c.state,
            edges.c.status_at,
            edges.c.status,
            edges.c.health,
            edges.c.health_at,
            edges.c.last_seen_at,
            edges.c.last_event_at,
            edges.c.backlog,
            edges.c.oldest_age_s,
            edges.c.figures_at,
            edges.c.software_version,
            edges.c.quarantined_events,
            edges.c.revision,
            refused.c.total,
            charger_counts.c.chargers,
            charger_counts.c.disconnected,
        )
        .outerjoin(refused, refused.c.source == edges.c.id)
        .outerjoin(charger_counts, charger_counts.c.edge_id == edges.c.id)
        .where(*scope)
        .order_by(edges.c.id)
    ).all()
    faulty = (connectors.c.status == "Faulted") | (connectors.c.error_code != "NoError")
    status_rows = connection.execute(
        select(
            connectors.c.edge_id,
            connectors.c.status,
            func.count().label("count"),
            func.sum(case((faulty, 1), else_=0)).label("faulted"),
        )
        .where(connectors.c.edge_id.in_(in_scope))
        .group_by(connectors.c.edge_id, connectors.c.status)
    ).all()
    by_edge: dict[str, dict[str, int]] = {}
    faulted: dict[str, int] = {}
    for status_row in status_rows:
        by_edge.setdefault(status_row.edge_id, {})[status_row.status] = int(status_row.count)
        faulted[status_row.edge_id] = faulted.get(status_row.edge_id, 0) + int(status_row.faulted)
    return [_summary(row, by_edge.get(row.id, {}), faulted.get(row.id, 0)) for row in rows]


def _number(document: Any, key: str) -> float | None:
    value = document.get(key) if isinstance(document, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _summary(row: Any, statuses: dict[str, int], faulted: int) -> EdgeSummary:
    # Disk and uptime: from whichever of the live status and the last health event is newer.
    health = (row.health, row.health_at)
    status = (row.status, row.status_at)
    newest, other = (status, health) if _later(row.status_at, row.health_at) else (health, status)
    disk, uptime, health_at = (
        _number(newest[0], "disk_free_mb"),
        _number(newest[0], "uptime_s"),
        newest[1],
    )
    if disk is None and uptime is None:
        disk, uptime, health_at = (
            _number(other[0], "disk_free_mb"),
            _number(other[0], "uptime_s"),
            other[1],
        )
    return EdgeSummary(
        edge_id=row.id,
        site_name=row.site_name,
        location=row.location,
        state=row.state,
        state_at=row.status_at,
        last_seen_at=row.last_seen_at,
        last_event_at=row.last_event_at,
        backlog=row.backlog,
        oldest_age_s=row.oldest_age_s,
        figures_at=row.figures_at,
        software_version=row.software_version,
        disk_free_mb=disk,
        uptime_s=uptime,
        health_at=health_at if disk is not None or uptime is not None else None,
        rejections=int(row.total or 0),
        quarantined_events=int(row.quarantined_events),
        chargers=int(row.chargers or 0),
        chargers_disconnected=int(row.disconnected or 0),
        connectors=statuses,
        faulted=faulted,
        revision=int(row.revision),
    )


def _later(first: datetime | None, second: datetime | None) -> bool:
    if first is None:
        return False
    return second is None or first >= second
