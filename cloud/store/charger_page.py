"""What the fleet web view's charger page reads, always within one fleet: the charger
with its connectors and its edge's presence, its sessions, the commands sent to it with
their outcomes, its firmware and diagnostics jobs. A charger of another fleet's edge is
never returned, whatever its id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from cloud.store.database import reading
from cloud.store.fleet import ChargerView, TransactionView
from cloud.store.overview import EdgeSummary, site
from cloud.store.schema import charger_jobs, commands, firmware_installs, transactions

# What the page lists of each: the latest, newest first.
SESSIONS_SHOWN = 20
COMMANDS_SHOWN = 20


@dataclass(frozen=True)
class CommandView:
    command_id: str
    action: str
    arguments: dict[str, Any]
    actor: str | None
    status: str  # pending, sent, done, rejected, failed, expired
    detail: str
    created_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime

    @property
    def open(self) -> bool:
        return self.status in ("pending", "sent")


@dataclass(frozen=True)
class JobView:
    job: str  # firmware, diagnostics, log
    status: str
    request_id: int | None
    at: datetime


@dataclass(frozen=True)
class ChargerPage:
    edge: EdgeSummary
    charger: ChargerView
    sessions: list[TransactionView]
    commands: list[CommandView]
    jobs: list[JobView]
    firmware: dict[str, Any] | None  # the latest install started or refused here


def charger_page(
    engine: Engine, fleet_id: int, edge_id: str, charger_id: str
) -> ChargerPage | None:
    """The charger of the fleet's edge; None when the fleet has no such edge or charger."""
    found = site(engine, fleet_id, edge_id)
    if found is None:
        return None
    charger = next((item for item in found.chargers if item.charger_id == charger_id), None)
    if charger is None:
        return None
    with reading(engine) as connection:
        newest = func.coalesce(transactions.c.started_at, transactions.c.updated_at)
        session_rows = connection.execute(
            select(transactions)
            .where(transactions.c.edge_id == edge_id, transactions.c.charger_id == charger_id)
            .order_by(newest.desc(), transactions.c.transaction_id.desc())
            .limit(SESSIONS_SHOWN)
        ).all()
        command_rows = connection.execute(
            select(commands)
            .where(commands.c.edge_id == edge_id, commands.c.charger_id == charger_id)
            .order_by(commands.c.created_at.desc(), commands.c.id)
            .limit(COMMANDS_SHOWN)
        ).all()
        job_rows = connection.execute(
            select(charger_jobs)
            .where(charger_jobs.c.edge_id == edge_id, charger_jobs.c.charger_id == charger_id)
            .order_by(charger_jobs.c.job)
        ).all()
        install = (
            connection.execute(
                select(firmware_installs).where(
                    firmware_installs.c.edge_id == edge_id,
                    firmware_installs.c.charger_id == charger_id,
                )
            )
            .mappings()
            .one_or_none()
        )
    return ChargerPage(
        edge=found.edge,
        charger=charger,
        sessions=[
            TransactionView(
                **{name: getattr(row, name) for name in TransactionView.__dataclass_fields__}
            )
            for row in session_rows
        ],
        commands=[
            CommandView(
                command_id=row.id,
                action=row.action,
                arguments=dict(row.arguments or {}),
                actor=row.actor,
                status=row.status,
                detail=row.detail,
                created_at=row.created_at,
                sent_at=row.sent_at,
                finished_at=row.finished_at,
                expires_at=row.expires_at,
            )
            for row in command_rows
        ],
        jobs=[JobView(row.job, row.status, row.request_id, row.at) for row in job_rows],
        firmware=dict(install) if install is not None else None,
    )
