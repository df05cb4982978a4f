"""The OCPP 1.6J WebSocket server: `ws://HOST:PORT/<path_prefix>/<charger_id>`.

The handshake is where a charger is turned away: a wrong path, an id outside the
safe character set, no `ocpp1.6` subprotocol, (by setting) an unknown charger or one
pending charger too many, wrong credentials, or a peer holding more than its share of
the port (edge.ocpp.admission), each with an HTTP status and a sentence saying why.
A charger that connects again replaces its old connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from sqlite_utils import Database
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from edge import log_context
from edge.clock import utc_now_text
from edge.events import ChargerConnection
from edge.ocpp.admission import Admission, GuardedConnection, Refusal, connection_class
from edge.ocpp.connected import ConnectedChargers
from edge.ocpp.handlers import ChargerSession
from edge.ocpp.security import (
    PasswordChecker,
    Verdict,
    basic_credentials,
    certificate_common_name,
    server_tls_context,
)
from edge.site import SiteContext
from edge.store import charger_reports, chargers

log = logging.getLogger(__name__)

SUBPROTOCOL = Subprotocol("ocpp1.6")
# OCPP's identity is a CiString; a narrow set keeps ids safe in paths, logs and topics.
CHARGER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,47}")
# Seconds a replaced connection's close may take; then it is cut, read or not (as
# websockets' own close_timeout, once its send buffer has drained).
CLOSE_TIMEOUT = 5.0
# Bytes waiting to be sent above which a connection's sends wait (websockets' default).
WRITE_LIMIT = 2**15
# A refused handshake of a known charger is recorded as its security event at most this
# often per minute (the count is logged regardless), so refusals cannot fill the disk.
RECORDED_REFUSALS_PER_MINUTE = 10
# Of a refused subprotocol list, this many names are echoed back, each cut to this length.
ECHOED_SUBPROTOCOLS = 5
ECHOED_LENGTH = 32
# At the stop, chargers get this long to answer the closing handshake; then it is cut.
CLOSE_CONNECTIONS_SECONDS = 1.0


class OcppServer:
    """Serves the site's chargers: sessions are built with `context` and registered in
    `connected`, the registry the site's features see as `context.chargers`."""

    def __init__(self, context: SiteContext, connected: ConnectedChargers) -> None:
        self.context = context
        self.settings = context.settings
        self.connected = connected
        self.admission = Admission(self.settings)
        self.passwords = PasswordChecker(self.settings)
        self._closing_replaced: set[asyncio.Task[None]] = set()
        self._recorded_refusals: dict[str, deque[float]] = {}
        self.port: int | None = None

    @property
    def sessions(self) -> Mapping[str, ChargerSession]:
        return self.connected.sessions

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
            # Counted per source address from the first moment (edge/ocpp/admission.py).
            create_connection=connection_class(self.admission),
            open_timeout=self.settings.handshake_timeout,
            write_limit=WRITE_LIMIT,
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
            try:
                yield server
            finally:
                self.passwords.close()

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
            return self._refuse(
                connection,
                HTTPStatus.NOT_FOUND,
                Refusal.BAD_PATH,
                f"chargers connect to {self.settings.path_prefix}/<charger_id>",
            )
        if not CHARGER_ID.fullmatch(charger_id):
            return self._refuse(
                connection,
                HTTPStatus.BAD_REQUEST,
                Refusal.BAD_CHARGER_ID,
                "a charger id is 1-48 characters of A-Z a-z 0-9 . _ : - "
                "starting with a letter or digit",
            )
        log_context.CHARGER_ID.set(charger_id)  # this connection's task: refusals say whose
        offered = _offered_subprotocols(request.headers)
        if SUBPROTOCOL not in offered:
            return self._refuse(
                connection,
                HTTPStatus.BAD_REQUEST,
                Refusal.NO_SUBPROTOCOL,
                f"this central system speaks OCPP 1.6J: request the WebSocket subprotocol "
                f"'{SUBPROTOCOL}' (offered: {_echoed(offered)})",
            )
        refused = await self._check_identity(connection, request, charger_id)
        if refused is not None:
            return refused
        mode, now = self.settings.unknown_chargers, utc_now_text()
        limit = self.settings.max_pending_chargers
        registration = await self.context.store.run(
            lambda db: chargers.admit_charger(db, charger_id, mode, limit, now)
        )
        if registration is None and mode == "reject":
            return self._refuse(
                connection,
                HTTPStatus.FORBIDDEN,
                Refusal.UNKNOWN_CHARGER,
                f"charger {charger_id} is not registered at this site",
            )
        if registration is None:
            response = self._refuse(
                connection,
                HTTPStatus.SERVICE_UNAVAILABLE,
                Refusal.TOO_MANY_PENDING,
                f"{limit} chargers are already waiting for acceptance at this site "
                "(ocpp.max_pending_chargers): an operator must accept or reject some first",
            )
            response.headers["Retry-After"] = str(self.settings.boot_retry_interval)
            return response
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
                reason = f"client certificate CN {common_name!r} is not the charger id"
                await self._record_refusal(charger_id, reason)
                return self._refuse(
                    connection,
                    HTTPStatus.FORBIDDEN,
                    Refusal.WRONG_CERTIFICATE,
                    "the client certificate's CN must be the charger id",
                    detail=f"{charger_id}: {reason}",
                )
        elif profile in (1, 2):
            return await self._check_password(connection, request, charger_id)
        return None

    async def _check_password(
        self, connection: ServerConnection, request: Request, charger_id: str
    ) -> Response | None:
        address = _address_of(connection)
        # Refusals that cost neither a look-up nor a hash come first.
        waiting = self.passwords.backoff.remaining(address)
        if waiting:
            response = self._refuse(
                connection,
                HTTPStatus.TOO_MANY_REQUESTS,
                Refusal.BACKING_OFF,
                f"too many failed logins from {address}: try again in {waiting:.0f} s",
            )
            response.headers["Retry-After"] = str(max(1, round(waiting)))
            return response
        credentials = basic_credentials(request.headers.get("Authorization"))
        verdict = Verdict.WRONG
        if credentials is not None:
            stored = await self.context.store.run(
                lambda db: (chargers.get_charger(db, charger_id) or {}).get("password_hash")
            )
            user, password = credentials
            # A user name that is not the charger id is checked like an unknown charger.
            checked = await self.passwords.check(
                address, password if user == charger_id else None, stored
            )
            verdict = checked.verdict
            if verdict in (Verdict.BUSY, Verdict.BACKING_OFF):
                response = self._refuse(
                    connection,
                    HTTPStatus.SERVICE_UNAVAILABLE
                    if verdict == Verdict.BUSY
                    else HTTPStatus.TOO_MANY_REQUESTS,
                    Refusal.PASSWORD_CHECKS_BUSY
                    if verdict == Verdict.BUSY
                    else Refusal.BACKING_OFF,
                    "too many logins are being checked: try again in a moment",
                )
                response.headers["Retry-After"] = str(max(1, round(checked.retry_after)))
                return response
        if verdict == Verdict.MATCH:
            return None
        reason = "wrong or missing Basic auth credentials"
        await self._record_refusal(charger_id, reason)
        response = self._refuse(
            connection,
            HTTPStatus.UNAUTHORIZED,
            Refusal.WRONG_CREDENTIALS,
            f"security profile {self.settings.security_profile}: HTTP Basic auth with the "
            "charger id and its password is required",
            detail=f"{charger_id} from {address}: {reason}",
        )
        response.headers["WWW-Authenticate"] = 'Basic realm="ocpp-edge"'
        return response

    def _refuse(
        self,
        connection: ServerConnection,
        status: HTTPStatus,
        reason: Refusal,
        sentence: str,
        *,
        detail: str | None = None,
    ) -> Response:
        """The answer refusing this handshake; counted, and logged at a bounded rate."""
        if isinstance(connection, GuardedConnection):
            connection.end_handshake()
        self.admission.refusals.record(reason, detail or f"{_address_of(connection)}: {sentence}")
        return connection.respond(status, sentence + "\n")

    async def _record_refusal(self, charger_id: str, reason: str) -> None:
        """A security event for a known charger, at most RECORDED_REFUSALS_PER_MINUTE."""
        if not self._may_record_refusal(charger_id):
            return
        now = utc_now_text()

        def record(db: Database) -> None:
            if chargers.get_charger(db, charger_id) is not None:
                charger_reports.record_security_event(
                    db, charger_id, "EdgeRefusedConnection", reason, now, now
                )

        await self.context.store.run(record)

    def _may_record_refusal(self, charger_id: str) -> bool:
        now = time.monotonic()
        recent = self._recorded_refusals.setdefault(charger_id, deque())
        while recent and now - recent[0] > 60:
            recent.popleft()
        if len(recent) >= RECORDED_REFUSALS_PER_MINUTE:
            return False
        recent.append(now)
        if len(self._recorded_refusals) > 1000:  # random ids must not grow it for ever
            for other, times in list(self._recorded_refusals.items()):
                if not times or now - times[-1] > 60:
                    del self._recorded_refusals[other]
        return True

    async def _handle(self, connection: ServerConnection) -> None:
        if isinstance(connection, GuardedConnection):
            connection.end_handshake()
        charger_id = self.charger_id_of(connection.request.path)  # type: ignore[union-attr]
        assert charger_id is not None  # the handshake checked it
        log_context.CHARGER_ID.set(charger_id)  # the connection's own task: all it logs
        session = ChargerSession(charger_id, connection, self.context)
        session.registration = "pending"  # until the store says otherwise, just below
        store, now = self.context.store, utc_now_text()
        # Registered before anything is awaited: the connection it replaces, ending
        # meanwhile, must find itself replaced and not mark the charger offline.
        previous = self.connected.register(charger_id, session)
        if previous is not None:
            log.info("%s connected again; closing its previous connection", charger_id)
            task = asyncio.create_task(_close_replaced(previous.websocket))
            self._closing_replaced.add(task)
            task.add_done_callback(self._closing_replaced.discard)

        outbox = self.context.outbox

        def connect(db: Database) -> str:
            if chargers.get_charger(db, charger_id) is None:
                # Forgotten as a stale pending charger during its own handshake.
                chargers.ensure_charger(db, charger_id, "pending", now)
            chargers.mark_connected(db, charger_id, now)
            outbox.record(db, ChargerConnection(charger_id, connected=True), now)
            row = chargers.get_charger(db, charger_id)
            assert row is not None
            return str(row["registration"])

        watchdog = asyncio.create_task(
            _cut_when_not_reading(connection, self.settings.websocket_ping_interval)
        )
        try:
            session.registration = await store.run(connect)
            log.info("%s connected (%s)", charger_id, session.registration)
            self.context.events.publish(ChargerConnection(charger_id, connected=True))
            await session.start()
        finally:
            watchdog.cancel()
            if self.connected.remove(charger_id, session):
                gone_at = utc_now_text()

                def disconnect(db: Database) -> None:
                    chargers.mark_disconnected(db, charger_id, gone_at)
                    outbox.record(db, ChargerConnection(charger_id, connected=False), gone_at)

                await store.run(disconnect)
                log.info("%s disconnected", charger_id)
                self.context.events.publish(ChargerConnection(charger_id, connected=False))


async def close_connections(listener: Server) -> None:
    """Wait for the closing handshakes `listener.close()` started; cut the connections
    of chargers that do not answer within CLOSE_CONNECTIONS_SECONDS."""
    listener.close()  # idempotent: already called when the stop began
    try:
        async with asyncio.timeout(CLOSE_CONNECTIONS_SECONDS):
            await listener.wait_closed()
    except TimeoutError:
        # Not answering, or not reading what we send (a close() would wait for that).
        silent = list(listener.all_connections)
        log.warning(
            "%d charger connections not closed within %g s: cut",
            len(silent),
            CLOSE_CONNECTIONS_SECONDS,
        )
        for connection in silent:
            connection.transport.abort()


async def _cut_when_not_reading(connection: ServerConnection, every: float) -> None:
    """End a connection whose peer has read nothing for a whole interval while our send
    buffer is full. The keepalive ping cannot find that out (its own send waits for the
    buffer to drain), so such a peer would otherwise hold its connection for ever, with
    a send buffer growing by every call the edge makes to it."""
    transport = connection.transport
    stalled_at: int | None = None
    while True:
        await asyncio.sleep(every)
        buffered = transport.get_write_buffer_size()
        if stalled_at is not None and buffered >= stalled_at:
            log.warning(
                "closing the connection: the charger has read nothing for %g s "
                "(%d bytes waiting to be sent)",
                every,
                buffered,
            )
            transport.abort()
            return
        # Only a full buffer counts: a slow link drains some of it in an interval.
        stalled_at = buffered if buffered > WRITE_LIMIT else None


async def _close_replaced(connection: ServerConnection) -> None:
    """Close a replaced connection within CLOSE_TIMEOUT even if its peer reads nothing
    more: websockets' close() first waits for the send buffer to drain, for ever then."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await connection.close(1001, "replaced by a new connection")
    except TimeoutError:
        log.info("a replaced connection did not close within %g s: cut", CLOSE_TIMEOUT)
        connection.transport.abort()


def _address_of(connection: ServerConnection) -> str:
    if isinstance(connection, GuardedConnection):
        return connection.address
    peer = connection.transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


def _echoed(offered: list[str]) -> str:
    """A refused subprotocol list as told back: a few names, each cut short."""
    if not offered:
        return "none"
    shown = [
        name if len(name) <= ECHOED_LENGTH else name[:ECHOED_LENGTH] + "..."
        for name in offered[:ECHOED_SUBPROTOCOLS]
    ]
    more = len(offered) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _offered_subprotocols(headers: Headers) -> list[str]:
    return [
        protocol.strip()
        for header in headers.get_all("Sec-WebSocket-Protocol")
        for protocol in header.split(",")
        if protocol.strip()
    ]
