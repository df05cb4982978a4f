"""The cards page: per edge of the user's fleet, the card list version wanted against
the one applied; an edge's cards, added or blocked by an operator (through
`desired.set_card_list`, as the API's `PUT /api/edges/{edge}/cards`, and recorded in the
audit log); the cards the sites refused, with the reason each edge recorded.

Viewers read; operators change. Another fleet's edge is 404, as one that does not exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from cloud.store import cards as cards_store
from cloud.store import desired
from cloud.store.users import User
from cloud.web import audit
from cloud.web.auth import Operator, Viewer, WebRefusal
from contract.protocol import CardEntry, is_edge_id

if TYPE_CHECKING:
    from cloud.web.app import WebContext

REFUSALS_SHOWN = 50
MAX_FIELD = 255


def cards_values(context: WebContext, user: User) -> dict[str, Any]:
    return {
        "edges": cards_store.fleet_card_versions(context.engine, user.fleet_id),
        "refusals": cards_store.card_refusals(context.engine, user.fleet_id, None, REFUSALS_SHOWN),
        "now": datetime.now(UTC),
    }


def edge_cards_values(context: WebContext, user: User, edge_id: str) -> dict[str, Any]:
    found = (
        cards_store.fleet_card_versions(context.engine, user.fleet_id, edge_id)
        if is_edge_id(edge_id)
        else []
    )
    if not found:
        raise WebRefusal(404, "There is no such site in your fleet.")
    current = desired.current_card_list(context.engine, edge_id)
    return {
        "edge": found[0],
        "cards": sorted((current or (0, []))[1], key=lambda card: card.id_tag),
        "refusals": cards_store.card_refusals(
            context.engine, user.fleet_id, edge_id, REFUSALS_SHOWN
        ),
        "now": datetime.now(UTC),
    }


def changed_list(
    cards: list[CardEntry], action: Literal["add", "block"], id_tag: str, label: str | None
) -> list[CardEntry]:
    """The list with `id_tag` added (or accepted again, keeping its other fields) or
    blocked; a card blocked that the list lacks is added as blocked."""
    status: Literal["Accepted", "Blocked"] = "Accepted" if action == "add" else "Blocked"
    changed: list[CardEntry] = []
    found = False
    for card in cards:
        if card.id_tag.upper() == id_tag.upper():
            found = True
            fields: dict[str, Any] = {"status": status}
            if label:
                fields["label"] = label
            card = card.model_copy(update=fields)
        changed.append(card)
    if not found:
        changed.append(CardEntry(id_tag=id_tag, status=status, label=label or None))
    return changed


def add_routes(
    router: APIRouter, context: WebContext, tell: Callable[[str], None] | None = None
) -> None:
    @router.get("/web/cards")
    async def cards_page(request: Request, user: Viewer) -> HTMLResponse:
        values = await asyncio.to_thread(cards_values, context, user)
        return context.page(request, "cards.html", values)

    @router.get("/web/cards/{edge_id}")
    async def edge_cards_page(request: Request, edge_id: str, user: Viewer) -> HTMLResponse:
        values = await asyncio.to_thread(edge_cards_values, context, user, edge_id)
        return context.page(request, "edge_cards.html", values | {"error": None})

    @router.post("/web/cards/{edge_id}")
    async def change_card(
        request: Request,
        edge_id: str,
        user: Operator,
        action: str = Form("", max_length=16),
        id_tag: str = Form("", max_length=MAX_FIELD),
        label: str = Form("", max_length=MAX_FIELD),
    ) -> Response:
        values = await asyncio.to_thread(edge_cards_values, context, user, edge_id)  # 404 first
        if action not in ("add", "block"):
            raise WebRefusal(422, "Choose to add or to block a card.")
        id_tag = id_tag.strip()
        try:
            cards = changed_list(values["cards"], action, id_tag, label.strip() or None)  # type: ignore[arg-type]
            version = await asyncio.to_thread(desired.set_card_list, context.engine, edge_id, cards)
        except ValidationError:
            error = "A card id is 1 to 20 characters of the card's id tag (OCPP idToken)."
            return context.page(request, "edge_cards.html", values | {"error": error}, status=422)
        except desired.DesiredStateError as refused:
            return context.page(
                request, "edge_cards.html", values | {"error": str(refused)}, status=422
            )
        await audit.record(
            context.engine,
            user,
            f"card.{action}",
            f"{edge_id}/{id_tag}",
            {"version": version, "label": label.strip() or None},
        )
        if tell is not None:
            tell(edge_id)
        response = RedirectResponse(f"/web/cards/{edge_id}", status_code=303)
        context.finish(request, response)
        return response
