"""The OCPP 1.6J WebSocket server: `ws://HOST:PORT/<path_prefix>/<charger_id>`.

The handshake is where a charger is turned away: a wrong path, an id outside the
safe character set, no `ocpp1.6` subprotocol, or (by setting) an unknown charger,
each with an HTTP status and a sentence saying why. A charger that connects again
replaces its old connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from sqlite_utils import Database
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from edge import log_context
from edge.clock import utc_now
from edge.events import ChargerConnection
from edge.ocpp.handlers import ChargerSession
from edge.ocpp.security import (
    basic_credentials,
    certificate_common_name,
    password_matches,
    server_tls_context,
)
from edge.ocpp.session import SiteContext
from edge.store import charger_reports, chargers
from edge.sync import protocol as wire

log = logging.getLogger(__name__)

SUBPROTOCOL = Subprotocol("ocpp1.6")
# OCPP's identity is a CiString; a narrow set keeps ids safe in paths, logs and topics.
CHARGER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,47}")


class OcppServer:
    def __init__(self, context: SiteContext) -> None:
        self.context = context
        self.settings = context.settings
        self.sessions: dict[str, ChargerSession] = {}
        self._closing_replaced: set[asyncio.Task[None]] = set()
        self.port: int | None = None

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Server]:
        """Listen until the block ends, then close every connection (1001 going away)."""
        async with serve(
            self._handle,
            self.settings.host,
            self.settings.port,
            subprotocols=[SUBPROTOCOL],
            process_request=self._check_handshake,
            compression="deflate" if self.settings.websocket_compression else None,
            ssl=server_tls_context(self.settings),
            ping_interval=self.settings.websocket_ping_interval,
            ping_timeout=self.settings.websocket_ping_interval,
            close_timeout=5,
            # Per-connection bounds ([ocpp.limits]); a bigger frame closes with 1009.
            max_size=self.settings.limits.max_frame_bytes,
            max_queue=self.settings.limits.max_queued_frames,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info(
                "OCPP server listening on ws://%s:%s%s/<charger_id>",
                self.settings.host,
                self.port,
                self.settings.path_prefix,
            )
            yield server

    def charger_id_of(self, path: str) -> str | None:
        prefix = self.settings.path_prefix.rstrip("/") + "/"
        route = urlsplit(path).path
        if not route.startswith(prefix):
            return None
        return unquote(route[len(prefix) :])

    async def _check_handshake(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        charger_id = self.charger_id_of(request.path)
        if charger_id is None:
            return _refuse(
                connection,
                HTTPStatus.NOT_FOUND,
                f"chargers connect to {self.settings.path_prefix}/<charger_id>",
            )
        if not CHARGER_ID.fullmatch(charger_id):
            return _refuse(
                connection,
                HTTPStatus.BAD_REQUEST,
                "a charger id is 1-48 characters of A-Z a-z 0-9 . _ : - "
                "starting with a letter or digit",
            )
        log_context.CHARGER_ID.set(charger_id)  # this connection's task: refusals say whose
        offered = _offered_subprotocols(request.headers)
        if SUBPROTOCOL not in offered:
            return _refuse(
                connection,
                HTTPStatus.BAD_REQUEST,
                f"this central system speaks OCPP 1.6J: request the WebSocket subprotocol "
                f"'{SUBPROTOCOL}' (offered: {', '.join(offered) or 'none'})",
            )
        refused = await self._check_identity(connection, request, charger_id)
        if refused is not None:
            return refused
        mode, now = self.settings.unknown_chargers, utc_now()

        def admit(db: Database) -> str | None:
            row = chargers.get_charger(db, charger_id)
            if row is not None:
                return str(row["registration"])
            if mode == "reject":
                return None
            return chargers.ensure_charger(db, charger_id, mode, now)

        if await self.context.store.run(admit) is None:
            log.warning("refused unknown charger %s (unknown_chargers = reject)", charger_id)
            return _refuse(
                connection,
                HTTPStatus.FORBIDDEN,
                f"charger {charger_id} is not registered at this site",
            )
        return None

    async def _check_identity(
        self, connection: ServerConnection, request: Request, charger_id: str
    ) -> Response | None:
        """Security profiles: Basic auth (1, 2) or the client certificate's CN (3)."""
        profile = self.settings.security_profile
        if profile == 3:
            peer = connection.transport.get_extra_info("peercert")
            common_name = certificate_common_name(peer)
            if common_name != charger_id:
                await self._record_refusal(
                    charger_id, f"client certificate CN {common_name!r} is not the charger id"
                )
                return _refuse(
                    connection,
                    HTTPStatus.FORBIDDEN,
                    "the client certificate's CN must be the charger id",
                )
        elif profile in (1, 2):
            credentials = basic_credentials(request.headers.get("Authorization"))
            stored = await self.context.store.run(
                lambda db: (chargers.get_charger(db, charger_id) or {}).get("password_hash")
            )
            valid = (
                credentials is not None
                and credentials[0] == charger_id
                and await asyncio.to_thread(password_matches, credentials[1], stored)
            )
            if not valid:
                await self._record_refusal(charger_id, "wrong or missing Basic auth credentials")
                response = _refuse(
                    connection,
                    HTTPStatus.UNAUTHORIZED,
                    f"security profile {profile}: HTTP Basic auth with the charger id and its "
                    "password is required",
                )
                response.headers["WWW-Authenticate"] = 'Basic realm="ocpp-edge"'
                return response
        return None

    async def _record_refusal(self, charger_id: str, reason: str) -> None:
        log.warning("refused %s at the handshake: %s", charger_id, reason)
        now = utc_now()

        def record(db: Database) -> None:
            if chargers.get_charger(db, charger_id) is not None:
                charger_reports.record_security_event(
                    db, charger_id, "EdgeRefusedConnection", reason, now, now
                )

        await self.context.store.run(record)

    async def _handle(self, connection: ServerConnection) -> None:
        charger_id = self.charger_id_of(connection.request.path)  # type: ignore[union-attr]
        assert charger_id is not None  # the handshake checked it
        log_context.CHARGER_ID.set(charger_id)  # the connection's own task: all it logs
        session = ChargerSession(charger_id, connection, self.context)
        store, now = self.context.store, utc_now()

        outbox = self.context.outbox

        def connect(db: Database) -> str:
            chargers.mark_connected(db, charger_id, now)
            outbox.append(db, wire.ChargerConnection(charger_id=charger_id, connected=True), now)
            row = chargers.get_charger(db, charger_id)
            assert row is not None
            return str(row["registration"])

        session.registration = await store.run(connect)
        previous = self.sessions.get(charger_id)
        self.sessions[charger_id] = session
        if previous is not None:
            log.info("%s connected again; closing its previous connection", charger_id)
            task = asyncio.create_task(
                previous._connection.close(1001, "replaced by a new connection")
            )
            self._closing_replaced.add(task)
            task.add_done_callback(self._closing_replaced.discard)
        log.info("%s connected (%s)", charger_id, session.registration)
        self.context.events.publish(ChargerConnection(charger_id, connected=True))
        try:
            await session.start()
        finally:
            if self.sessions.get(charger_id) is session:
                del self.sessions[charger_id]
                gone_at = utc_now()

                def disconnect(db: Database) -> None:
                    chargers.mark_disconnected(db, charger_id, gone_at)
                    gone = wire.ChargerConnection(charger_id=charger_id, connected=False)
                    outbox.append(db, gone, gone_at)

                await store.run(disconnect)
                log.info("%s disconnected", charger_id)
                self.context.events.publish(ChargerConnection(charger_id, connected=False))


def _offered_subprotocols(headers: Headers) -> list[str]:
    return [
        protocol.strip()
        for header in headers.get_all("Sec-WebSocket-Protocol")
        for protocol in header.split(",")
        if protocol.strip()
    ]


def _refuse(connection: ServerConnection, status: HTTPStatus, reason: str) -> Response:
    return connection.respond(status, reason + "\n")
