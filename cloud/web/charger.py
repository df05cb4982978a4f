"""The charger page (`/web/edges/{edge}/chargers/{charger}`): connectors' status (last
known, with its time, while the edge is offline), status history, sessions, the commands
sent to it with their outcomes, firmware and jobs; and for operators, the command forms.

A command from a form takes the same way as `POST /api/edges/{edge}/commands`
(cloud/store/desired.py, `create_command`, then the aggregator is told), with the user's
email as its actor, and is recorded in the audit log. While the edge is offline it waits
("queued until T"); its result shows when the edge reports it, through the live stream.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from cloud.store import desired
from cloud.store.charger_page import ChargerPage, charger_page
from cloud.store.database import StoreError
from cloud.store.status_history import status_history
from cloud.store.users import User
from cloud.web import audit
from cloud.web.auth import ROLE_RANK, Operator, Viewer, WebRefusal
from cloud.web.command_forms import (
    AVAILABILITY_TYPES,
    EXPIRY_CHOICES,
    RESET_TYPES,
    TRIGGER_MESSAGES,
    CommandFormError,
    command_arguments,
    expiry_minutes,
)
from cloud.web.live import LiveView
from cloud.web.render import segment
from contract.protocol import is_edge_id

if TYPE_CHECKING:
    from cloud.web.app import WebContext

# A charger id longer than a command may name (contract/protocol.py) is no charger's.
MAX_CHARGER_ID = 255
MAX_FIELD = 64
HISTORY_SHOWN = 50
FRAGMENTS = {
    "status": "_charger_status.html",
    "commands": "_charger_commands.html",
    "sessions": "_charger_sessions.html",
}


def charger_path(edge_id: str, charger_id: str) -> str:
    return f"/web/edges/{edge_id}/chargers/{segment(charger_id)}"


def charger_values(
    context: WebContext, user: User, edge_id: str, charger_id: str
) -> dict[str, Any]:
    found: ChargerPage | None = None
    if is_edge_id(edge_id) and 1 <= len(charger_id) <= MAX_CHARGER_ID:
        found = charger_page(context.engine, user.fleet_id, edge_id, charger_id)
    if found is None:
        # Another fleet's charger is answered as one that does not exist.
        raise WebRefusal(404, "There is no such charger in your fleet.")
    return {
        "edge": found.edge,
        "charger": found.charger,
        "sessions": found.sessions,
        "commands": found.commands,
        "jobs": found.jobs,
        "firmware": found.firmware,
        "history": status_history(context.engine, edge_id, charger_id, HISTORY_SHOWN),
        "stale": found.edge.state != "online",
        "now": datetime.now(UTC),
        "path": charger_path(edge_id, charger_id),
    }


def charger_fragments(
    context: WebContext, user: User, edge_id: str, charger_id: str
) -> dict[str, str]:
    values = charger_values(context, user, edge_id, charger_id)
    return {name: context.render_text(template, values) for name, template in FRAGMENTS.items()}


def add_routes(router: APIRouter, context: WebContext) -> None:
    async def live_charger(user: User, arguments: dict[str, str]) -> dict[str, str]:
        return await asyncio.to_thread(
            charger_fragments,
            context,
            user,
            arguments.get("edge", ""),
            arguments.get("charger", ""),
        )

    context.live_views["charger"] = LiveView(
        live_charger, lambda arguments: arguments.get("edge", "")
    )

    def page_values(user: User, edge_id: str, charger_id: str) -> dict[str, Any]:
        values = charger_values(context, user, edge_id, charger_id)
        rendered = {name: Markup(context.render_text(t, values)) for name, t in FRAGMENTS.items()}
        return values | {
            "fragments": rendered,
            "can_command": ROLE_RANK[user.role] >= ROLE_RANK["operator"],
            "reset_types": RESET_TYPES,
            "availability_types": AVAILABILITY_TYPES,
            "trigger_messages": TRIGGER_MESSAGES,
            "expiry_choices": EXPIRY_CHOICES,
        }

    @router.get("/web/edges/{edge_id}/chargers/{charger_id}")
    async def charger(
        request: Request, edge_id: str, charger_id: str, user: Viewer
    ) -> HTMLResponse:
        values = await asyncio.to_thread(page_values, user, edge_id, charger_id)
        return context.page(request, "charger.html", values)

    @router.post("/web/edges/{edge_id}/chargers/{charger_id}/commands")
    async def send_command(
        request: Request,
        edge_id: str,
        charger_id: str,
        user: Operator,
        action: str = Form("", max_length=MAX_FIELD),
        expires_in_min: str = Form("60", max_length=MAX_FIELD),
        id_tag: str = Form("", max_length=MAX_FIELD),
        connector_id: str = Form("", max_length=MAX_FIELD),
        transaction_id: str = Form("", max_length=MAX_FIELD),
        kind: str = Form("", alias="type", max_length=MAX_FIELD),
        requested_message: str = Form("", max_length=MAX_FIELD),
    ) -> Response:
        # The charger must be the user's before anything is checked or stored (404).
        await asyncio.to_thread(charger_values, context, user, edge_id, charger_id)
        fields = {
            "id_tag": id_tag,
            "connector_id": connector_id,
            "transaction_id": transaction_id,
            "type": kind,
            "requested_message": requested_message,
        }
        htmx = request.headers.get("HX-Request") == "true"
        try:
            chosen, arguments = command_arguments(action, fields)
            expires_at = datetime.now(UTC) + timedelta(minutes=expiry_minutes(expires_in_min))
            created = await asyncio.to_thread(
                functools.partial(
                    desired.create_command,
                    context.engine,
                    edge_id,
                    charger_id,
                    chosen,
                    arguments,
                    expires_at,
                    actor=user.email,
                )
            )
        except (CommandFormError, StoreError) as error:
            if not htmx:
                raise WebRefusal(422, f"The command was not sent: {error}.") from error
            return await _commands_fragment(request, user, edge_id, charger_id, str(error))
        await audit.record(
            context.engine,
            user,
            f"command.{chosen}",
            f"{edge_id}/{charger_id}",
            {"command_id": created.id, "arguments": arguments, "expires_at": created.expires_at},
        )
        context.on_desired_state(edge_id)
        if htmx:
            return await _commands_fragment(request, user, edge_id, charger_id, None)
        redirect = RedirectResponse(charger_path(edge_id, charger_id) + "#commands", 303)
        context.finish(request, redirect)
        return redirect

    async def _commands_fragment(
        request: Request, user: User, edge_id: str, charger_id: str, error: str | None
    ) -> Response:
        values = await asyncio.to_thread(charger_values, context, user, edge_id, charger_id)
        html = context.render_text("_charger_commands.html", values | {"form_error": error})
        response = HTMLResponse(html)
        context.finish(request, response)
        return response
