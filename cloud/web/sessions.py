"""The Sessions page of the fleet web view: the fleet's charging sessions filtered by site,
charger, card, account and period (a GET form: it works without JavaScript), a page at a
time with a "next page" link (keyset cursor), sums per card, account and month, a month's
final/provisional state for a site, the CSV of exactly the filtered sessions, and each
session's power and energy curve. The first page's table is live: the `sessions` view of
/web/live pushes it again when the site (or any site of the fleet) stores something, so
a session that syncs shows without a reload.

Every query carries the signed-in user's fleet: another fleet's site, session or CSV rows
are never read, whatever the query string says (a site named that is not the user's is
answered 404, as one that does not exist).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from markupsafe import Markup

from cloud.sessions_api import parse_moment, session_csv
from cloud.settings import SessionSettings
from cloud.store import overview
from cloud.store import sessions as store
from cloud.store.sessions import Cursor, InvalidCursor, Month, SessionFilter
from cloud.store.users import User
from cloud.tariffs import format_cost
from cloud.web.auth import Viewer, WebRefusal
from cloud.web.live import LiveView
from contract.protocol import INT64_MAX, INT64_MIN, is_edge_id

if TYPE_CHECKING:
    from cloud.web.app import WebContext

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# Sums shown per card and per account (the largest first); the CSV has every session.
SUMS_SHOWN = 50
MAX_FILTER_TEXT = 255
FILTER_NAMES = ("edge", "charger", "card", "account", "month", "from", "to")
# The live stream's arguments are cut to this length (cloud/web/live.py).
LIVE_ARGUMENT = 200


@dataclass(frozen=True)
class Filters:
    """The form's fields as the user gave them (empty: not set)."""

    edge: str = ""
    charger: str = ""
    card: str = ""
    account: str = ""
    month: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def of(cls, request: Request) -> Filters:
        return cls.of_values(request.query_params)

    @classmethod
    def of_values(cls, arguments: Mapping[str, str]) -> Filters:
        values = {name: arguments.get(name, "").strip() for name in FILTER_NAMES}
        for name, value in values.items():
            if len(value) > MAX_FILTER_TEXT:
                raise WebRefusal(422, f"The filter {name} is longer than {MAX_FILTER_TEXT}.")
        return cls(
            edge=values["edge"],
            charger=values["charger"],
            card=values["card"],
            account=values["account"],
            month=values["month"],
            since=values["from"],
            until=values["to"],
        )

    def query_pairs(self) -> list[tuple[str, str]]:
        pairs = [
            ("edge", self.edge),
            ("charger", self.charger),
            ("card", self.card),
            ("account", self.account),
            ("month", self.month),
            ("from", self.since),
            ("to", self.until),
        ]
        return [(name, value) for name, value in pairs if value]

    def query_string(self, **more: str) -> str:
        return urlencode(self.query_pairs() + [(k, v) for k, v in more.items() if v])

    def store_filter(self, fleet_id: int, settings: SessionSettings) -> SessionFilter:
        zone = settings.zone
        if self.month and (self.since or self.until):
            raise WebRefusal(422, "Give a month, or from and to, not both.")
        since: datetime | None
        until: datetime | None
        try:
            if self.month:
                month = Month.parse(self.month)
                since, until = month.start(zone), month.end(zone)
            else:
                since = parse_moment(self.since, zone, "from") if self.since else None
                until = parse_moment(self.until, zone, "to") if self.until else None
        except ValueError as error:
            raise WebRefusal(422, str(error)) from error
        return SessionFilter(
            fleet_id=fleet_id,
            edge_id=self.edge or None,
            charger_id=self.charger or None,
            id_tag=self.card or None,
            account=self.account or None,
            since=since,
            until=until,
        )


def _fleet_site(context: WebContext, user: User, edge_id: str) -> overview.EdgeSummary:
    found = overview.site(context.engine, user.fleet_id, edge_id) if is_edge_id(edge_id) else None
    if found is None:
        raise WebRefusal(404, "There is no such site in your fleet.")
    return found.edge


def list_values(
    context: WebContext, user: User, filters: Filters, cursor_text: str, limit: int
) -> dict[str, Any]:
    """The sessions' table: one page of what the filters select (the part of the page
    that is live), with the sites of the fleet."""
    settings = context.sessions
    sites = overview.fleet_edges(context.engine, user.fleet_id)
    if filters.edge and filters.edge not in {site.edge_id for site in sites}:
        raise WebRefusal(404, "There is no such site in your fleet.")
    query = filters.store_filter(user.fleet_id, settings)
    try:
        after = Cursor.parse(cursor_text) if cursor_text else None
    except InvalidCursor as error:
        raise WebRefusal(422, "This page link is not one this view made.") from error
    page = store.session_page(context.engine, query, limit, after)
    now = datetime.now(UTC)
    next_link = (
        "/web/sessions?"
        + filters.query_string(
            cursor=page.next_cursor.text(), limit=str(limit) if limit != PAGE_SIZE else ""
        )
        if page.next_cursor is not None
        else None
    )
    return {
        "query": query,
        "after": after,
        "sites": sites,
        "site_names": {site.edge_id: site.name for site in sites},
        "page": page,
        "rows": [
            _row(session, now, settings, page.repricing.waiting(session))
            for session in page.sessions
        ],
        "next_link": next_link,
        "first_link": "/web/sessions?" + filters.query_string() if after is not None else None,
        "now": now,
    }


def list_fragments(context: WebContext, user: User, filters: Filters, limit: int) -> dict[str, str]:
    """The live part of the first page, re-rendered (the `sessions` event)."""
    values = list_values(context, user, filters, "", limit)
    return {"sessions": context.render_text("_sessions_list.html", values)}


def sessions_values(
    context: WebContext,
    user: User,
    filters: Filters,
    cursor_text: str,
    limit: int,
    whole_fleet_sums: bool = False,
) -> dict[str, Any]:
    settings = context.sessions
    listed = list_values(context, user, filters, cursor_text, limit)
    query, after, page = listed["query"], listed["after"], listed["page"]
    zone = settings.zone
    # Sums read every filtered session: on the first page only, so that later pages cost
    # what the keyset query does, however deep; for the whole fleet unfiltered (every
    # session it ever had) only when asked, as that reads them all.
    sums = (
        {
            group: store.session_sums(context.engine, query, group, zone)
            for group in ("card", "account", "month")
        }
        if after is None and (filters.query_pairs() or whole_fleet_sums)
        else None
    )
    repricing = page.repricing

    def month_recalculating(key: str | None) -> bool:
        return key is not None and repricing.month(Month.parse(key), zone)

    closing = None
    now = listed["now"]
    if filters.edge and filters.month:
        closings = store.month_closings(
            context.engine,
            [Month.parse(filters.month)],
            zone,
            now,
            edge_id=filters.edge,
            fleet_id=user.fleet_id,
        )
        closing = closings[0] if closings else None
    digits = store.currency_digits(context.engine)

    def money(minor: int, currency: str) -> str:
        return format_cost(minor, digits.get(currency, 2))

    # The first page follows new and changed sessions live (a later page stays as it is:
    # its cursor fixes where it starts); filters a live link cannot carry whole are not.
    live_link = None
    if after is None and all(len(value) <= LIVE_ARGUMENT for _, value in filters.query_pairs()):
        live_link = "/web/live?" + urlencode(
            [("view", "sessions")]
            + filters.query_pairs()
            + ([("limit", str(limit))] if limit != PAGE_SIZE else [])
        )
    return listed | {
        "money": money,
        "filters": filters,
        "list_html": Markup(context.render_text("_sessions_list.html", listed)),
        "live_link": live_link,
        "sums": sums,
        # Sums whose costs are not all computed again yet (a tariff changed).
        "sums_recalculating": repricing.before(query.until),
        "month_recalculating": month_recalculating,
        "sums_shown": SUMS_SHOWN,
        "closing": closing,
        "sums_link": "/web/sessions?sums=1",
        "csv_link": "/web/sessions.csv?" + filters.query_string(),
        "time_zone": settings.time_zone,
    }


def _row(
    session: store.Session, now: datetime, settings: SessionSettings, recalculating: bool = False
) -> dict[str, Any]:
    return {
        "session": session,
        "recalculating": recalculating,
        "duration_s": session.duration_s(now),
        "offline": session.recorded_offline(settings.offline_after_s),
        "link": f"/web/sessions/{session.edge_id}/{session.transaction_id}",
    }


def session_detail_values(
    context: WebContext, user: User, edge_id: str, transaction_id: int
) -> dict[str, Any]:
    missing = WebRefusal(404, "There is no such session in your fleet.")
    if not INT64_MIN <= transaction_id <= INT64_MAX or not is_edge_id(edge_id):
        raise missing
    try:
        site = _fleet_site(context, user, edge_id)
    except WebRefusal as error:
        raise missing from error
    session = store.get_session(context.engine, edge_id, transaction_id)
    if session is None:
        raise missing
    samples = store.meter_samples_of(context.engine, edge_id, transaction_id)
    repricing = store.repricing_of(
        context.engine, SessionFilter(fleet_id=user.fleet_id, edge_id=edge_id)
    )
    now = datetime.now(UTC)
    curve = {
        "at": [sample.at.timestamp() for sample in samples],
        "power_w": [sample.power_w for sample in samples],
        "energy_wh": [sample.energy_wh for sample in samples],
    }
    # Embedded as data, not script: "</" cannot end the element it sits in.
    curve_json = json.dumps(curve).replace("</", "<\\/")
    return {
        "site": site,
        "row": _row(session, now, context.sessions, repricing.waiting(session)),
        "session": session,
        "samples": samples,
        "curve_json": Markup(curve_json),
        "max_samples": context.sessions.max_meter_samples,
        "now": now,
    }


def _limit(request: Request) -> int:
    return _limit_of(request.query_params.get("limit", ""))


def _limit_of(text: str) -> int:
    if not text:
        return PAGE_SIZE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise WebRefusal(422, f"limit: a number of sessions from 1 to {MAX_PAGE_SIZE}.")
    return int(text)


def add_routes(router: APIRouter, context: WebContext) -> None:
    async def live_sessions(user: User, arguments: dict[str, str]) -> dict[str, str]:
        filters = Filters.of_values(arguments)
        limit = _limit_of(arguments.get("limit", ""))
        return await asyncio.to_thread(list_fragments, context, user, filters, limit)

    # A site's sessions change with its edge; the fleet's, with any of its edges.
    context.live_views["sessions"] = LiveView(
        live_sessions, lambda arguments: arguments.get("edge") or None
    )

    @router.get("/web/sessions")
    async def sessions_page(request: Request, user: Viewer) -> HTMLResponse:
        filters = Filters.of(request)
        cursor_text = request.query_params.get("cursor", "")
        if len(cursor_text) > 400:
            raise WebRefusal(422, "This page link is not one this view made.")
        values = await asyncio.to_thread(
            sessions_values,
            context,
            user,
            filters,
            cursor_text,
            _limit(request),
            request.query_params.get("sums") == "1",
        )
        return context.page(request, "sessions.html", values)

    @router.get("/web/sessions.csv")
    async def sessions_csv(request: Request, user: Viewer) -> StreamingResponse:
        filters = Filters.of(request)
        if filters.edge:
            await asyncio.to_thread(_fleet_site, context, user, filters.edge)
        query = filters.store_filter(user.fleet_id, context.sessions)
        response = StreamingResponse(
            session_csv(context.engine, query, context.sessions),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="sessions.csv"'},
        )
        context.finish(request, response)
        return response

    @router.get("/web/sessions/{edge_id}/{transaction_id}")
    async def session_page(
        request: Request, edge_id: str, transaction_id: int, user: Viewer
    ) -> HTMLResponse:
        values = await asyncio.to_thread(
            session_detail_values, context, user, edge_id, transaction_id
        )
        return context.page(request, "session.html", values)
