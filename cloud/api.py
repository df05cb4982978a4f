"""The aggregator's REST API, for fleet managers' tools and the fleet web view: edges
with presence and sync lag, chargers, transactions, refused payloads; desired state
to set: card lists, firmware images and offers, operator commands; enrollment codes.

Every request carries the bearer token (`api.token`), except on the two routes edges
enroll with (`/api/enroll/code`, `/api/enroll`), whose credential is the one-time code;
`api.trust_loopback` serves this machine's own clients without it (contract/http/access.py:
never a client a reverse proxy forwards, and only past the browser checks). Bodies are
limited per route while they stream in (contract/http/body_limit.py); connections are bounded
by contract/http/serving.py. Errors are JSON with a sentence in `detail`: 401 no or wrong
token, 404 unknown edge or image, 413 body too large, 422 bad arguments (an edge id that
cannot be one, too); enrolling: 403 wrong, used or expired code, 409 the edge has an
identity the code may not replace, 422 bad certificate request, 429 too many wrong codes
from one address, 503 enrollment not set up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import re
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from starlette.types import ASGIApp

from cloud.aggregator import Aggregator
from cloud.campaigns_api import add_campaign_routes
from cloud.enrollment import (
    CertificateRequestRefused,
    CodeRefused,
    Enrollment,
    EnrollmentError,
    EnrollmentNotConfigured,
    IdentityExists,
    TooManyFailures,
)
from cloud.firmware import (
    FirmwareError,
    ImageTooLarge,
    ImageUpload,
    StoredImage,
    make_manifest,
    public_key_text,
    sign_manifest,
)
from cloud.sessions_api import add_session_routes
from cloud.settings import ApiSettings, CardSettings, CloudSettings
from cloud.store import alerts as alerts_store
from cloud.store import audit as audit_log
from cloud.store import desired, fleet, presence
from cloud.store.alerts import AlertKind
from cloud.store.database import StoreError
from cloud.store.desired import DesiredStateError
from contract import protocol as wire
from contract.enrollment import (
    CODE_PATH,
    ENROLL_PATH,
    CodeAnswer,
    CodeQuery,
    EnrollmentAnswer,
    EnrollmentRequest,
)
from contract.firmware import parse_target
from contract.http.access import AccessGuard, AccessPolicy, BodyTypes
from contract.http.answers import GUARD_RESPONSES, problem
from contract.http.body_limit import BodyLimit, RouteLimit
from contract.http.serving import ConnectionLimits, EmbeddedHttpServer
from contract.networks import parse_networks

IMAGE_NAME = wire.IMAGE_NAME_PATTERN


class CommandRequest(BaseModel):
    charger_id: str = Field(min_length=1)
    action: wire.OperatorAction
    arguments: dict[str, Any] = {}
    expires_in_s: float = Field(3600.0, gt=0, le=30 * 86400)


class CodeOrder(BaseModel):
    valid_for_s: float = Field(86400.0, ge=60, le=30 * 86400)
    replaces_identity: bool = Field(
        False, description="The edge has an identity already, and this code may replace it."
    )


def create_cloud_api(
    settings: CloudSettings,
    engine: Engine,
    signing_key: Ed25519PrivateKey,
    aggregator: Aggregator | None = None,
) -> FastAPI:
    """`aggregator` (when running) is told when an edge has new desired state to send."""
    api = FastAPI(
        title="ocpp-cloud API",
        description="The fleet: edges, chargers, transactions; cards, firmware, commands; "
        "enrolling edges.",
        version="1",
        responses=GUARD_RESPONSES,
    )
    enrollment = Enrollment(settings, engine, public_key_text(signing_key))

    @api.exception_handler(DesiredStateError)
    async def refused_desired_state(request: Request, error: DesiredStateError) -> JSONResponse:
        # A card list, command or offer the store refuses as it stands: the caller's to fix.
        return JSONResponse({"detail": str(error)}, status_code=422)

    # The token is checked before any route (protect_cloud_api); these routes name edges.
    routes = APIRouter(
        dependencies=[Depends(_valid_edge_id)],
        responses={422: problem("Bad arguments, or an edge id that cannot be one")},
    )

    def tell(edge_id: str) -> None:
        if aggregator is not None:
            aggregator.want_desired_state_sent(edge_id)

    @routes.get("/api/stats", summary="This replica: its MQTT link and what it stored")
    async def stats() -> dict[str, Any]:
        return {
            "replica": settings.mqtt.effective_client_id(),
            "connected": aggregator.connected if aggregator else False,
            "batches_stored": aggregator.batches_stored if aggregator else 0,
        }

    async def known_edge(edge_id: str) -> fleet.EdgeView:
        edges = await asyncio.to_thread(fleet.list_edges, engine, datetime.now(UTC))
        for edge in edges:
            if edge.edge_id == edge_id:
                return edge
        raise HTTPException(404, f"no edge {edge_id} has been in touch with this cloud")

    @routes.get("/api/edges", summary="Edges: presence, sync lag, backlog, version")
    async def list_edges() -> list[dict[str, Any]]:
        edges = await asyncio.to_thread(fleet.list_edges, engine, datetime.now(UTC))
        return [_view(edge) | {"online": edge.online} for edge in edges]

    @routes.get("/api/edges/{edge_id}", summary="One edge")
    async def get_edge(edge_id: str) -> dict[str, Any]:
        edge = await known_edge(edge_id)
        return _view(edge) | {"online": edge.online}

    @routes.get("/api/chargers", summary="Chargers and their connectors, of one edge or all")
    async def list_chargers(edge: str | None = None) -> list[dict[str, Any]]:
        return [_view(c) for c in await asyncio.to_thread(fleet.list_chargers, engine, edge)]

    @routes.get("/api/transactions", summary="Transactions, newest first, energy in Wh")
    async def list_transactions(
        edge: str | None = None, limit: int = Query(100, ge=1, le=10_000)
    ) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(fleet.list_transactions, engine, edge, limit)
        return [_view(row) | {"running": row.running} for row in rows]

    @routes.get("/api/rejections", summary="Payloads refused, per edge (or topic) and reason")
    async def list_rejections() -> list[dict[str, Any]]:
        return [_view(row) for row in await asyncio.to_thread(fleet.rejection_counts, engine)]

    @routes.get(
        "/api/edges/{edge_id}/cards",
        summary="An edge's card list, latest version (its ETag: the version)",
    )
    async def get_cards(edge_id: str, response: Response) -> dict[str, Any]:
        current = await asyncio.to_thread(desired.current_card_list, engine, edge_id)
        edge = await known_edge(edge_id)
        version, cards = current or (0, [])
        response.headers["ETag"] = f'"{version}"'
        return {
            "edge_id": edge_id,
            "version": version,
            "applied_version": edge.cards_version_reported,
            "cards": [card.model_dump() for card in cards],
        }

    @routes.get("/api/edges/{edge_id}/commands", summary="An edge's commands and their results")
    async def list_commands(edge_id: str) -> list[dict[str, Any]]:
        await known_edge(edge_id)
        return await asyncio.to_thread(desired.list_commands, engine, edge_id)

    @routes.put(
        "/api/edges/{edge_id}/cards",
        summary="Set an edge's card list (a new version)",
        description='With `If-Match: "VERSION"` (the ETag of GET) or `expected_version`, '
        "the list is set only if the latest is still that version (0: none yet); else 412 "
        "with the version now and the cards changed since, and nothing is stored.",
        responses={412: problem("The list changed since the version given")},
    )
    async def set_cards(
        edge_id: str,
        cards: list[wire.CardEntry],
        request: Request,
        expected_version: int | None = Query(None, ge=0, le=wire.INT32_MAX),
        if_match: str | None = Header(None, max_length=64),
    ) -> Any:
        expected = _expected_version(if_match, expected_version)
        try:
            version = await asyncio.to_thread(
                functools.partial(
                    desired.set_card_list,
                    engine,
                    edge_id,
                    cards,
                    expected_version=expected,
                    actor=_actor(request),
                )
            )
        except desired.CardListOutdated as outdated:
            return JSONResponse(
                {
                    "detail": str(outdated),
                    "version": outdated.current,
                    "changed": [card.model_dump() for card in outdated.changed],
                },
                status_code=412,
                headers={"ETag": f'"{outdated.current}"'},
            )
        tell(edge_id)
        await asyncio.to_thread(
            functools.partial(
                audit_log.record_for_edge,
                engine,
                at=datetime.now(UTC),
                actor=_actor(request),
                edge_id=edge_id,
                action="card.list",
                target=edge_id,
                detail={"version": version, "cards": len(cards)},
            )
        )
        return JSONResponse(
            {"edge_id": edge_id, "version": version, "cards": len(cards)},
            headers={"ETag": f'"{version}"'},
        )

    @routes.put(
        "/api/firmware/{name}",
        summary="Upload a firmware image (the raw bytes); its manifest is signed",
    )
    async def upload_firmware(
        name: str,
        request: Request,
        version: str,
        target: Annotated[
            list[str], Query(description="VENDOR/MODEL (shell patterns), once per target")
        ],
    ) -> dict[str, Any]:
        if not _safe_image_name(name):
            raise HTTPException(422, f"{name!r} is not a firmware image name")
        try:
            targets = [parse_target(text) for text in target]
        except ValueError as error:
            raise HTTPException(422, str(error)) from error
        stored = await _receive_image(request, settings.firmware.directory, settings)
        registered = ""
        try:
            manifest = make_manifest(
                name, version, targets, stored.size, stored.sha256, signing_key
            )
            text, signature = sign_manifest(signing_key, manifest)
            image = await asyncio.to_thread(
                desired.add_firmware_image, engine, manifest, text, signature, str(stored.path)
            )
            registered = image.path
        except (FirmwareError, StoreError) as error:
            raise HTTPException(422, str(error)) from error
        finally:
            await asyncio.to_thread(stored.keep_if, registered)
        return {
            "name": image.name,
            "version": image.version,
            "size": image.size,
            "sha256": image.sha256,
            "manifest": image.manifest,
        }

    @routes.get("/api/firmware", summary="Firmware images, with their manifests' targets")
    async def list_firmware() -> list[dict[str, Any]]:
        return await asyncio.to_thread(desired.list_firmware_images, engine)

    @routes.post("/api/edges/{edge_id}/firmware/{name}", summary="Offer an image to an edge")
    async def offer_firmware(edge_id: str, name: str, force: bool = False) -> dict[str, Any]:
        await known_edge(edge_id)
        try:
            await asyncio.to_thread(desired.offer_to, engine, edge_id, name, force=force)
        except StoreError as error:
            known = await asyncio.to_thread(desired.firmware_image, engine, name)
            status = 404 if known is None else 422
            raise HTTPException(status, str(error)) from error
        tell(edge_id)
        return {"edge_id": edge_id, "image": name, "status": "offered", "forced": force}

    @routes.get(
        "/api/edges/{edge_id}/firmware",
        summary="An edge's firmware: images offered and their stage; each charger's install",
    )
    async def edge_firmware(edge_id: str) -> dict[str, Any]:
        await known_edge(edge_id)
        return await asyncio.to_thread(desired.firmware_overview, engine, edge_id)

    @routes.post("/api/edges/{edge_id}/commands", summary="An operator command for an edge")
    async def create_command(
        edge_id: str, command: CommandRequest, request: Request
    ) -> dict[str, Any]:
        await known_edge(edge_id)
        expires_at = datetime.now(UTC) + timedelta(seconds=command.expires_in_s)
        try:
            created = await asyncio.to_thread(
                functools.partial(
                    desired.create_command,
                    engine,
                    edge_id,
                    command.charger_id,
                    command.action,
                    command.arguments,
                    expires_at,
                    actor=_actor(request),
                )
            )
        except StoreError as error:
            raise HTTPException(422, str(error)) from error
        tell(edge_id)
        # In the edge's fleet's audit log, beside the commands sent from the web view.
        await asyncio.to_thread(
            functools.partial(
                audit_log.record_for_edge,
                engine,
                at=datetime.now(UTC),
                actor=_actor(request),
                edge_id=edge_id,
                action=f"command.{command.action}",
                target=f"{edge_id}/{command.charger_id}",
                detail={"command_id": created.id, "arguments": created.arguments},
            )
        )
        return created.model_dump()

    @routes.post(
        "/api/edges/{edge_id}/enrollment-codes",
        summary="A one-time code for an edge to enroll with (shown once)",
    )
    async def create_enrollment_code(edge_id: str, order: CodeOrder) -> dict[str, Any]:
        valid_for = timedelta(seconds=order.valid_for_s)
        try:
            new = await asyncio.to_thread(
                enrollment.create_code, edge_id, valid_for, order.replaces_identity
            )
        except EnrollmentNotConfigured as error:
            raise HTTPException(503, str(error)) from error
        except IdentityExists as error:
            raise HTTPException(409, str(error)) from error
        except EnrollmentError as error:
            raise HTTPException(422, str(error)) from error
        return dataclasses.asdict(new)

    _add_sync_routes(routes, engine, aggregator)
    _add_alert_routes(routes, engine, aggregator)

    def repricing_queued() -> None:
        if aggregator is not None:
            aggregator.repricer.wake()

    add_session_routes(routes, settings.sessions, engine, repricing_queued)
    add_campaign_routes(routes, engine, tell, _actor)
    api.include_router(routes)
    api.include_router(_enrollment_routes(enrollment))
    _check_edge_ids(api)
    if settings.web.enabled:
        # Imported here: the templates and their libraries load for a served view only.
        from cloud.web.app import create_web_router, install_error_pages

        web = create_web_router(
            settings.web,
            engine,
            on_desired_state=tell,
            sessions=settings.sessions,
            firmware=settings.firmware,
            signing_key=signing_key,
            cards=settings.cards,
            alerts=settings.alerts,
            on_repricing=repricing_queued,
        )
        api.include_router(web)
        install_error_pages(api)
    return api


def _add_sync_routes(routes: APIRouter, engine: Engine, aggregator: Aggregator | None) -> None:
    """What the sync's hardening adds: quarantined events and the inbound queue."""

    @routes.get(
        "/api/edges/{edge_id}/quarantine",
        summary="An edge's events the cloud will never store, newest first, with why",
    )
    async def list_quarantine(
        edge_id: str, limit: int = Query(100, ge=1, le=10_000)
    ) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(fleet.list_quarantined, engine, edge_id, limit)
        if not rows:
            edges = await asyncio.to_thread(fleet.list_edges, engine, datetime.now(UTC))
            if edge_id not in {edge.edge_id for edge in edges}:
                raise HTTPException(404, f"no edge {edge_id} has been in touch with this cloud")
        return [_view(row) for row in rows]

    @routes.get(
        "/api/stats/inbound",
        summary="This replica's queue of edges' messages: waiting, handled, dropped",
    )
    async def inbound_stats() -> dict[str, Any]:
        if aggregator is None:
            return {"queued": 0, "handled": 0, "failed": 0, "dropped": {}, "refused_topics": 0}
        stats = aggregator.inbound
        return {
            "queued": stats.queued,
            "handled": stats.handled,
            "failed": stats.failed,
            "dropped": dict(stats.dropped),
            "dropped_by_edge": dict(stats.dropped_by_edge.most_common(20)),
            "refused_topics": aggregator.refused_topics,
            "sessions": aggregator.sessions,
        }


def _expected_version(if_match: str | None, expected_version: int | None) -> int | None:
    """The version a card list was made from: If-Match's ("3", W/"3", 3; * is none) or
    the query's; 422 when they disagree or If-Match names no version."""
    from_header = None
    if if_match is not None and if_match.strip() != "*":
        text = if_match.strip().removeprefix("W/").strip('"')
        if not text.isdigit() or len(text) > 10:
            raise HTTPException(422, f"If-Match {if_match!r} is not a card list version")
        from_header = int(text)
    if from_header is not None and expected_version not in (None, from_header):
        raise HTTPException(422, "If-Match and expected_version name different versions")
    return from_header if from_header is not None else expected_version


def _actor(request: Request) -> str:
    """Who asks, as the access guard let them in: with the bearer token, or as a client
    on this machine (api.trust_loopback)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return "token" if scheme.lower() == "bearer" and token.strip() else "loopback"


def _add_alert_routes(routes: APIRouter, engine: Engine, aggregator: Aggregator | None) -> None:
    """Alerts (cloud/alerts.py) and each edge's presence over time."""

    @routes.get("/api/alerts", summary="Alerts, newest first: open, or all with cleared ones")
    async def list_alerts(
        open_only: bool = Query(False, alias="open", description="Only alerts not cleared."),
        edge: str | None = None,
        kind: AlertKind | None = None,
        limit: int = Query(100, ge=1, le=1000),
        before: int | None = Query(None, ge=1, description="An id: the page after it."),
    ) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(
            functools.partial(
                alerts_store.list_alerts,
                engine,
                open_only=open_only,
                edge_id=edge,
                kind=kind,
                limit=limit,
                before=before,
            )
        )
        return [_view(row) | {"open": row.open} for row in rows]

    @routes.get(
        "/api/edges/{edge_id}/presence",
        summary="An edge's presence now and each change of it, newest first",
    )
    async def edge_presence(
        edge_id: str,
        limit: int = Query(100, ge=1, le=1000),
        before: int | None = Query(None, ge=1, description="An id: the page after it."),
    ) -> dict[str, Any]:
        edges = await asyncio.to_thread(fleet.list_edges, engine, datetime.now(UTC))
        edge = next((edge for edge in edges if edge.edge_id == edge_id), None)
        if edge is None:
            raise HTTPException(404, f"no edge {edge_id} has been in touch with this cloud")
        changes = await asyncio.to_thread(presence.presence_history, engine, edge_id, limit, before)
        return {
            "edge_id": edge_id,
            "state": edge.state,
            "since": edge.state_since,
            "changes": [
                {"id": change_id, "online": change.online, "at": change.at}
                for change_id, change in changes
            ],
        }

    @routes.get("/api/stats/repricing", summary="This replica's re-pricing of sessions")
    async def repricing_stats() -> dict[str, Any]:
        if aggregator is None:
            return {}
        return dataclasses.asdict(aggregator.repricer.stats)

    @routes.get("/api/stats/alerts", summary="This replica's alerts engine and webhook")
    async def alert_stats() -> dict[str, Any]:
        if aggregator is None:
            return {}
        return dataclasses.asdict(aggregator.alerts.stats) | {
            "webhook": aggregator.alerts.webhook_on
        }


def _check_edge_ids(api: FastAPI) -> None:
    """Every `/api/edges/{edge_id}...` route takes only an edge id (contract/protocol.py,
    one pattern): anything else (`+`, `#`, `/` percent-encoded, ...) is answered 422 with
    a sentence before a route runs, so it never reaches the store or an MQTT topic."""

    @api.middleware("http")
    async def edge_id_in_path(request: Request, call_next: Any) -> Any:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        parts = raw_path.decode("latin-1").split("?", 1)[0].split("/")
        if len(parts) > 3 and parts[1:3] == ["api", "edges"]:
            edge_id = urllib.parse.unquote(parts[3])
            if not wire.is_edge_id(edge_id):
                return JSONResponse({"detail": str(wire.InvalidEdgeId(edge_id))}, status_code=422)
        return await call_next(request)

    @api.exception_handler(wire.InvalidEdgeId)
    async def invalid_edge_id(request: Request, error: wire.InvalidEdgeId) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @api.exception_handler(desired.DesiredStateError)
    async def desired_state_refused(
        request: Request, error: desired.DesiredStateError
    ) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)


def _enrollment_routes(enrollment: Enrollment) -> APIRouter:
    routes = APIRouter()

    @routes.post("/api/enroll/code", summary="The edge id a code is for (the code stays unused)")
    async def code_for(query: CodeQuery, request: Request) -> CodeAnswer:
        with _answers_for_enrollment():
            return await asyncio.to_thread(enrollment.edge_for_code, query.code, _client(request))

    @routes.post("/api/enroll", summary="Use a code: a certificate for the edge's CSR")
    async def enroll(body: EnrollmentRequest, request: Request) -> EnrollmentAnswer:
        with _answers_for_enrollment():
            client = _client(request)
            return await asyncio.to_thread(enrollment.enroll, body.code, body.csr, client)

    return routes


@contextlib.contextmanager
def _answers_for_enrollment() -> Iterator[None]:
    """Enrollment's refusals as HTTP answers with the sentence in `detail`."""
    try:
        yield
    except CodeRefused as error:
        raise HTTPException(403, str(error)) from error
    except CertificateRequestRefused as error:
        raise HTTPException(422, str(error)) from error
    except IdentityExists as error:
        raise HTTPException(409, str(error)) from error
    except TooManyFailures as error:
        retry_after = {"Retry-After": str(math.ceil(error.retry_after_s))}
        raise HTTPException(429, str(error), headers=retry_after) from error
    except EnrollmentNotConfigured as error:
        raise HTTPException(503, str(error)) from error


def _client(request: Request) -> str:
    # The real client: a trusted proxy's X-Forwarded-For is read by AccessGuard.
    return request.client.host if request.client else "unknown"


async def _receive_image(request: Request, directory: Path, settings: CloudSettings) -> StoredImage:
    """The request's body, streamed to disk and hashed off the event loop, refused (413)
    beyond `firmware.max_image_bytes`: an upload never sits whole in memory."""
    limit = settings.firmware.max_image_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the image is larger than firmware.max_image_bytes ({limit})")
    upload = await asyncio.to_thread(ImageUpload, directory, limit)
    try:
        async for data in request.stream():
            if data:
                await asyncio.to_thread(upload.write, data)
        return await asyncio.to_thread(upload.finish)
    except ImageTooLarge as error:
        raise HTTPException(413, str(error)) from error
    except FirmwareError as error:
        raise HTTPException(422, f"the body is the image's bytes: {error}") from error
    finally:
        await asyncio.to_thread(upload.discard)


async def _valid_edge_id(request: Request) -> None:
    """An edge id in a path becomes an MQTT topic level: refuse one that cannot be one
    (`+`, `#`, `/`), before any route uses it."""
    edge_id = request.path_params.get("edge_id")
    if edge_id is not None and re.fullmatch(wire.EDGE_ID_PATTERN, edge_id) is None:
        raise HTTPException(
            422,
            f"{edge_id!r} is not an edge id: 1-64 letters, digits, '.', '_', '-', "
            "starting with a letter or digit",
        )


# Served to anyone: enrolling (the code is the credential), what the API is, and the
# fleet web view, whose users sign in (cloud/web/auth.py checks every page).
OPEN_ROUTES = (
    re.escape(CODE_PATH),
    re.escape(ENROLL_PATH),
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/web(/.*)?",
)
FIRMWARE_UPLOAD = r"/api/firmware/[^/]+"
# The new campaign form, which may carry an image (multipart): the image's limit and room
# for the form's other fields.
CAMPAIGN_FORM = r"/web/campaigns"
CAMPAIGN_FORM_FIELDS_BYTES = 1_048_576
CARD_LIST_UPLOAD = r"/api/edges/[^/]+/cards"
CARD_IMPORT = "/web/card-import"
FORM_ROOM_BYTES = 65_536
# A card list may fill every part an edge takes; the store says why one is too large.
MAX_CARD_LIST_BODY_BYTES = wire.CARD_LIST_PART_BYTES * wire.MAX_CARD_LIST_PARTS


def protect_cloud_api(
    api: FastAPI,
    settings: ApiSettings,
    max_image_bytes: int,
    max_card_import_bytes: int = CardSettings().max_import_bytes,
) -> ASGIApp:
    """The API behind its access checks and body limits: what the server runs."""
    policy = AccessPolicy.build(
        token=settings.token,
        trust_loopback=settings.trust_loopback,
        bind_host=settings.host,
        allowed_hosts=settings.allowed_hosts,
        trusted_proxies=settings.trusted_proxies,
        open_routes=OPEN_ROUTES,
        body_types=[
            BodyTypes("PUT", re.compile(FIRMWARE_UPLOAD), frozenset({"application/octet-stream"}))
        ],
    )
    limits = [
        RouteLimit.of("PUT", FIRMWARE_UPLOAD, max_image_bytes),
        RouteLimit.of("POST", CAMPAIGN_FORM, max_image_bytes + CAMPAIGN_FORM_FIELDS_BYTES),
        RouteLimit.of("PUT", CARD_LIST_UPLOAD, MAX_CARD_LIST_BODY_BYTES),
        # The web view's CSV import: the file, and room for the form around it.
        RouteLimit.of("POST", re.escape(CARD_IMPORT), max_card_import_bytes + FORM_ROOM_BYTES),
        RouteLimit.of("POST", re.escape(CODE_PATH), settings.max_enrollment_body_bytes),
        RouteLimit.of("POST", re.escape(ENROLL_PATH), settings.max_enrollment_body_bytes),
    ]
    return AccessGuard(BodyLimit(api, settings.max_body_bytes, limits), policy)


def cloud_api_server(api: FastAPI, settings: CloudSettings) -> EmbeddedHttpServer:
    served = settings.api
    limits = ConnectionLimits.of(served, parse_networks(served.trusted_proxies))
    app = protect_cloud_api(
        api, served, settings.firmware.max_image_bytes, settings.cards.max_import_bytes
    )
    return EmbeddedHttpServer(app, served.host, served.port, limits, "cloud API")


def _safe_image_name(name: str) -> bool:
    return re.fullmatch(IMAGE_NAME, name) is not None


def _view(row: Any) -> dict[str, Any]:
    # FastAPI turns the datetimes into ISO-8601 text.
    return dataclasses.asdict(row)
