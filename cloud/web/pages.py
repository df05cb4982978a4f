"""The fleet overview and the site pages with their live fragments, and the fleet's users.

Each page is rendered from the store within the user's fleet, in a worker thread; the
same fragment templates make the page and what /web/live pushes into it. The overview
shows its sites a page at a time (`web.overview_page_size`), those needing attention
first; its totals are always of the whole fleet. The edges' summaries come through the
replica's `SummaryCache`: a page reads only the rows that changed since the last one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from cloud.store import overview
from cloud.store.presence import presence_history
from cloud.store.users import User, list_users, session_counts
from cloud.web.attention import EdgeRow, concerns, data_as_of, fleet_rows, totals
from cloud.web.auth import Admin, Viewer, WebRefusal
from cloud.web.live import LiveView
from contract.protocol import is_edge_id

if TYPE_CHECKING:
    from cloud.web.app import WebContext


@dataclass(frozen=True)
class OverviewPage:
    """Which of the overview's sites a page shows: those from `start` to `stop` of the
    fleet's sites in their order (needing attention first)."""

    number: int  # from 1
    count: int  # pages in all, at least 1
    size: int
    sites: int  # sites in all

    @classmethod
    def of(cls, sites: int, size: int, requested: str | None) -> OverviewPage:
        """The page asked for by the query's text; the first when it is no page number,
        the last when it is past the end (the fleet may have shrunk since)."""
        count = max(1, -(-sites // size))
        text = (requested or "").strip()
        number = int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else 1
        return cls(min(max(number, 1), count), count, size, sites)

    @property
    def start(self) -> int:
        return (self.number - 1) * self.size

    @property
    def stop(self) -> int:
        return min(self.start + self.size, self.sites)


def overview_values(context: WebContext, user: User, page: str | None = None) -> dict[str, Any]:
    now = datetime.now(UTC)
    summaries = overview.fleet_edges(context.engine, user.fleet_id, context.summaries)
    rows = fleet_rows(summaries, now)
    shown = OverviewPage.of(len(rows), context.settings.overview_page_size, page)
    return {
        "rows": rows[shown.start : shown.stop],
        "page": shown,
        "totals": totals(rows),
        "now": now,
        "fleet": user.fleet_name,
    }


def overview_fragments(context: WebContext, user: User, page: str | None = None) -> dict[str, str]:
    """The overview's live parts (by their `sse-swap` names), for one page of its sites."""
    return _fragments(context, overview_values(context, user, page), OVERVIEW_FRAGMENTS)


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
        return await asyncio.to_thread(overview_fragments, context, user, arguments.get("page"))

    async def live_site(user: User, arguments: dict[str, str]) -> dict[str, str]:
        return await asyncio.to_thread(site_fragments, context, user, arguments.get("edge", ""))

    context.live_views["overview"] = LiveView(live_overview, lambda arguments: None)
    context.live_views["site"] = LiveView(live_site, lambda arguments: arguments.get("edge", ""))

    def overview_page(user: User, page: str | None) -> dict[str, Any]:
        return _page_values(context, overview_values(context, user, page), OVERVIEW_FRAGMENTS)

    def site_page_values(user: User, edge_id: str) -> dict[str, Any]:
        values = _page_values(context, site_values(context, user, edge_id), SITE_FRAGMENTS)
        changes = presence_history(context.engine, edge_id, PRESENCE_SHOWN)
        return values | {"presence": [change for _, change in changes]}

    @router.get("/web/")
    async def fleet_overview(
        request: Request, user: Viewer, page: str | None = None
    ) -> HTMLResponse:
        values = await asyncio.to_thread(overview_page, user, page)
        return context.page(request, "overview.html", values)

    @router.get("/web/sites/{edge_id}")
    async def site_page(request: Request, edge_id: str, user: Viewer) -> HTMLResponse:
        values = await asyncio.to_thread(site_page_values, user, edge_id)
        return context.page(request, "site.html", values)

    @router.get("/web/users")
    async def fleet_users(request: Request, user: Admin) -> HTMLResponse:
        now = datetime.now(UTC)
        people = await asyncio.to_thread(list_users, context.engine, user.fleet_id)
        sessions = await asyncio.to_thread(session_counts, context.engine, user.fleet_id, now)
        values = {"people": people, "sessions": sessions, "now": now}
        return context.page(request, "users.html", values)
