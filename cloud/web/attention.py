"""What the fleet view says about an edge beyond its raw figures, as plain functions:
whether it needs attention and why, and what time its data is from. An offline edge's
chargers are stale, not down: their last known state is shown with its time, never
counted as faults."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from cloud.store.overview import EdgeSummary

# An edge whose oldest unsent event is older than this is falling behind.
BACKLOG_AGE_LIMIT_S = 600.0
# Less free disk than this on an edge (MB) and its store may soon stop taking events.
LOW_DISK_MB = 500.0

Level = Literal["alert", "warning"]


@dataclass(frozen=True)
class Concern:
    level: Level
    text: str


def data_as_of(edge: EdgeSummary, now: datetime) -> datetime | None:
    """Up to when the cloud holds everything this edge recorded: now while it is online
    with nothing waiting; the oldest waiting event's time when it has a backlog; when it
    went offline (or its backlog's start, if earlier) when it is offline."""
    waiting_since = None
    if edge.backlog and edge.oldest_age_s is not None and edge.figures_at is not None:
        waiting_since = edge.figures_at - timedelta(seconds=edge.oldest_age_s)
    if edge.state == "online":
        return waiting_since or now
    known = [moment for moment in (edge.state_at, edge.last_seen_at, waiting_since) if moment]
    return min(known) if known else None


def concerns(edge: EdgeSummary, now: datetime) -> list[Concern]:
    """Why the edge needs attention, the most serious first; empty: it does not."""
    found: list[Concern] = []
    if edge.state == "offline":
        found.append(Concern("alert", "offline"))
    elif edge.state == "unknown":
        found.append(Concern("warning", "has not reported its presence"))
    if edge.backlog and edge.oldest_age_s is not None and edge.figures_at is not None:
        age = edge.oldest_age_s + (now - edge.figures_at).total_seconds()
        if age > BACKLOG_AGE_LIMIT_S:
            found.append(Concern("alert", f"{edge.backlog} events waiting to sync"))
    if edge.state == "online":
        # Faults of an offline edge are old news: its page says "last known".
        if edge.faulted:
            found.append(Concern("alert", f"{edge.faulted} connectors faulted"))
        if edge.chargers_disconnected:
            found.append(Concern("warning", f"{edge.chargers_disconnected} chargers not connected"))
    if edge.quarantined_events:
        found.append(Concern("warning", f"{edge.quarantined_events} events quarantined"))
    if edge.rejections:
        found.append(Concern("warning", f"{edge.rejections} payloads refused"))
    if edge.disk_free_mb is not None and edge.disk_free_mb < LOW_DISK_MB:
        found.append(Concern("alert", f"{edge.disk_free_mb:.0f} MB disk free"))
    return sorted(found, key=lambda concern: concern.level != "alert")


@dataclass(frozen=True)
class EdgeRow:
    edge: EdgeSummary
    concerns: list[Concern]
    data_as_of: datetime | None

    @property
    def level(self) -> Level | None:
        return self.concerns[0].level if self.concerns else None

    def uptime_s(self, now: datetime) -> float | None:
        """The edge's uptime now while it is online; as last reported otherwise."""
        edge = self.edge
        if edge.uptime_s is None or edge.health_at is None or edge.state != "online":
            return edge.uptime_s
        return edge.uptime_s + max((now - edge.health_at).total_seconds(), 0.0)


@dataclass(frozen=True)
class Totals:
    """Connectors by status: of online edges (as of the oldest time their data is from)
    and, apart, the last known of offline edges (as of the oldest of those times)."""

    edges: int = 0
    online: int = 0
    offline: int = 0
    chargers: int = 0
    live: dict[str, int] = field(default_factory=dict)
    live_as_of: datetime | None = None
    stale: dict[str, int] = field(default_factory=dict)
    stale_as_of: datetime | None = None
    needing_attention: int = 0


def fleet_rows(edges: list[EdgeSummary], now: datetime) -> list[EdgeRow]:
    """The edges, those needing attention first (alerts, then warnings), then by name."""
    rows = [EdgeRow(edge, concerns(edge, now), data_as_of(edge, now)) for edge in edges]
    rank = {"alert": 0, "warning": 1, None: 2}
    return sorted(rows, key=lambda row: (rank[row.level], -len(row.concerns), row.edge.name))


def totals(rows: list[EdgeRow]) -> Totals:
    live: Counter[str] = Counter()
    stale: Counter[str] = Counter()
    live_times: list[datetime] = []
    stale_times: list[datetime] = []
    for row in rows:
        counts, times = (live, live_times) if row.edge.state == "online" else (stale, stale_times)
        counts.update(row.edge.connectors)
        if row.data_as_of is not None and row.edge.connectors:
            times.append(row.data_as_of)
    return Totals(
        edges=len(rows),
        online=sum(row.edge.state == "online" for row in rows),
        offline=sum(row.edge.state == "offline" for row in rows),
        chargers=sum(row.edge.chargers for row in rows),
        live=dict(sorted(live.items())),
        live_as_of=min(live_times) if live_times else None,
        stale=dict(sorted(stale.items())),
        stale_as_of=min(stale_times) if stale_times else None,
        needing_attention=sum(bool(row.concerns) for row in rows),
    )
