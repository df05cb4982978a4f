"""What the fleet web view and the API read of firmware campaigns, always within one fleet
(every fleet's for the API's token): campaigns with their targets counted per stage, one
campaign's targets with the time of each change and each site's presence, and what a
new campaign may choose (the fleet's images, sites and charger models). Campaigns are
written by cloud/store/campaigns.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, func, or_, select

from cloud.campaigns import ACTIVE_STATES, CampaignState, Stage, counted_stages
from cloud.store.campaigns import EDGE_ROW, image_visible
from cloud.store.database import reading
from cloud.store.schema import (
    campaign_targets,
    chargers,
    commands,
    edges,
    firmware_campaigns,
    firmware_images,
)
from contract.firmware import target_text
from contract.protocol import FirmwareManifest, FirmwareTarget

CAMPAIGNS_SHOWN = 100
TARGETS_SHOWN = 1000


@dataclass(frozen=True)
class CampaignSummary:
    campaign_id: int
    fleet_id: int
    image: str
    version: str
    patterns: list[str]  # the chargers' vendor/model patterns, VENDOR/MODEL
    state: CampaignState
    created_by: str
    created_at: datetime
    state_at: datetime
    state_by: str | None
    edges: int
    # Per stage, each target counted once: a charger, or an edge none of whose
    # chargers is a target yet.
    counts: dict[Stage, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass(frozen=True)
class TargetView:
    edge_id: str
    site_name: str | None
    charger_id: str | None  # None: the edge itself (its download)
    vendor: str | None
    model: str | None
    stage: Stage
    detail: str
    stage_at: datetime
    offered_at: datetime | None
    fetched_at: datetime | None
    verified_at: datetime | None
    installing_at: datetime | None
    finished_at: datetime | None
    command_id: str | None
    command_status: str | None  # of the install command asked for now
    command_expires_at: datetime | None
    state: str  # the edge's presence: unknown, online, offline
    state_at: datetime | None  # since when

    @property
    def name(self) -> str:
        return self.site_name or self.edge_id

    def times(self) -> list[tuple[str, datetime]]:
        """(stage, when) of each change so far, in the pipeline's order."""
        final = self.stage if self.finished_at is not None else "finished"
        named = [
            ("offered", self.offered_at),
            ("fetched", self.fetched_at),
            ("verified", self.verified_at),
            ("installing", self.installing_at),
            (final, self.finished_at),
        ]
        return [(name, at) for name, at in named if at is not None]


@dataclass(frozen=True)
class CampaignView:
    campaign: CampaignSummary
    targets: list[TargetView]
    stage: Stage | None  # the stage the targets were filtered by
    more: int  # targets matching beyond those listed


@dataclass(frozen=True)
class ImageChoice:
    name: str
    version: str
    size: int
    targets: list[str]
    created_at: datetime


@dataclass(frozen=True)
class SiteChoice:
    edge_id: str
    site_name: str | None
    state: str
    state_at: datetime | None

    @property
    def name(self) -> str:
        return self.site_name or self.edge_id


# -- reading ---------------------------------------------------------------------------


def list_campaigns(
    engine: Engine, fleet_id: int | None, limit: int = CAMPAIGNS_SHOWN
) -> list[CampaignSummary]:
    """The fleet's campaigns (every fleet's for None), newest first."""
    query = _summary_query().order_by(firmware_campaigns.c.id.desc()).limit(limit)
    if fleet_id is not None:
        query = query.where(firmware_campaigns.c.fleet_id == fleet_id)
    with reading(engine) as connection:
        rows = connection.execute(query).all()
        return _summaries(connection, rows)


def campaign(engine: Engine, fleet_id: int | None, campaign_id: int) -> CampaignSummary | None:
    with reading(engine) as connection:
        return _summary(connection, fleet_id, campaign_id)


def campaign_view(
    engine: Engine,
    fleet_id: int | None,
    campaign_id: int,
    stage: Stage | None = None,
    limit: int = TARGETS_SHOWN,
) -> CampaignView | None:
    """A campaign with its targets (those at `stage`, or all), site by site, each edge's
    own row before its chargers', at most `limit`; None when the fleet has no such
    campaign. Only targets at edges still in the campaign's fleet are read."""
    with reading(engine) as connection:
        summary = _summary(connection, fleet_id, campaign_id)
        if summary is None:
            return None
        scope = [
            campaign_targets.c.campaign_id == campaign_id,
            edges.c.fleet_id == summary.fleet_id,
        ]
        if stage is not None:
            scope.append(campaign_targets.c.stage == stage)
        joined = campaign_targets.join(edges, edges.c.id == campaign_targets.c.edge_id)
        total = connection.execute(
            select(func.count()).select_from(joined).where(*scope)
        ).scalar_one()
        rows = connection.execute(
            select(
                campaign_targets,
                edges.c.site_name,
                edges.c.state.label("edge_state"),
                func.coalesce(edges.c.state_since, edges.c.status_at).label("edge_state_at"),
                chargers.c.vendor,
                chargers.c.model,
                commands.c.status.label("command_status"),
                commands.c.expires_at.label("command_expires_at"),
            )
            .select_from(
                joined.outerjoin(
                    chargers,
                    and_(
                        chargers.c.edge_id == campaign_targets.c.edge_id,
                        chargers.c.charger_id == campaign_targets.c.charger_id,
                    ),
                ).outerjoin(commands, commands.c.id == campaign_targets.c.command_id)
            )
            .where(*scope)
            .order_by(campaign_targets.c.edge_id, campaign_targets.c.charger_id)
            .limit(limit)
        ).all()
    targets = [
        TargetView(
            edge_id=row.edge_id,
            site_name=row.site_name,
            charger_id=None if row.charger_id == EDGE_ROW else row.charger_id,
            vendor=row.vendor,
            model=row.model,
            stage=row.stage,
            detail=row.detail,
            stage_at=row.stage_at,
            offered_at=row.offered_at,
            fetched_at=row.fetched_at,
            verified_at=row.verified_at,
            installing_at=row.installing_at,
            finished_at=row.finished_at,
            command_id=row.command_id,
            command_status=row.command_status,
            command_expires_at=row.command_expires_at,
            state=row.edge_state,
            state_at=row.edge_state_at,
        )
        for row in rows
    ]
    return CampaignView(summary, targets, stage, max(0, int(total) - len(targets)))


def _summary_query() -> Any:
    return select(firmware_campaigns, firmware_images.c.version).join(
        firmware_images, firmware_images.c.name == firmware_campaigns.c.image
    )


def _summary(
    connection: Connection, fleet_id: int | None, campaign_id: int
) -> CampaignSummary | None:
    query = _summary_query().where(firmware_campaigns.c.id == campaign_id)
    if fleet_id is not None:
        query = query.where(firmware_campaigns.c.fleet_id == fleet_id)
    rows = connection.execute(query).all()
    found = _summaries(connection, rows)
    return found[0] if found else None


def _summaries(connection: Connection, rows: Sequence[Any]) -> list[CampaignSummary]:
    """Campaign rows with their edges and targets counted (at edges still in the
    campaign's fleet)."""
    ids = [row.id for row in rows]
    counts: dict[int, dict[str, int]] = {campaign_id: {} for campaign_id in ids}
    edges_of: dict[int, int] = dict.fromkeys(ids, 0)
    if ids:
        target = campaign_targets
        in_fleet = campaign_targets.join(
            firmware_campaigns, firmware_campaigns.c.id == target.c.campaign_id
        ).join(
            edges,
            and_(edges.c.id == target.c.edge_id, edges.c.fleet_id == firmware_campaigns.c.fleet_id),
        )
        other = campaign_targets.alias("other")
        has_chargers = exists().where(
            other.c.campaign_id == target.c.campaign_id,
            other.c.edge_id == target.c.edge_id,
            other.c.charger_id != EDGE_ROW,
        )
        leaves = or_(target.c.charger_id != EDGE_ROW, ~has_chargers)
        for campaign_id, stage, count in connection.execute(
            select(target.c.campaign_id, target.c.stage, func.count())
            .select_from(in_fleet)
            .where(target.c.campaign_id.in_(ids), leaves)
            .group_by(target.c.campaign_id, target.c.stage)
        ):
            counts[campaign_id][stage] = int(count)
        for campaign_id, count in connection.execute(
            select(target.c.campaign_id, func.count())
            .select_from(in_fleet)
            .where(target.c.campaign_id.in_(ids), target.c.charger_id == EDGE_ROW)
            .group_by(target.c.campaign_id)
        ):
            edges_of[campaign_id] = int(count)
    return [
        CampaignSummary(
            campaign_id=row.id,
            fleet_id=row.fleet_id,
            image=row.image,
            version=row.version,
            patterns=[target_text(FirmwareTarget.model_validate(t)) for t in row.targets],
            state=row.state,
            created_by=row.created_by,
            created_at=row.created_at,
            state_at=row.state_at,
            state_by=row.state_by,
            edges=edges_of[row.id],
            counts=counted_stages(counts[row.id]),
        )
        for row in rows
    ]


# -- what a new campaign may choose ------------------------------------------------------


def fleet_images(engine: Engine, fleet_id: int) -> list[ImageChoice]:
    """Images the fleet may roll out (signed manifests only), newest first."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(firmware_images)
            .where(firmware_images.c.manifest.is_not(None), image_visible(fleet_id))
            .order_by(firmware_images.c.created_at.desc(), firmware_images.c.name)
        ).all()
    choices = []
    for row in rows:
        manifest = FirmwareManifest.model_validate_json(row.manifest)
        choices.append(
            ImageChoice(
                row.name,
                row.version,
                int(row.size),
                [target_text(target) for target in manifest.targets],
                row.created_at,
            )
        )
    return choices


def fleet_sites(engine: Engine, fleet_id: int) -> list[SiteChoice]:
    with reading(engine) as connection:
        rows = connection.execute(
            select(
                edges.c.id,
                edges.c.site_name,
                edges.c.state,
                func.coalesce(edges.c.state_since, edges.c.status_at).label("state_at"),
            )
            .where(edges.c.fleet_id == fleet_id)
            .order_by(edges.c.id)
        ).all()
    return [SiteChoice(row.id, row.site_name, row.state, row.state_at) for row in rows]


def fleet_models(engine: Engine, fleet_id: int) -> list[tuple[str, str, int]]:
    """(vendor, model, chargers) of the fleet's chargers that gave both."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(chargers.c.vendor, chargers.c.model, func.count())
            .join(edges, edges.c.id == chargers.c.edge_id)
            .where(
                edges.c.fleet_id == fleet_id,
                chargers.c.vendor.is_not(None),
                chargers.c.model.is_not(None),
            )
            .group_by(chargers.c.vendor, chargers.c.model)
        ).all()
    # Sorted here: the database's collation would order case differently on each server.
    found = [(str(row[0]), str(row[1]), int(row[2])) for row in rows]
    return sorted(found, key=lambda item: (item[0].casefold(), item[1].casefold(), item))


def fleets_of(engine: Engine, edge_ids: Sequence[str]) -> dict[str, int]:
    """The fleet of each of these edges the cloud knows."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(edges.c.id, edges.c.fleet_id).where(edges.c.id.in_(list(edge_ids)))
        ).all()
    return {row.id: int(row.fleet_id) for row in rows if row.fleet_id is not None}
