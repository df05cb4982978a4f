"""The cards pages: the fleet's card list (one row per card, with the sites holding it;
searched, filtered, a page at a time by keyset, as CSV), a site's list with its version
wanted against applied, one card's page (its entry at each site, what refused it, who
changed it last), and the forms that add, block, unblock, expire, limit (to sites, to
chargers) and remove a card, across the fleet or at one site.

Every change goes through `card_edits.change_cards` (one transaction; each site whose
list changes gets a new version by the path of the API's `PUT /api/edges/{edge}/cards`,
and the aggregator is told to send it), carries the card's revision its form was made
from (a change made on a stale one is refused, 409, with who changed what meanwhile) and
is recorded in the audit log. Viewers read; operators change. Another fleet's site or
card is 404, as one that does not exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from cloud import card_csv
from cloud.store import card_edits
from cloud.store import cards as cards_store
from cloud.store.card_edits import CardChange, CardEditRefused, CardsChanged, StaleCard
from cloud.store.card_writes import CardListError
from cloud.store.users import User
from cloud.web import audit
from cloud.web.auth import Operator, Viewer, WebRefusal
from contract.protocol import ID_TAG_PATTERN, is_edge_id

if TYPE_CHECKING:
    from cloud.web.app import WebContext

REFUSALS_SHOWN = 50
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_FIELD = 255
MAX_FILTER = 100
MAX_CHARGERS_TEXT = 65_536
ACTIONS = ("add", "save", "block", "unblock", "expire", "remove")


@dataclass(frozen=True)
class ListFilters:
    """The list's filter form as the user gave it (empty: not set)."""

    text: str = ""
    status: str = ""
    site: str = ""

    @classmethod
    def of(cls, request: Request, site: str = "") -> ListFilters:
        values = {name: request.query_params.get(name, "").strip() for name in ("q", "status")}
        for name, value in values.items():
            if len(value) > MAX_FILTER:
                raise WebRefusal(422, f"The filter {name} is longer than {MAX_FILTER}.")
        status = values["status"]
        if status and status not in card_csv.STATUSES:
            raise WebRefusal(422, f"status: one of {', '.join(card_csv.STATUSES)}.")
        return cls(values["q"], status, site or request.query_params.get("site", "").strip())

    def query_string(self, **more: str) -> str:
        pairs = [("q", self.text), ("status", self.status), ("site", self.site), *more.items()]
        return urlencode([(name, value) for name, value in pairs if value])

    def store_filter(self, fleet_id: int) -> cards_store.CardFilter:
        return cards_store.CardFilter(
            fleet_id, self.site or None, self.status or None, self.text or None
        )


def card_link(id_tag: str) -> str:
    return "/web/card?" + urlencode({"id_tag": id_tag})


def fleet_sites(context: WebContext, user: User) -> list[cards_store.EdgeCards]:
    return cards_store.fleet_card_versions(context.engine, user.fleet_id)


def site_of(sites: list[cards_store.EdgeCards], edge_id: str) -> cards_store.EdgeCards:
    found = next((site for site in sites if site.edge_id == edge_id), None)
    if found is None or not is_edge_id(edge_id):
        raise WebRefusal(404, "There is no such site in your fleet.")
    return found


def list_values(
    context: WebContext, user: User, filters: ListFilters, after: str, limit: int
) -> dict[str, Any]:
    """The fleet's (or a site's, `filters.site`) card list and what the page around it
    shows."""
    sites = fleet_sites(context, user)
    site = site_of(sites, filters.site) if filters.site else None
    if len(after) > 4 * MAX_FIELD or not after.isprintable():
        raise WebRefusal(422, "This page link is not one this view made.")
    page = cards_store.card_page(
        context.engine, filters.store_filter(user.fleet_id), after or None, limit
    )
    base = f"/web/cards/{site.edge_id}" if site else "/web/cards"
    more = {"limit": str(limit)} if limit != PAGE_SIZE else {}
    return {
        "sites": sites,
        "site": site,
        "site_names": {edge.edge_id: edge.name for edge in sites},
        "filters": filters,
        "page": page,
        "list_path": base,
        "next_link": (
            f"{base}?" + filters.query_string(after=page.next_after, **more)
            if page.next_after is not None
            else None
        ),
        "first_link": f"{base}?" + filters.query_string(**more) if after else None,
        "csv_link": "/web/cards.csv?" + filters.query_string(),
        "import_link": "/web/card-import" + (f"?site={site.edge_id}" if site else ""),
        "refusals": cards_store.card_refusals(
            context.engine, user.fleet_id, site.edge_id if site else None, REFUSALS_SHOWN
        ),
        "card_link": card_link,
        "is_past": is_past,
        "now": datetime.now(UTC),
        "error": None,
        "form": {},
    }


def card_values(context: WebContext, user: User, id_tag: str) -> dict[str, Any]:
    sites = fleet_sites(context, user)
    card = cards_store.fleet_card(context.engine, user.fleet_id, id_tag) if id_tag else None
    if card is None:
        raise WebRefusal(404, "There is no such card in your fleet's lists.")
    return {
        "card": card,
        "sites": sites,
        "site_names": {edge.edge_id: edge.name for edge in sites},
        "refusals": cards_store.card_refusals(
            context.engine, user.fleet_id, None, REFUSALS_SHOWN, id_tag=card.id_tag
        ),
        "card_link": card_link,
        "is_past": is_past,
        "now": datetime.now(UTC),
        "error": None,
        "conflict": None,
    }


def is_past(expiry: str | None) -> bool:
    if not expiry:
        return False
    try:
        moment = datetime.fromisoformat(expiry.replace("z", "Z"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment <= datetime.now(UTC)


@dataclass(frozen=True)
class CardForm:
    """A card form as posted."""

    id_tag: str
    action: str
    revision: str
    site: str
    status: str
    expiry_date: str
    parent_id_tag: str
    label: str
    chargers: str
    sites: list[str]

    def fields(self) -> dict[str, Any]:
        """The card's fields from the form; ValueError naming the one that is wrong."""
        parent = self.parent_id_tag.strip()
        if parent and not _is_id_tag(parent):
            raise ValueError("An account is an id tag: 1 to 20 characters.")
        return {
            "status": card_csv.parse_status(self.status or "Accepted"),
            "expiry_date": card_csv.normalize_expiry(self.expiry_date) or None,
            "parent_id_tag": parent or None,
            "label": card_csv.check_label(self.label.strip()) or None,
            "chargers": card_csv.parse_chargers(self.chargers),
        }

    def change(self, now: datetime) -> CardChange:
        """The change the form asks for; ValueError when it cannot be one."""
        if not _is_id_tag(self.id_tag):
            raise ValueError("A card id is 1 to 20 characters of the card's id tag (OCPP idToken).")
        if self.action not in ACTIONS:
            raise ValueError("Choose what to do with the card.")
        here = frozenset({self.site}) if self.site else None
        if self.action == "add":
            at = here or frozenset(self.sites)
            if not at:
                raise ValueError("Choose at least one site for the card.")
            return CardChange(self.id_tag, self.fields(), at=at, new=True)
        if not self.revision.isdigit() or len(self.revision) > 18:
            raise ValueError("This form carries no card revision: reload the page.")
        revision = int(self.revision)
        if self.action == "save":
            if here is None and not self.sites:
                raise ValueError("Choose at least one site, or remove the card.")
            at = here or frozenset(self.sites)
            return CardChange(
                self.id_tag,
                self.fields(),
                at=at,
                keep_only=None if here else at,
                expected_revision=revision,
            )
        if self.action == "remove":
            return CardChange(
                self.id_tag,
                at=frozenset(),
                remove_from=here or frozenset(),
                keep_only=None if here else frozenset(),
                expected_revision=revision,
            )
        fields: dict[str, Any] = {
            "block": {"status": "Blocked"},
            "unblock": {"status": "Accepted"},
            "expire": {"expiry_date": now.strftime("%Y-%m-%dT%H:%M:%SZ")},
        }[self.action]
        return CardChange(self.id_tag, fields, at=here, expected_revision=revision)


def _is_id_tag(text: str) -> bool:
    return re.fullmatch(ID_TAG_PATTERN, text) is not None


def conflict_lines(stale: list[StaleCard]) -> list[str]:
    """Who changed what since the form was made, a sentence per card."""
    lines = []
    for card in stale:
        where = ", ".join(card.sites) if card.sites else "no site"
        if card.expected is None:
            lines.append(
                f"{card.id_tag} is in your fleet's lists already (at {where})"
                + (f": {card.change}, by {card.changed_by}." if card.changed_by else ".")
            )
        elif card.changed_by is not None and card.changed_at is not None:
            lines.append(
                f"{card.id_tag} was changed by {card.changed_by} at "
                f"{card.changed_at.strftime('%Y-%m-%d %H:%M:%SZ')}: {card.change} "
                f"(revision {card.revision}; your form was made from {card.expected})."
            )
        else:
            lines.append(f"{card.id_tag or 'The fleet'}: {card.change or 'changed'}.")
    return lines


def add_routes(
    router: APIRouter, context: WebContext, tell: Callable[[str], None] | None = None
) -> None:
    @router.get("/web/cards")
    async def cards_page(request: Request, user: Viewer) -> HTMLResponse:
        values = await asyncio.to_thread(
            list_values,
            context,
            user,
            ListFilters.of(request),
            request.query_params.get("after", ""),
            _limit(request),
        )
        return context.page(request, "cards.html", values)

    @router.get("/web/cards.csv")
    async def cards_csv(request: Request, user: Viewer) -> StreamingResponse:
        filters = ListFilters.of(request)
        if filters.site:
            site_of(await asyncio.to_thread(fleet_sites, context, user), filters.site)
        query = filters.store_filter(user.fleet_id)
        response = StreamingResponse(
            card_csv.export_lines(cards_store.export_cards(context.engine, query)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="cards.csv"'},
        )
        context.finish(request, response)
        return response

    @router.get("/web/cards/{edge_id}")
    async def edge_cards_page(request: Request, edge_id: str, user: Viewer) -> HTMLResponse:
        values = await asyncio.to_thread(
            list_values,
            context,
            user,
            ListFilters.of(request, site=edge_id),
            request.query_params.get("after", ""),
            _limit(request),
        )
        return context.page(request, "edge_cards.html", values)

    @router.get("/web/card")
    async def card_page(request: Request, user: Viewer) -> HTMLResponse:
        id_tag = request.query_params.get("id_tag", "")
        if len(id_tag) > MAX_FIELD:
            raise WebRefusal(404, "There is no such card in your fleet's lists.")
        values = await asyncio.to_thread(card_values, context, user, id_tag)
        return context.page(request, "card.html", values)

    @router.post("/web/card")
    async def change_card(
        request: Request,
        user: Operator,
        id_tag: str = Form("", max_length=MAX_FIELD),
        action: str = Form("", max_length=16),
        revision: str = Form("", max_length=32),
        site: str = Form("", max_length=MAX_FIELD),
        status: str = Form("", max_length=32),
        expiry_date: str = Form("", max_length=64),
        parent_id_tag: str = Form("", max_length=MAX_FIELD),
        label: str = Form("", max_length=MAX_FIELD),
        chargers: str = Form("", max_length=MAX_CHARGERS_TEXT),
        sites: Annotated[list[str] | None, Form()] = None,
    ) -> Response:
        form = CardForm(
            id_tag.strip(),
            action,
            revision.strip(),
            site.strip(),
            status,
            expiry_date,
            parent_id_tag,
            label,
            chargers,
            [name.strip() for name in sites or [] if name.strip()],
        )
        if form.site:  # 404 before anything else
            site_of(await asyncio.to_thread(fleet_sites, context, user), form.site)
        try:
            change = form.change(datetime.now(UTC))
            result = await asyncio.to_thread(
                functools.partial(
                    card_edits.change_cards, context.engine, user.fleet_id, [change], user.email
                )
            )
        except (ValueError, CardEditRefused, CardListError) as refused:
            return await _refused(request, user, form, str(refused), None, 422)
        except CardsChanged as changed:
            return await _refused(request, user, form, None, changed.stale, 409)
        outcome = next(iter(result.plan.cards.values()))
        await audit.record(
            context.engine,
            user,
            f"card.{form.action}",
            f"{form.site}/{outcome.id_tag}" if form.site else outcome.id_tag,
            {"revision": result.revision, "versions": result.versions, "change": outcome.words},
        )
        for edge_id in result.versions:
            if tell is not None:
                tell(edge_id)
        if form.site:
            target = f"/web/cards/{form.site}"
        elif form.action == "remove":
            target = "/web/cards"
        else:
            target = card_link(outcome.id_tag)
        response = RedirectResponse(target, status_code=303)
        context.finish(request, response)
        return response

    async def _refused(
        request: Request,
        user: User,
        form: CardForm,
        error: str | None,
        stale: list[StaleCard] | None,
        status: int,
    ) -> HTMLResponse:
        """The page the form came from, as the cards are now, with why nothing changed
        (and what the user asked, so that nothing they typed is lost)."""
        exists = (
            await asyncio.to_thread(
                cards_store.fleet_card, context.engine, user.fleet_id, form.id_tag
            )
            if _is_id_tag(form.id_tag)
            else None
        )
        asked = dataclasses.asdict(form)
        conflict = {"lines": conflict_lines(stale), "form": asked} if stale else None
        if form.action == "add" or exists is None:
            values = await asyncio.to_thread(
                list_values, context, user, ListFilters(site=form.site), "", PAGE_SIZE
            )
            template = "edge_cards.html" if form.site else "cards.html"
            message = error or " ".join(conflict_lines(stale or []))
            return context.page(
                request, template, values | {"error": message, "form": asked}, status=status
            )
        values = await asyncio.to_thread(card_values, context, user, form.id_tag)
        return context.page(
            request, "card.html", values | {"error": error, "conflict": conflict}, status=status
        )


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", "")
    if not text:
        return PAGE_SIZE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise WebRefusal(422, f"limit: a number of cards from 1 to {MAX_PAGE_SIZE}.")
    return int(text)
