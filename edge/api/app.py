"""The local operator API: read the site, send any OCPP command to a charger.

Bound to loopback by default; bound anywhere else it requires a bearer token. Without a
token it serves only this machine's clients that pass the browser checks of
contract/http/access.py (Host, Origin, JSON bodies); bodies are limited (`api.max_body_bytes`).
Errors say what happened in words: 404 unknown charger, 409 charger offline or connector
busy, 422 bad arguments, 502 the charger refused (CALLERROR), 504 no answer in time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from sqlite_utils import Database
from starlette.types import ASGIApp

from contract.http.access import AccessGuard, AccessPolicy
from contract.http.answers import GUARD_RESPONSES, problem
from contract.http.body_limit import BodyLimit
from contract.http.serving import ConnectionLimits, EmbeddedHttpServer
from contract.networks import parse_networks
from edge.files.locations import resolve_file_locations
from edge.ocpp.commands import (
    CSMS_INITIATED,
    ChargerOffline,
    ChargerRefused,
    ChargerTimeout,
    CommandError,
    InvalidArguments,
    UnknownCharger,
    send_command,
)
from edge.ocpp.library import schema_text
from edge.ocpp.local_list_limits import list_view, local_list_summaries, read_limits
from edge.ocpp.payloads import snake_case
from edge.presence import presence
from edge.settings import ApiSettings, Settings
from edge.site import SiteContext
from edge.store import (
    card_decisions,
    certificates,
    charger_configuration,
    chargers,
    charging_profiles,
    commands,
    local_lists,
    reservations,
    transactions,
)
from edge.sync import outbox
from edge.sync.link import SyncLink
from edge.tap_flow import TapFlow

STATUS_FOR = {
    UnknownCharger: 404,
    ChargerOffline: 409,
    InvalidArguments: 422,
    ChargerRefused: 502,
    ChargerTimeout: 504,
}


class ConnectorBusy(CommandError):
    kind = "busy"


def create_api(
    site: SiteContext,
    settings: Settings,
    taps: TapFlow | None = None,
    sync: SyncLink | None = None,
) -> FastAPI:
    api = FastAPI(
        title="ocpp-edge local API",
        description="Read the site and send OCPP 1.6 commands to its chargers.",
        version="1",
        responses=GUARD_RESPONSES,
    )
    store = site.store

    @api.exception_handler(CommandError)
    async def command_failed(request: Request, error: CommandError) -> JSONResponse:
        status = 409 if isinstance(error, ConnectorBusy) else STATUS_FOR.get(type(error), 500)
        body: dict[str, Any] = {"error": error.kind, "detail": str(error)}
        if error.command_id is not None:
            body["commandId"] = error.command_id
        if isinstance(error, ChargerRefused):
            body["errorCode"] = error.code
        return JSONResponse(body, status_code=status)

    @api.get("/api/readers", summary="Card readers: where they are and whether they work")
    async def list_readers() -> list[dict[str, Any]]:
        if taps is None:
            return []
        views = []
        for post in taps.posts.values():
            state = taps.reader_states.get(post.reader_id)
            views.append(
                {
                    "id": post.reader_id,
                    "charger": post.charger_id,
                    "connector": post.connector_id,
                    "online": state.online if state else None,
                    "reason": state.reason if state else "not opened yet",
                    "since": state.since if state else None,
                }
            )
        return views

    @api.get("/api/sync", summary="The cloud link: connected or not, backlog, last ack")
    async def sync_state() -> dict[str, Any]:
        held = await store.run(outbox.backlog)
        return {
            "enabled": sync is not None,
            "connected": sync.connected if sync else False,
            "broker": f"{settings.sync.broker_host}:{settings.sync.broker_port}",
            "edge_id": settings.sync.edge_id,
            "backlog": held.events,
            "oldest_at": held.oldest_at,
            "acked_seq": held.acked_seq,
            "acked_at": held.acked_at,
            "cards_version": held.cards_version,
        }

    @api.get("/api/card-decisions", summary="Decisions on cards, newest first, with reasons")
    async def list_card_decisions(limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
        return await store.run(lambda db: card_decisions.list_card_decisions(db, limit))

    @api.get("/api/chargers", summary="Chargers, their presence and connectors")
    async def list_chargers() -> list[dict[str, Any]]:
        return await store.run(lambda db: _chargers_view(db, settings))

    @api.get("/api/chargers/{charger_id}", summary="One charger")
    async def get_charger(charger_id: str) -> dict[str, Any]:
        view = [
            c
            for c in await store.run(lambda db: _chargers_view(db, settings))
            if c["id"] == charger_id
        ]
        if not view:
            raise HTTPException(404, f"no charger {charger_id} at this site")
        return view[0]

    @api.get("/api/transactions", summary="Transactions, newest first")
    async def list_transactions(
        charger: str | None = None, open_only: bool = False, limit: int = Query(50, ge=1, le=1000)
    ) -> list[dict[str, Any]]:
        return await store.run(
            lambda db: transactions.list_transactions(
                db, limit=limit, charger_id=charger, open_only=open_only
            )
        )

    @api.get("/api/chargers/{charger_id}/commands", summary="Commands sent to a charger")
    async def list_commands(
        charger_id: str, limit: int = Query(50, ge=1, le=1000)
    ) -> list[dict[str, Any]]:
        return await store.run(lambda db: commands.list_commands(db, charger_id, limit))

    @api.get(
        "/api/chargers/{charger_id}/state",
        summary="What the edge keeps for a charger: configuration, availability, "
        "reservations, charging profiles, local list version, certificates",
    )
    async def charger_state(charger_id: str) -> dict[str, Any]:
        return await store.run(lambda db: _charger_state(db, charger_id, settings))

    for action in CSMS_INITIATED:
        _add_command_route(api, site, settings, action)
    return api


# Served to anyone: what the API is, not what the site holds (`ocpp-edge doctor` asks it).
OPEN_ROUTES = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


def protect_local_api(api: FastAPI, settings: ApiSettings) -> ASGIApp:
    """The API behind its access checks and body limit: what the server runs."""
    policy = AccessPolicy.build(
        token=settings.token,
        # Without a token, this machine's clients (the CLI) are served: the API binds to
        # loopback then (settings refuse otherwise).
        trust_loopback=not settings.token,
        bind_host=settings.host,
        allowed_hosts=settings.allowed_hosts,
        trusted_proxies=settings.trusted_proxies,
        open_routes=OPEN_ROUTES,
    )
    return AccessGuard(BodyLimit(api, settings.max_body_bytes), policy)


def local_api_server(api: FastAPI, settings: ApiSettings) -> EmbeddedHttpServer:
    limits = ConnectionLimits.of(settings, parse_networks(settings.trusted_proxies))
    return EmbeddedHttpServer(
        protect_local_api(api, settings), settings.host, settings.port, limits, "local API"
    )


COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: problem("No such charger"),
    409: problem("The charger is not connected, or the connector is busy"),
    422: problem("The request does not fit the command's schema or OCPP's rules"),
    502: problem("The charger answered with a CALLERROR (errorCode)"),
    504: problem("No answer within `wait` seconds"),
}


def _add_command_route(api: FastAPI, site: SiteContext, settings: Settings, action: str) -> None:
    async def command(
        charger_id: str,
        request: Request,
        wait: float = Query(30.0, gt=0, le=300, description="Seconds to wait for the answer."),
    ) -> dict[str, Any]:
        payload = _command_fields(await request.body())
        arguments = resolve_file_locations(
            action,
            {snake_case(key): value for key, value in payload.items()},
            settings.files,
            charger_id,
        )
        await _refuse_if_connector_busy(site, charger_id, action, arguments)
        result = await send_command(site, charger_id, action, arguments, answer_within=wait)
        return {"commandId": result.command_id, "response": result.response}

    schema = _request_schema(action)
    api.add_api_route(
        f"/api/chargers/{{charger_id}}/commands/{action}",
        command,
        methods=["POST"],
        name=action,
        summary=f"Send {action} and wait for the charger's answer",
        responses=COMMAND_RESPONSES,
        openapi_extra={
            "requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}
        },
    )


# OCPP's integer fields are 32-bit in every charger (and SQLite's end at 64).
OCPP_INTEGERS = range(-(2**31), 2**31)


def _command_fields(body: bytes) -> dict[str, Any]:
    """The JSON object of a command's fields; InvalidArguments for anything else: not
    JSON, nested too deep to read, NaN or infinite numbers, integers no charger holds."""

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        payload = json.loads(body, parse_constant=no_constant) if body.strip() else {}
    except (ValueError, RecursionError) as error:
        raise InvalidArguments(f"the body is not JSON: {error}") from error
    if not isinstance(payload, dict):
        raise InvalidArguments("the body is a JSON object of the command's fields")
    pending: list[tuple[str, Any]] = [("", payload)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, int) and not isinstance(value, bool) and value not in OCPP_INTEGERS:
            raise InvalidArguments(f"{path}: {value} is beyond the 32-bit integers OCPP holds")
        if isinstance(value, dict):
            pending.extend((f"{path}.{key}".lstrip("."), item) for key, item in value.items())
        elif isinstance(value, list):
            pending.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return payload


async def _refuse_if_connector_busy(
    site: SiteContext, charger_id: str, action: str, arguments: dict[str, Any]
) -> None:
    connector_id = arguments.get("connector_id")
    if action not in ("RemoteStartTransaction", "ReserveNow") or not connector_id:
        return
    busy = await site.store.run(
        lambda db: transactions.open_transaction(db, charger_id, int(connector_id))
    )
    if busy is not None:
        raise ConnectorBusy(
            f"connector {connector_id} of {charger_id} is busy with transaction {busy['id']}"
        )


def _request_schema(action: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text(action))
    for key in ("$schema", "id", "$id", "title"):
        schema.pop(key, None)
    return schema


def _charger_state(db: Database, charger_id: str, settings: Settings) -> dict[str, Any]:
    if chargers.get_charger(db, charger_id) is None:
        raise HTTPException(404, f"no charger {charger_id} at this site")

    return {
        "configuration": charger_configuration.list_configuration(db, charger_id),
        "availability": charger_configuration.list_availability_requests(db, charger_id),
        "reservations": reservations.list_reservations(db, charger_id),
        "charging_profiles": charging_profiles.list_profiles(db, charger_id),
        "local_list": _local_list_view(db, charger_id, settings),
        "installed_certificates": certificates.list_installed_certificates(db, charger_id),
        "certificate_requests": certificates.list_certificate_requests(db, charger_id),
    }


def _local_list_view(db: Database, charger_id: str, settings: Settings) -> dict[str, Any]:
    facts = local_lists.sync_facts(db, charger_id)
    limits = read_limits(facts.configuration, settings.ocpp.local_list)
    return list_view(facts.state, facts.card_version, limits)


def _chargers_view(db: Database, settings: Settings) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    lists = local_list_summaries(db, settings.ocpp.local_list)
    connectors: dict[str, list[dict[str, Any]]] = {}
    for connector in chargers.list_connectors(db):
        connectors.setdefault(connector["charger_id"], []).append(
            {key: connector[key] for key in ("connector_id", "status", "error_code", "info")}
        )
    return [
        {
            "id": row["id"],
            "presence": presence(row, settings, now),
            "registration": row["registration"],
            "last_seen_at": row["last_seen_at"],
            "vendor": row["vendor"],
            "model": row["model"],
            "firmware_version": row["firmware_version"],
            "connectors": connectors.get(row["id"], []),
            "local_list": lists.get(row["id"], "not sent yet"),
        }
        for row in chargers.list_chargers(db)
    ]
