"""The alerts page (open alerts first, then the recently cleared, with what the webhook
was told of each), its live fragments, and the count of open alerts in the navigation.
Every query is held to the user's fleet: another fleet's alerts are never read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from cloud.store import alerts as alerts_store
from cloud.store.users import User
from cloud.web.auth import Viewer
from cloud.web.live import LiveView

if TYPE_CHECKING:
    from cloud.web.app import WebContext

# How many alerts each list shows: the API pages through the rest.
OPEN_SHOWN = 200
CLEARED_SHOWN = 50
ALERT_FRAGMENTS = {"open": "_alerts_open.html", "cleared": "_alerts_cleared.html"}


def alert_values(context: WebContext, user: User) -> dict[str, Any]:
    engine = context.engine
    open_alerts = alerts_store.list_alerts(
        engine, open_only=True, fleet_id=user.fleet_id, limit=OPEN_SHOWN
    )
    cleared = alerts_store.list_alerts(
        engine, cleared_only=True, fleet_id=user.fleet_id, limit=CLEARED_SHOWN
    )
    return {"open_alerts": open_alerts, "cleared": cleared, "now": datetime.now(UTC)}


def alert_fragments(context: WebContext, user: User) -> dict[str, str]:
    values = alert_values(context, user)
    return {
        name: context.render_text(template, values) for name, template in ALERT_FRAGMENTS.items()
    }


def add_routes(router: APIRouter, context: WebContext) -> None:
    async def live_alerts(user: User, arguments: dict[str, str]) -> dict[str, str]:
        return await asyncio.to_thread(alert_fragments, context, user)

    context.live_views["alerts"] = LiveView(live_alerts, lambda arguments: None)

    @router.get("/web/alerts")
    async def alerts_page(request: Request, user: Viewer) -> HTMLResponse:
        fragments = await asyncio.to_thread(alert_fragments, context, user)
        values = {"fragments": {name: Markup(html) for name, html in fragments.items()}}
        return context.page(request, "alerts.html", values)

    @router.get("/web/alerts/badge")
    async def alerts_badge(request: Request, user: Viewer) -> HTMLResponse:
        count = await asyncio.to_thread(alerts_store.count_open, context.engine, user.fleet_id)
        response = HTMLResponse(context.render_text("_alerts_badge.html", {"count": count}))
        context.finish(request, response)
        return response
