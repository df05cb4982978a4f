"""The REST API's firmware campaigns (bearer token, like every route of cloud/api.py; the
token is every fleet's):

- `GET /api/campaigns?fleet=`: campaigns newest first, their targets counted per stage.
- `POST /api/campaigns`: a campaign of an image for sites (all of one fleet) and the
  chargers among vendor/model patterns (none: the image's own targets), offered at once.
- `GET /api/campaigns/{campaign_id}?stage=`: one campaign with its targets: stage, reason,
  the time of each change, the install command, each site's presence.
- `POST /api/campaigns/{campaign_id}/pause`, `/resume`, `/cancel`.

Every change is in the audit log of the campaign's fleet, with the actor `token` (or
`loopback`). Errors: 404 no such campaign, 409 an action its state does not allow (a
sentence saying why), 422 a wrong image, site or pattern.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from cloud.campaigns import CampaignAction, Stage
from cloud.store import audit as audit_log
from cloud.store import campaign_views as views
from cloud.store import campaigns as store
from cloud.store.campaigns import MAX_CAMPAIGN_EDGES, MAX_PATTERNS, CampaignError, UnknownCampaign
from contract.firmware import parse_target
from contract.protocol import EDGE_ID_PATTERN, IMAGE_NAME_PATTERN, INT32_MAX

# Targets one answer lists at most: a campaign of 2,000 sites of 25 chargers each.
MAX_TARGETS_LISTED = 52_000
CampaignId = Annotated[int, Path(ge=1, le=INT32_MAX)]


class CampaignOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(pattern=IMAGE_NAME_PATTERN, description="An image the cloud holds.")
    edges: list[Annotated[str, Field(pattern=EDGE_ID_PATTERN)]] = Field(
        min_length=1, max_length=MAX_CAMPAIGN_EDGES, description="Sites, all of one fleet."
    )
    targets: list[Annotated[str, Field(max_length=200)]] = Field(
        [],
        max_length=MAX_PATTERNS,
        description="VENDOR/MODEL shell patterns; none: the image's own targets.",
    )


def add_campaign_routes(
    routes: APIRouter,
    engine: Engine,
    tell: Callable[[str], None],
    actor_of: Callable[[Request], str],
) -> None:
    """The routes; `tell(edge_id)`: the edge has something new to be sent."""

    async def audit(request: Request, fleet_id: int, action: str, detail: dict[str, Any]) -> None:
        await asyncio.to_thread(
            functools.partial(
                audit_log.record,
                engine,
                at=datetime.now(UTC),
                actor=actor_of(request),
                fleet_id=fleet_id,
                action=action,
                target=f"campaign {detail['campaign_id']}",
                detail=detail,
            )
        )

    async def view(
        campaign_id: int, stage: Stage | None = None, limit: int = views.TARGETS_SHOWN
    ) -> dict[str, Any]:
        found = await asyncio.to_thread(
            views.campaign_view, engine, None, campaign_id, stage, limit
        )
        if found is None:
            raise HTTPException(404, str(UnknownCampaign(campaign_id)))
        return _campaign(found.campaign) | {
            "targets": [_target(target) for target in found.targets],
            "more_targets": found.more,
        }

    @routes.get("/api/campaigns", summary="Firmware campaigns, newest first, counted per stage")
    async def list_campaigns(
        fleet: int | None = Query(None, ge=1, le=INT32_MAX, description="A fleet's id."),
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(views.list_campaigns, engine, fleet, limit)
        return [_campaign(summary) for summary in found]

    @routes.post("/api/campaigns", summary="A firmware campaign: offered to its sites at once")
    async def create_campaign(order: CampaignOrder, request: Request) -> dict[str, Any]:
        try:
            patterns = [parse_target(text) for text in order.targets]
        except ValueError as error:
            raise HTTPException(422, str(error)) from error
        fleets = await asyncio.to_thread(views.fleets_of, engine, order.edges)
        unknown = sorted(set(order.edges) - set(fleets))
        if unknown:
            raise HTTPException(422, f"no edge {', '.join(unknown[:5])} has been in touch")
        if len(set(fleets.values())) > 1:
            raise HTTPException(422, "the sites are in several fleets: one campaign per fleet")
        fleet_id = next(iter(fleets.values()))
        actor = actor_of(request)
        campaign_id = await asyncio.to_thread(
            functools.partial(
                store.create_campaign,
                engine,
                fleet_id,
                order.image,
                order.edges,
                patterns,
                actor,
                any_image=True,
            )
        )
        for edge_id in sorted(set(order.edges)):
            tell(edge_id)
        created = await view(campaign_id)
        await audit(
            request,
            fleet_id,
            "campaign.create",
            {
                "campaign_id": campaign_id,
                "image": order.image,
                "edges": sorted(set(order.edges)),
                "patterns": created["patterns"],
            },
        )
        return created

    @routes.get("/api/campaigns/{campaign_id}", summary="A campaign with each target's stage")
    async def get_campaign(
        campaign_id: CampaignId,
        stage: Stage | None = None,
        limit: int = Query(views.TARGETS_SHOWN, ge=1, le=MAX_TARGETS_LISTED),
    ) -> dict[str, Any]:
        return await view(campaign_id, stage, limit)

    @routes.post(
        "/api/campaigns/{campaign_id}/{action}", summary="Pause, resume or cancel a campaign"
    )
    async def change_campaign(
        campaign_id: CampaignId, action: CampaignAction, request: Request
    ) -> dict[str, Any]:
        try:
            told = await asyncio.to_thread(
                store.change_state, engine, campaign_id, action, actor_of(request), None
            )
        except UnknownCampaign as error:
            raise HTTPException(404, str(error)) from error
        except CampaignError as error:
            raise HTTPException(409, str(error)) from error
        for edge_id in told:
            tell(edge_id)
        changed = await view(campaign_id)
        await audit(
            request,
            changed["fleet_id"],
            f"campaign.{action}",
            {"campaign_id": campaign_id, "state": changed["state"]},
        )
        return changed


def _campaign(summary: views.CampaignSummary) -> dict[str, Any]:
    return dataclasses.asdict(summary)


def _target(target: views.TargetView) -> dict[str, Any]:
    fields = dataclasses.asdict(target)
    fields["edge_state"] = fields.pop("state")
    fields["edge_state_since"] = fields.pop("state_at")
    return fields
