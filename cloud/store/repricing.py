"""What is still to be re-priced: the work list a tariff change leaves (and an edge that
moves to another fleet, whose sessions then fall under that fleet's tariffs).

A change of tariffs writes the tariff and a row here in one short transaction, and
returns: the sessions are priced again in the background (cloud/store/tariffs.py,
`reprice_batch`; cloud/repricing.py runs it), a bounded batch per transaction, in order
of (session_at, edge_id, transaction_id) from the row's `since`. Each batch moves the
row's `after_*` to the last session it priced, in the batch's own transaction: after a
restart the work goes on from there. The row goes when the work is done.

Until then the sessions not yet reached show their cost as being recalculated: a session
is waiting when a job's scope holds it, it started at or after the job's `since` and it
comes after the job's last session done (`RepricingJob.waiting`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select

from cloud.store.database import reading
from cloud.store.schema import edges, repricing, transactions
from cloud.store.times import utc_now

# Jobs read for a page (the list stays short: a new job takes in the narrower ones).
MAX_JOBS_READ = 1000
# `since` of a job for every session, whenever it started (an edge's clock may be off).
EVERY_SESSION = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RepricingJob:
    id: int
    fleet_id: int | None  # with edge_id None: every site of the fleet; both None: all
    edge_id: str | None
    since: datetime
    # The last session priced again: (session_at, edge_id, transaction_id); None: none yet.
    after: tuple[datetime, str, int] | None
    repriced: int
    reason: str
    created_at: datetime
    updated_at: datetime

    def holds(self, edge_id: str, fleet_id: int | None) -> bool:
        """Whether sessions of `edge_id` (in `fleet_id`) are in this job's scope."""
        if self.edge_id is not None:
            return edge_id == self.edge_id
        if self.fleet_id is not None:
            return fleet_id == self.fleet_id
        return True

    def waiting(
        self,
        edge_id: str,
        fleet_id: int | None,
        session_at: datetime,
        transaction_id: int,
        stopped: bool,
    ) -> bool:
        """Whether this session's cost is still to be computed again by this job."""
        if not stopped or session_at < self.since or not self.holds(edge_id, fleet_id):
            return False
        return self.after is None or (session_at, edge_id, transaction_id) > self.after

    @property
    def waiting_from(self) -> datetime:
        """Sessions of the scope that started at or after this may still be waiting."""
        if self.after is None:
            return self.since
        return max(self.since, self.after[0])

    def touches_fleet(self, fleet_id: int, fleet_edges: frozenset[str]) -> bool:
        """Whether this job re-prices sessions of the fleet (`fleet_edges`: its edges)."""
        if self.edge_id is not None:
            return self.edge_id in fleet_edges
        return self.fleet_id is None or self.fleet_id == fleet_id


def queue_repricing(
    connection: Connection,
    *,
    since: datetime,
    reason: str,
    fleet_id: int | None = None,
    edge_id: str | None = None,
) -> int | None:
    """Add the work of pricing again every stopped session of the scope from `since` on
    (in the transaction that changes what prices them); the job's id, None when there is
    no such session (nothing to do). Jobs of the same or a narrower scope from `since` or
    later are taken in (deleted): this one does theirs."""
    now = utc_now()
    t = transactions.c
    any_session = select(t.edge_id).where(t.session_at >= since, t.stopped_at.is_not(None))
    if edge_id is not None:
        any_session = any_session.where(t.edge_id == edge_id)
    elif fleet_id is not None:
        any_session = any_session.where(t.fleet_id == fleet_id)
    if connection.execute(any_session.limit(1)).first() is None:
        return None
    covered = repricing.c.since >= since
    if edge_id is not None:
        narrower = repricing.c.edge_id == edge_id
    elif fleet_id is not None:
        fleet_edges = select(edges.c.id).where(edges.c.fleet_id == fleet_id)
        narrower = or_(
            and_(repricing.c.fleet_id == fleet_id, repricing.c.edge_id.is_(None)),
            repricing.c.edge_id.in_(fleet_edges),
        )
    else:
        narrower = repricing.c.id.is_not(None)
    connection.execute(delete(repricing).where(covered, narrower))
    job_id = connection.execute(
        insert(repricing)
        .values(
            fleet_id=fleet_id if edge_id is None else None,
            edge_id=edge_id,
            since=since,
            reason=reason[:500],
            created_at=now,
            updated_at=now,
        )
        .returning(repricing.c.id)
    ).scalar_one()
    return int(job_id)


def jobs_in(connection: Connection) -> list[RepricingJob]:
    """The work still to do, oldest first."""
    rows = connection.execute(select(repricing).order_by(repricing.c.id).limit(MAX_JOBS_READ))
    return [job_of(row) for row in rows]


def list_jobs(engine: Engine) -> list[RepricingJob]:
    with reading(engine) as connection:
        return jobs_in(connection)


def job_of(row: Any) -> RepricingJob:
    values = row._mapping
    after = None
    if values["after_session_at"] is not None:
        after = (
            values["after_session_at"],
            values["after_edge_id"],
            int(values["after_transaction_id"]),
        )
    return RepricingJob(
        id=int(values["id"]),
        fleet_id=values["fleet_id"],
        edge_id=values["edge_id"],
        since=values["since"],
        after=after,
        repriced=int(values["repriced"]),
        reason=values["reason"],
        created_at=values["created_at"],
        updated_at=values["updated_at"],
    )
