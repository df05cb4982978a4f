"""What the fleet web view reads, always within one fleet: each edge's presence, sync
lag, backlog, refusals and health with its chargers counted by connector status (the
overview), one site's edge with its chargers (the site page), and the change marker the
live view polls. An edge of another fleet is never returned, whatever its id.

The counts are kept on the edge's row by ingest (`refresh_charger_counts`, in the batch's
transaction), so that the overview of 1,000 edges reads 1,000 rows, not 40,000 connectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, func, select, update

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


# Event kinds that change an edge's charger and connector counts.
COUNTED_KINDS = frozenset({"charger.boot", "charger.connection", "charger.status"})


def refresh_charger_counts(connection: Connection, edge_id: str) -> None:
    """Count the edge's chargers and connectors again (in the transaction that changed
    them, on the edge's locked row): what the overview shows without reading them."""
    total, disconnected = connection.execute(
        select(func.count(), _count_if(chargers.c.connected.is_(False))).where(
            chargers.c.edge_id == edge_id
        )
    ).one()
    faulty = (connectors.c.status == "Faulted") | (connectors.c.error_code != "NoError")
    by_status: dict[str, int] = {}
    faulted = 0
    for status, count, faulty_count in connection.execute(
        select(connectors.c.status, func.count(), _count_if(faulty))
        .where(connectors.c.edge_id == edge_id)
        .group_by(connectors.c.status)
    ):
        by_status[status] = int(count)
        faulted += int(faulty_count)
    connection.execute(
        update(edges)
        .where(edges.c.id == edge_id)
        .values(
            chargers_total=int(total),
            chargers_disconnected=int(disconnected),
            connectors_faulted=faulted,
            connector_counts=dict(sorted(by_status.items())),
        )
    )


def _count_if(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _summaries(connection: Any, fleet_id: int, edge_id: str | None) -> list[EdgeSummary]:
    """The fleet's edges (or one): one row each, the counts kept with the edge."""
    scope = [edges.c.fleet_id == fleet_id]
    if edge_id is not None:
        scope.append(edges.c.id == edge_id)
    refused = dict(
        connection.execute(
            select(rejections.c.source, func.sum(rejections.c.count))
            .where(rejections.c.source.in_(select(edges.c.id).where(*scope)))
            .group_by(rejections.c.source)
        ).all()
    )
    rows = connection.execute(
        select(
            edges.c.id,
            edges.c.site_name,
            edges.c.location,
            edges.c.state,
            edges.c.status_at,
            edges.c.status["disk_free_mb"].as_float(),
            edges.c.status["uptime_s"].as_float(),
            edges.c.health["disk_free_mb"].as_float(),
            edges.c.health["uptime_s"].as_float(),
            edges.c.health_at,
            edges.c.last_seen_at,
            edges.c.last_event_at,
            edges.c.backlog,
            edges.c.oldest_age_s,
            edges.c.figures_at,
            edges.c.software_version,
            edges.c.quarantined_events,
            edges.c.revision,
            edges.c.chargers_total,
            edges.c.chargers_disconnected,
            edges.c.connectors_faulted,
            edges.c.connector_counts,
        )
        .where(*scope)
        .order_by(edges.c.id)
    ).all()
    return [_summary(row, int(refused.get(row[0]) or 0)) for row in rows]


def _summary(row: Any, refused: int) -> EdgeSummary:
    (
        edge_id,
        site_name,
        location,
        state,
        status_at,
        status_disk,
        status_uptime,
        health_disk,
        health_uptime,
        health_at,
        last_seen_at,
        last_event_at,
        backlog,
        oldest_age_s,
        figures_at,
        software_version,
        quarantined_events,
        revision,
        chargers_total,
        chargers_disconnected,
        connectors_faulted,
        connector_counts,
    ) = row
    # Disk and uptime: from whichever of the live status and the last health event is
    # newer and has them.
    figures = [(status_at, status_disk, status_uptime), (health_at, health_disk, health_uptime)]
    if not _later(status_at, health_at):
        figures.reverse()
    known = [figure for figure in figures if figure[1] is not None or figure[2] is not None]
    figures_time, disk, uptime = known[0] if known else (None, None, None)
    return EdgeSummary(
        edge_id=edge_id,
        site_name=site_name,
        location=location,
        state=state,
        state_at=status_at,
        last_seen_at=last_seen_at,
        last_event_at=last_event_at,
        backlog=backlog,
        oldest_age_s=oldest_age_s,
        figures_at=figures_at,
        software_version=software_version,
        disk_free_mb=disk,
        uptime_s=uptime,
        health_at=figures_time,
        rejections=refused,
        quarantined_events=int(quarantined_events),
        chargers=int(chargers_total),
        chargers_disconnected=int(chargers_disconnected),
        connectors=connector_counts or {},
        faulted=int(connectors_faulted),
        revision=int(revision),
    )


def _later(first: datetime | None, second: datetime | None) -> bool:
    if first is None:
        return False
    return second is None or first >= second
