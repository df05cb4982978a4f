"""A fleet's own alert thresholds and webhook, as its admins set them in the web view;
what they leave unset (NULL) is the configuration's (`[alerts]`). The alerts engine
reads every fleet's at each look (cloud/alerts.py: `rules_for`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from cloud.store.database import reading
from cloud.store.schema import edges, fleet_alert_settings
from cloud.store.statements import upsert
from cloud.store.times import utc_now

# The thresholds a fleet may set (seconds, and a count), as the settings name them.
THRESHOLDS = ("edge_offline_after", "backlog_older_than", "faulted_after", "refusals_count")


@dataclass(frozen=True)
class FleetAlertSettings:
    """A fleet's own settings; None: the configuration's."""

    fleet_id: int
    edge_offline_after: float | None = None
    backlog_older_than: float | None = None
    faulted_after: float | None = None
    refusals_count: int | None = None
    webhook_url: str | None = None  # None: the configuration's webhook; "": none at all
    webhook_secret: str | None = None  # signs the fleet's own webhook's POSTs
    updated_at: datetime | None = None
    updated_by: str | None = None

    def overrides(self) -> dict[str, Any]:
        """The thresholds the fleet set, by setting name."""
        return {name: getattr(self, name) for name in THRESHOLDS if getattr(self, name) is not None}


def fleet_settings(engine: Engine, fleet_id: int) -> FleetAlertSettings:
    """The fleet's own settings (all None when it set none)."""
    with reading(engine) as connection:
        row = connection.execute(
            select(fleet_alert_settings).where(fleet_alert_settings.c.fleet_id == fleet_id)
        ).first()
    return FleetAlertSettings(fleet_id) if row is None else _settings(row)


def every_fleets_settings(engine: Engine) -> dict[int, FleetAlertSettings]:
    """The settings of every fleet that set some, by fleet."""
    with reading(engine) as connection:
        rows = connection.execute(select(fleet_alert_settings)).all()
    return {int(row.fleet_id): _settings(row) for row in rows}


def save_fleet_settings(engine: Engine, settings: FleetAlertSettings, actor: str) -> None:
    """Store the fleet's settings whole (checked by the caller: cloud/web)."""
    values = {
        field.name: getattr(settings, field.name)
        for field in fields(settings)
        if field.name not in ("updated_at", "updated_by")
    }
    values |= {"updated_at": utc_now(), "updated_by": actor[:254]}
    with engine.begin() as connection:
        upsert(connection, fleet_alert_settings, values, key=["fleet_id"])


def fleets_of(engine: Engine, edge_ids: Iterable[str]) -> dict[str, int | None]:
    """Each edge's fleet (edges the cloud has no row for are left out)."""
    wanted = sorted(set(edge_ids))
    if not wanted:
        return {}
    with reading(engine) as connection:
        rows = connection.execute(
            select(edges.c.id, edges.c.fleet_id).where(edges.c.id.in_(wanted))
        ).all()
    return {row.id: row.fleet_id for row in rows}


def _settings(row: Any) -> FleetAlertSettings:
    return FleetAlertSettings(
        fleet_id=int(row.fleet_id),
        edge_offline_after=row.edge_offline_after,
        backlog_older_than=row.backlog_older_than,
        faulted_after=row.faulted_after,
        refusals_count=row.refusals_count,
        webhook_url=row.webhook_url,
        webhook_secret=row.webhook_secret,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )
