"""What the alerts engine (cloud/alerts.py) reads and writes: the facts it judges (edges'
presence and backlog, Faulted connectors, refusals counted over time, the alerts open),
alerts raised and cleared, and the webhook's notices.

Several replicas run the engine on one store. An alert is raised by an INSERT that does
nothing when the same alert (kind, edge, subject) is open already (a partial unique
index), and cleared by an UPDATE of an open one: whichever replica's statement changed a
row is the one that raised or cleared it. A notice is claimed by an UPDATE that moves its
attempt count on: one replica sends it (again only once the claim's lease has passed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Engine, and_, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cloud.store.database import reading
from cloud.store.schema import alerts, chargers, connectors, edges, refusal_counts
from cloud.store.statements import upsert
from cloud.store.times import parse_time

# Refusals are counted in buckets of this many seconds: a spike's window is measured to
# within one bucket, and a source flooding refusals adds one row per bucket.
REFUSAL_BUCKET_SECONDS = 5
FAULTED = "Faulted"
# Alerts raised or cleared in one transaction at most.
CHANGES_PER_COMMIT = 50

AlertKind = Literal["edge_offline", "backlog_old", "connector_faulted", "refusals_spike"]
Notice = Literal["raised", "cleared"]


# -- the facts judged --------------------------------------------------------------


@dataclass(frozen=True)
class EdgeFacts:
    edge_id: str
    state: str  # unknown, online, offline
    state_since: datetime | None  # when the cloud heard it change (its clock)
    backlog: int | None  # events the edge had not had acknowledged, as it last said
    oldest_age_s: float | None  # the oldest of them's age, then
    figures_at: datetime | None
    last_event_at: datetime | None  # the newest event stored (edge clock)
    status_reported_at: datetime | None  # the `at` of its last status (edge clock)
    status_backlog: int | None  # the backlog its last status gave
    fleet_id: int | None = None  # whose thresholds judge it


@dataclass(frozen=True)
class FaultedConnector:
    edge_id: str
    charger_id: str
    connector_id: int
    status_at: datetime  # edge clock
    error_code: str
    info: str | None
    booted_at: datetime | None  # the charger's last boot (edge clock)


@dataclass(frozen=True)
class RefusalSpike:
    count: int  # refused in the window
    first_at: datetime  # the start of the window's first bucket holding one


@dataclass(frozen=True)
class OpenAlert:
    id: int
    kind: str
    edge_id: str
    subject: str


@dataclass(frozen=True)
class Observation:
    """The store as one snapshot, as the engine judges it."""

    edges: list[EdgeFacts]
    faulted: list[FaultedConnector]
    refusals: dict[str, RefusalSpike]  # by source (an edge id)
    open_alerts: list[OpenAlert]


def count_refusal_at(connection: Connection, source: str, at: datetime) -> None:
    """Count one refusal from `source` in the bucket of `at` (ingest's transaction)."""
    upsert(
        connection,
        refusal_counts,
        {"bucket": bucket_of(at), "source": source, "count": 1},
        key=["bucket", "source"],
        update={"count": refusal_counts.c.count + 1},
    )


def bucket_of(at: datetime) -> datetime:
    seconds = int(at.timestamp()) // REFUSAL_BUCKET_SECONDS * REFUSAL_BUCKET_SECONDS
    return datetime.fromtimestamp(seconds, UTC)


def observe(engine: Engine, now: datetime, refusals_window: float) -> Observation:
    """Everything the rules need, read in one snapshot."""
    window_start = bucket_of(now - timedelta(seconds=refusals_window))
    with reading(engine) as connection:
        edge_rows = connection.execute(
            select(
                edges.c.id,
                edges.c.state,
                edges.c.state_since,
                edges.c.backlog,
                edges.c.oldest_age_s,
                edges.c.figures_at,
                edges.c.last_event_at,
                edges.c.status,
                edges.c.fleet_id,
            ).order_by(edges.c.id)
        ).all()
        faulted_rows = connection.execute(
            select(
                connectors.c.edge_id,
                connectors.c.charger_id,
                connectors.c.connector_id,
                connectors.c.status_at,
                connectors.c.error_code,
                connectors.c.info,
                chargers.c.booted_at,
            )
            .join(
                chargers,
                and_(
                    chargers.c.edge_id == connectors.c.edge_id,
                    chargers.c.charger_id == connectors.c.charger_id,
                ),
            )
            .where(connectors.c.status == FAULTED)
            .order_by(connectors.c.status_at)
        ).all()
        refusal_rows = connection.execute(
            select(
                refusal_counts.c.source,
                func.sum(refusal_counts.c.count).label("refused"),
                func.min(refusal_counts.c.bucket).label("first_at"),
            )
            .where(refusal_counts.c.bucket >= window_start)
            .group_by(refusal_counts.c.source)
        ).all()
        open_rows = connection.execute(
            select(alerts.c.id, alerts.c.kind, alerts.c.edge_id, alerts.c.subject)
            .where(alerts.c.cleared_at.is_(None))
            .order_by(alerts.c.id)
        ).all()
    return Observation(
        edges=[_edge_facts(row) for row in edge_rows],
        faulted=[
            FaultedConnector(
                row.edge_id,
                row.charger_id,
                int(row.connector_id),
                row.status_at,
                row.error_code,
                row.info,
                row.booted_at,
            )
            for row in faulted_rows
        ],
        refusals={
            row.source: RefusalSpike(int(row.refused), _aware(row.first_at)) for row in refusal_rows
        },
        open_alerts=[
            OpenAlert(int(row.id), row.kind, row.edge_id, row.subject) for row in open_rows
        ],
    )


def _aware(moment: Any) -> datetime:
    """An aggregate's time: SQLite gives the text back, not through the column's type."""
    if isinstance(moment, datetime):
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return parse_time(str(moment))


def _edge_facts(row: Any) -> EdgeFacts:
    status = row.status if isinstance(row.status, dict) else {}
    reported_at = None
    at = status.get("at")
    if isinstance(at, str):
        try:
            reported_at = parse_time(at)
        except (ValueError, OverflowError):
            reported_at = None  # the edge's text: not a time, then not used
    status_backlog = status.get("backlog")
    return EdgeFacts(
        edge_id=row.id,
        state=row.state,
        state_since=row.state_since,
        backlog=row.backlog,
        oldest_age_s=row.oldest_age_s,
        figures_at=row.figures_at,
        last_event_at=row.last_event_at,
        status_reported_at=reported_at,
        status_backlog=status_backlog if isinstance(status_backlog, int) else None,
        fleet_id=row.fleet_id,
    )


# -- raising and clearing ------------------------------------------------------------


@dataclass(frozen=True)
class NewAlert:
    kind: AlertKind
    edge_id: str
    subject: str  # "" for the edge itself, "CHARGER/CONNECTOR" for a connector
    since: datetime
    detail: str
    charger_id: str | None = None
    connector_id: int | None = None


@dataclass(frozen=True)
class Clearing:
    alert_id: int
    reason: str
    edge_id: str = ""  # the alert's (whose fleet's webhook is told)


def raise_and_clear(
    engine: Engine,
    raising: Sequence[NewAlert],
    clearing: Sequence[Clearing],
    now: datetime,
    *,
    notify: bool | Callable[[str], bool],
) -> tuple[list[tuple[int, NewAlert]], list[Clearing]]:
    """Raise `raising` (each unless open already) and clear `clearing` (each unless
    cleared already); what this call raised (with the new ids) and cleared. With
    `notify` (or for the edges `notify(edge_id)` is true of: their fleet has a webhook),
    each of those has a notice due now. A transaction per CHANGES_PER_COMMIT changes: a
    storm of alerts holds SQLite's write lock (and ingest) only briefly."""
    told: Callable[[str], bool] = notify if callable(notify) else (lambda edge_id: notify)
    raised: list[tuple[int, NewAlert]] = []
    cleared: list[Clearing] = []
    for start in range(0, len(raising), CHANGES_PER_COMMIT):
        with engine.begin() as connection:
            for new in raising[start : start + CHANGES_PER_COMMIT]:
                alert_id = _raise(connection, new, now, told(new.edge_id))
                if alert_id is not None:
                    raised.append((alert_id, new))
    for start in range(0, len(clearing), CHANGES_PER_COMMIT):
        with engine.begin() as connection:
            for clear in clearing[start : start + CHANGES_PER_COMMIT]:
                if _clear(connection, clear, now, told(clear.edge_id)):
                    cleared.append(clear)
    _mark_changed(engine, {new.edge_id for _, new in raised}, [c.alert_id for c in cleared])
    return raised, cleared


def count_open(engine: Engine, fleet_id: int) -> int:
    """How many alerts of the fleet's edges are open (the web view's badge)."""
    query = select(func.count()).where(
        alerts.c.cleared_at.is_(None),
        alerts.c.edge_id.in_(select(edges.c.id).where(edges.c.fleet_id == fleet_id)),
    )
    with reading(engine) as connection:
        return int(connection.execute(query).scalar_one())


def _mark_changed(engine: Engine, edge_ids: set[str], cleared_ids: list[int]) -> None:
    """Raise the change marker of each edge whose alerts changed, so that live pages
    show them (cloud/web/live.py). One short transaction per edge, in order, after the
    alerts' own: it waits for no other writer while holding an alert's row."""
    if cleared_ids:
        with reading(engine) as connection:
            edge_ids |= set(
                connection.execute(
                    select(alerts.c.edge_id).where(alerts.c.id.in_(cleared_ids))
                ).scalars()
            )
    for edge_id in sorted(edge_ids):
        with engine.begin() as connection:
            connection.execute(
                update(edges).where(edges.c.id == edge_id).values(revision=edges.c.revision + 1)
            )


def _raise(connection: Connection, new: NewAlert, now: datetime, notify: bool) -> int | None:
    """The new alert's id; None when it is open already."""
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(alerts)
        .values(
            kind=new.kind,
            edge_id=new.edge_id,
            subject=new.subject,
            charger_id=new.charger_id,
            connector_id=new.connector_id,
            since=new.since,
            raised_at=now,
            detail=new.detail,
            notify_after=now if notify else None,
        )
        .on_conflict_do_nothing(
            index_elements=["kind", "edge_id", "subject"],
            index_where=alerts.c.cleared_at.is_(None),
        )
        .returning(alerts.c.id)
    )
    alert_id = connection.execute(statement).scalar_one_or_none()
    return None if alert_id is None else int(alert_id)


def _clear(connection: Connection, clear: Clearing, now: datetime, notify: bool) -> bool:
    """True when this cleared the alert (it was open)."""
    idle = alerts.c.notify_after.is_(None)
    values: dict[str, Any] = {"cleared_at": now, "clear_reason": clear.reason}
    if notify:
        # A notice under way (or waiting to be tried again) goes on; it reads the row
        # when sent, and the cleared notice follows it.
        values["notify_after"] = case((idle, now), else_=alerts.c.notify_after)
        values["notify_attempts"] = case((idle, 0), else_=alerts.c.notify_attempts)
    done = connection.execute(
        update(alerts)
        .where(alerts.c.id == clear.alert_id, alerts.c.cleared_at.is_(None))
        .values(**values)
    )
    return done.rowcount == 1


# -- what the API and the webhook read ------------------------------------------------


@dataclass(frozen=True)
class AlertView:
    id: int
    kind: str
    edge_id: str
    subject: str
    charger_id: str | None
    connector_id: int | None
    since: datetime
    raised_at: datetime
    cleared_at: datetime | None
    detail: str
    clear_reason: str | None
    notified: str  # none, raised, cleared: what the webhook has been told
    notify_attempts: int
    notify_after: datetime | None
    notify_error: str | None

    @property
    def open(self) -> bool:
        return self.cleared_at is None

    @property
    def state(self) -> Notice:
        return "raised" if self.cleared_at is None else "cleared"


def _alert_view(row: Any) -> AlertView:
    return AlertView(
        id=int(row.id),
        kind=row.kind,
        edge_id=row.edge_id,
        subject=row.subject,
        charger_id=row.charger_id,
        connector_id=None if row.connector_id is None else int(row.connector_id),
        since=row.since,
        raised_at=row.raised_at,
        cleared_at=row.cleared_at,
        detail=row.detail,
        clear_reason=row.clear_reason,
        notified=row.notified,
        notify_attempts=int(row.notify_attempts),
        notify_after=row.notify_after,
        notify_error=row.notify_error,
    )


def list_alerts(
    engine: Engine,
    *,
    open_only: bool = False,
    edge_id: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    before: int | None = None,
    fleet_id: int | None = None,
    cleared_only: bool = False,
) -> list[AlertView]:
    """Alerts, the newest raised first (`before`: an id, for the next page). With
    `fleet_id`, only the alerts of that fleet's edges (an alert about an edge id the
    cloud has no row for belongs to no fleet)."""
    query = select(alerts).order_by(alerts.c.id.desc()).limit(limit)
    if fleet_id is not None:
        query = query.where(
            alerts.c.edge_id.in_(select(edges.c.id).where(edges.c.fleet_id == fleet_id))
        )
    if open_only:
        query = query.where(alerts.c.cleared_at.is_(None))
    if cleared_only:
        query = query.where(alerts.c.cleared_at.is_not(None))
    if edge_id is not None:
        query = query.where(alerts.c.edge_id == edge_id)
    if kind is not None:
        query = query.where(alerts.c.kind == kind)
    if before is not None:
        query = query.where(alerts.c.id < before)
    with reading(engine) as connection:
        return [_alert_view(row) for row in connection.execute(query).all()]


# -- the webhook's notices -------------------------------------------------------------


def due_notices(engine: Engine, now: datetime, limit: int) -> list[AlertView]:
    """Alerts with a notice to send now, the longest waiting first."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(alerts)
            .where(alerts.c.notify_after <= now)
            .order_by(alerts.c.notify_after, alerts.c.id)
            .limit(limit)
        ).all()
    return [_alert_view(row) for row in rows]


def claim_notice(
    engine: Engine, due: AlertView, now: datetime, lease_until: datetime
) -> AlertView | None:
    """Take `due`'s notice for this replica until `lease_until` (one attempt more); the
    alert as it is now, or None when another replica took it first."""
    with engine.begin() as connection:
        taken = connection.execute(
            update(alerts)
            .where(
                alerts.c.id == due.id,
                alerts.c.notify_attempts == due.notify_attempts,
                alerts.c.notify_after <= now,
            )
            .values(notify_after=lease_until, notify_attempts=due.notify_attempts + 1)
        )
        if taken.rowcount != 1:
            return None
        row = connection.execute(select(alerts).where(alerts.c.id == due.id)).one()
    return _alert_view(row)


def notice_sent(engine: Engine, claimed: AlertView, sent: Notice, now: datetime) -> None:
    """The webhook took `claimed`'s notice `sent`. A `raised` sent for an alert cleared
    meanwhile leaves the `cleared` one due."""
    follow = case((alerts.c.cleared_at.is_not(None), now), else_=None) if sent == "raised" else None
    with engine.begin() as connection:
        connection.execute(
            update(alerts)
            .where(alerts.c.id == claimed.id, alerts.c.notify_attempts == claimed.notify_attempts)
            .values(notified=sent, notify_attempts=0, notify_error=None, notify_after=follow)
        )


def notice_failed(
    engine: Engine, claimed: AlertView, error: str, retry_at: datetime | None
) -> None:
    """The webhook did not take `claimed`'s notice: tried again at `retry_at`, or never
    (None: the attempts are spent; `error` says so)."""
    with engine.begin() as connection:
        connection.execute(
            update(alerts)
            .where(alerts.c.id == claimed.id, alerts.c.notify_attempts == claimed.notify_attempts)
            .values(notify_after=retry_at, notify_error=error[:1000])
        )


# -- keeping it bounded ------------------------------------------------------------------


def prune(engine: Engine, cleared_before: datetime, refusals_before: datetime) -> tuple[int, int]:
    """Delete alerts cleared before `cleared_before` and refusal buckets before
    `refusals_before`; how many of each."""
    with engine.begin() as connection:
        old_alerts = connection.execute(
            delete(alerts).where(alerts.c.cleared_at < cleared_before)
        ).rowcount
        old_buckets = connection.execute(
            delete(refusal_counts).where(refusal_counts.c.bucket < bucket_of(refusals_before))
        ).rowcount
    return int(old_alerts), int(old_buckets)
