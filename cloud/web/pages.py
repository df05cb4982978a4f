"""The fleet overview and the site pages with their live fragments, and the fleet's users.

Each page is rendered from the store within the user's fleet, in a worker thread; the
same fragment templates make the page and what /web/live pushes into it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from cloud.store import overview
from cloud.store.presence import presence_history
from cloud.store.users import User, list_users
from cloud.web.attention import EdgeRow, concerns, data_as_of, fleet_rows, totals
from cloud.web.auth import Admin, Viewer, WebRefusal
from cloud.web.live import LiveView
from contract.protocol import is_edge_id

if TYPE_CHECKING:
    from cloud.web.app import WebContext


def overview_values(context: WebContext, user: User) -> dict[str, Any]:
    now = datetime.now(UTC)
    rows = fleet_rows(overview.fleet_edges(context.engine, user.fleet_id), now)
    return {"rows": rows, "totals": totals(rows), "now": now, "fleet": user.fleet_name}


def overview_fragments(context: WebContext, user: User) -> dict[str, str]:
    """The overview's live parts (by their `sse-swap` names)."""
    return _fragments(context, overview_values(context, user), OVERVIEW_FRAGMENTS)


def site_values(context: WebContext, user: User, edge_id: str) -> dict[str, Any]:
    found = overview.site(context.engine, user.fleet_id, edge_id) if is_edge_id(edge_id) else None
    if found is None:
        # Another fleet's edge is answered as one that does not exist.
        raise WebRefusal(404, "There is no such site in your fleet.")
    now = datetime.now(UTC)
    edge = found.edge
    row = EdgeRow(edge, concerns(edge, now), data_as_of(edge, now))
    return {"row": row, "edge": edge, "chargers": found.chargers, "now": now}


def site_fragments(context: WebContext, user: User, edge_id: str) -> dict[str, str]:
    return _fragments(context, site_values(context, user, edge_id), SITE_FRAGMENTS)


# The changes of presence a site page lists, newest first.
PRESENCE_SHOWN = 20

# Each live page's parts: `sse-swap` name -> template. A page renders them first and
# places them as text: a large table is not streamed through the page's own template.
OVERVIEW_FRAGMENTS = {"totals": "_overview_totals.html", "edges": "_overview_edges.html"}
SITE_FRAGMENTS = {"site": "_site_summary.html", "chargers": "_site_chargers.html"}


def _fragments(
    context: WebContext, values: dict[str, Any], templates: dict[str, str]
) -> dict[str, str]:
    return {name: context.render_text(template, values) for name, template in templates.items()}


def _page_values(
    context: WebContext, values: dict[str, Any], templates: dict[str, str]
) -> dict[str, Any]:
    rendered = _fragments(context, values, templates)
    return values | {"fragments": {name: Markup(html) for name, html in rendered.items()}}


def add_routes(router: APIRouter, context: WebContext) -> None:
    async def live_overview(user: User, arguments: dict[str, str]) -> dict[str, str]:
        return await asyncio.to_thread(overview_fragments, context, user)

    async def live_site(user: User, arguments: dict[str, str]) -> dict[str, str]:
        return await asyncio.to_thread(site_fragments, context, user, arguments.get("edge", ""))

    context.live_views["overview"] = LiveView(live_overview, lambda arguments: None)
    context.live_views["site"] = LiveView(live_site, lambda arguments: arguments.get("edge", ""))

    def overview_page(user: User) -> dict[str, Any]:
        return _page_values(context, overview_values(context, user), OVERVIEW_FRAGMENTS)

    def site_page_values(user: User, edge_id: str) -> dict[str, Any]:
        values = _page_values(context, site_values(context, user, edge_id), SITE_FRAGMENTS)
        changes = presence_history(context.engine, edge_id, PRESENCE_SHOWN)
        return values | {"presence": [change for _, change in changes]}

    @router.get("/web/")
    async def fleet_overview(request: Request, user: Viewer) -> HTMLResponse:
        values = await asyncio.to_thread(overview_page, user)
        return context.page(request, "overview.html", values)

    @router.get("/web/sites/{edge_id}")
    async def site_page(request: Request, edge_id: str, user: Viewer) -> HTMLResponse:
        values = await asyncio.to_thread(site_page_values, user, edge_id)
        return context.page(request, "site.html", values)

    @router.get("/web/users")
    async def fleet_users(request: Request, user: Admin) -> HTMLResponse:
        people = await asyncio.to_thread(list_users, context.engine, user.fleet_id)
        return context.page(request, "users.html", {"people": people, "now": datetime.now(UTC)})
