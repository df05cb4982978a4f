"""What the fleet web view reads, always within one fleet: each edge's presence, sync
lag, backlog, refusals and health with its chargers counted by connector status (the
overview), one site's edge with its chargers (the site page), and the change marker the
live view polls. An edge of another fleet is never returned, whatever its id.

The counts are kept on the edge's row by ingest (`refresh_charger_counts`, in the batch's
transaction), so that the overview of 1,000 edges reads 1,000 rows, not 40,000 connectors.
A replica keeps each edge's summary with the change marker (`edges.revision`) it was read
at (`SummaryCache`): a page reads every edge's marker, then only the rows whose marker
moved. Every transaction that writes about an edge raises its marker (`lock_edge`,
`record_rejection`), so a kept summary is never older than the store's."""

from __future__ import annotations

import threading
from collections.abc import Sequence
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


class SummaryCache:
    """Each fleet's edge summaries as a replica last read them, each with the revision it
    was read at. Holds at most the edges of the fleets read (an edge's entry is dropped
    when its fleet is next read without it); shared by the page threads of a replica."""

    def __init__(self) -> None:
        self._fleets: dict[int, dict[str, EdgeSummary]] = {}
        self._lock = threading.Lock()
        self.rows_read = 0  # rows read from the store, for tests and the bench

    def kept(self, fleet_id: int) -> dict[str, EdgeSummary]:
        with self._lock:
            return self._fleets.get(fleet_id, {})

    def keep(self, fleet_id: int, summaries: dict[str, EdgeSummary], read: int) -> None:
        with self._lock:
            self._fleets[fleet_id] = summaries
            self.rows_read += read


# Past this many edges to read again, the whole fleet is read rather than a list of ids.
_READ_BY_ID_UP_TO = 500


def fleet_edges(
    engine: Engine, fleet_id: int, cache: SummaryCache | None = None
) -> list[EdgeSummary]:
    """Every edge of the fleet, by id, with its chargers counted. With a cache: the rows
    whose revision moved since it kept them are read again, the others taken from it,
    all as of one snapshot of the store."""
    with reading(engine) as connection:
        if cache is None:
            return _summaries(connection, fleet_id)
        marks = connection.execute(
            select(edges.c.id, edges.c.revision)
            .where(edges.c.fleet_id == fleet_id)
            .order_by(edges.c.id)
        ).all()
        kept = cache.kept(fleet_id)
        moved = [
            edge_id
            for edge_id, revision in marks
            if (summary := kept.get(edge_id)) is None or summary.revision != revision
        ]
        if not moved:
            fresh: list[EdgeSummary] = []
        elif len(moved) > _READ_BY_ID_UP_TO:
            fresh = _summaries(connection, fleet_id)
        else:
            fresh = _summaries(connection, fleet_id, moved)
    current = {summary.edge_id: summary for summary in fresh}
    summaries = [current.get(edge_id) or kept[edge_id] for edge_id, _ in marks]
    cache.keep(fleet_id, {summary.edge_id: summary for summary in summaries}, len(fresh))
    return summaries


def site(engine: Engine, fleet_id: int, edge_id: str) -> SiteView | None:
    """One edge of the fleet with its chargers; None when the fleet has no such edge."""
    with reading(engine) as connection:
        found = _summaries(connection, fleet_id, [edge_id])
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


def _summaries(
    connection: Any, fleet_id: int, edge_ids: Sequence[str] | None = None
) -> list[EdgeSummary]:
    """The fleet's edges (or those of them named): one row each, the counts kept with the
    edge."""
    scope = [edges.c.fleet_id == fleet_id]
    if edge_ids is not None:
        scope.append(edges.c.id.in_(edge_ids))
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
