"""Running an ASGI app with uvicorn inside the daemon's own event loop and TaskGroup, with
every connection bounded (the edge's local API and file server, the cloud's REST API).

uvicorn bounds the idle time between requests (`timeout_keep_alive`) and the size of the
headers (h11's `max_incomplete_event_size`), but not the time a client takes to send
them: a client sending one byte of its headers now and then holds its connection, and
the server's memory for it, forever (slowloris). `GuardedH11Protocol` adds, per
connection:

- a deadline for the request line and headers, from the connection's start or the end
  of the previous answer (`header_timeout`);
- a deadline for the body that grows with what arrives (`body_timeout` plus one second
  per `min_body_rate` bytes), paused while the server itself is not reading (the app has
  not taken what came);
- a deadline for a client that leaves the answer unread (`send_timeout`);
- a cap on open connections, overall and per client address (trusted proxies are
  exempt from the latter: they carry many clients); a connection beyond either is
  answered 503 and closed at once.

A connection past a deadline is answered 408 when no answer has started, and closed.

An answer given before the client has sent all of its body (413 for a body too large)
ends the connection; closing at once would make the kernel reset it while the client is
still sending, and the client would often lose the answer. So the server closes its side
for writing and drains what the client still sends for up to LINGER_SECONDS, unread, then
closes (a lingering close, as nginx and Apache do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from contract.http.access import Network, is_trusted_proxy
from contract.http.limits import HttpServerLimits

log = logging.getLogger(__name__)
# One warning per client address and reason within this many seconds: a flood of
# refusals must not become a flood of log lines.
LOG_EVERY_S = 60.0
# Seconds a connection answered before its body was in is drained before it is closed.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    min_body_rate: int = 4096
    send_timeout: float = 60.0
    keep_alive_timeout: int = 5
    max_header_bytes: int = 16384
    max_connections: int = 100
    max_connections_per_source: int = 16
    # Reverse proxies: many clients behind one address, so not capped per source.
    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def of(
        cls, settings: HttpServerLimits, trusted_proxies: Sequence[Network] = ()
    ) -> ConnectionLimits:
        return cls(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            min_body_rate=settings.min_body_rate,
            send_timeout=settings.send_timeout,
            keep_alive_timeout=settings.keep_alive_timeout,
            max_header_bytes=settings.max_header_bytes,
            max_connections=settings.max_connections,
            max_connections_per_source=settings.max_connections_per_source,
            trusted_proxies=tuple(trusted_proxies),
        )


class _Refusals:
    """Counts refused and timed-out connections; logs the first of each kind per source
    per minute."""

    def __init__(self, server_name: str) -> None:
        self.server_name = server_name
        self.counts: dict[str, int] = {}
        self._logged: dict[tuple[str, str], float] = {}

    def note(self, kind: str, source: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        key = (kind, source)
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            if len(self._logged) > 10_000:
                self._logged.clear()
            self._logged[key] = now
            count = self.counts[kind]
            log.warning("%s: %s from %s (%d so far)", self.server_name, kind, source, count)


class _LingeringTransport:
    """The connection's transport as uvicorn sees it: closing it while the client is still
    sending a body drains the rest for a moment first (the protocol's `_linger`)."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedH11Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closing = False

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        raw = self._transport
        sending = self._protocol.conn.their_state is h11.SEND_BODY
        if sending and not raw.is_closing() and raw.can_write_eof():
            raw.write_eof()  # after what is buffered: the answer goes out whole
            self._protocol._linger()
        else:
            raw.close()

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines and caps above (set on a subclass)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    refusals: ClassVar[_Refusals]

    def __init__(self, *arguments: Any, **keywords: Any) -> None:
        super().__init__(*arguments, **keywords)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = "headers"
        self._phase_started = 0.0
        self._body_bytes = 0
        self._send_deadline: asyncio.TimerHandle | None = None
        self._raw_transport: asyncio.Transport | None = None
        self._lingering: asyncio.TimerHandle | None = None

    # -- connections ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._raw_transport = transport
        self.transport = _LingeringTransport(transport, self)  # type: ignore[assignment]
        limits = self.limits
        source = self.client[0] if self.client else "unknown"
        if len(self.connections) > limits.max_connections:
            self._refuse("too many connections", source)
            return
        if not is_trusted_proxy(source, limits.trusted_proxies):
            mine = sum(
                1
                for other in self.connections
                if isinstance(other, H11Protocol) and other.client and other.client[0] == source
            )
            if mine > limits.max_connections_per_source:
                self._refuse("too many connections from one address", source)
                return
        self._start_phase("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._cancel_send_deadline()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def _linger(self) -> None:
        """Drain the client's body, unread, until it ends or LINGER_SECONDS pass."""
        assert self._raw_transport is not None
        self._cancel_deadline()
        self._raw_transport.resume_reading()
        self._lingering = self.loop.call_later(LINGER_SECONDS, self._raw_transport.close)

    def eof_received(self) -> None:
        if self._lingering is not None and self._raw_transport is not None:
            self._raw_transport.close()  # the client has sent all it had

    def _refuse(self, reason: str, source: str) -> None:
        self.refusals.note(reason, source)
        self._write_status(503, reason)

    def _write_status(self, status: int, reason: str) -> None:
        """A whole answer written past h11 (the connection ends with it)."""
        body = f"{reason}\n".encode()
        phrase = {408: "Request Timeout", 503: "Service Unavailable"}[status]
        head = (
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()

    # -- deadlines -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # drained, not read: the answer has been given
        super().data_received(data)
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._start_phase("body")
            self._body_bytes += len(data)
        elif state is h11.DONE and self._phase != "answering":
            # The request is in; the app takes its time (a charger's answer, say).
            self._phase = "answering"
            self._cancel_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._start_phase("headers")

    def _start_phase(self, phase: str) -> None:
        self._phase = phase
        self._phase_started = time.monotonic()
        self._body_bytes = 0
        self._arm(self._phase_started + self._allowed())

    def _allowed(self) -> float:
        limits = self.limits
        if self._phase == "headers":
            return limits.header_timeout
        return limits.body_timeout + self._body_bytes / limits.min_body_rate

    def _arm(self, at: float) -> None:
        self._cancel_deadline()
        delay = max(at - time.monotonic(), 0.0)
        self._deadline = self.loop.call_later(delay, self._on_deadline)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._phase == "answering":
            return
        if self._phase == "body" and self.flow.read_paused:
            # The app has not taken what came: the client is not the one waiting.
            self._phase_started = time.monotonic() - self._body_bytes / self.limits.min_body_rate
            self._arm(self._phase_started + self._allowed())
            return
        due = self._phase_started + self._allowed()
        if time.monotonic() < due:
            self._arm(due)  # the body grew meanwhile
            return
        source = self.client[0] if self.client else "unknown"
        what = "headers" if self._phase == "headers" else "body"
        self.refusals.note(f"request {what} too slow", source)
        idle = self.cycle is None or self.cycle.response_complete
        if self._phase == "headers" and self.conn.their_state is h11.IDLE and idle:
            self._write_status(408, f"the request's {what} took too long")
            return
        self.transport.abort()

    # -- slow readers ----------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        self._cancel_send_deadline()
        self._send_deadline = self.loop.call_later(self.limits.send_timeout, self._on_send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_send_deadline()

    def _cancel_send_deadline(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _on_send_stalled(self) -> None:
        self._send_deadline = None
        source = self.client[0] if self.client else "unknown"
        self.refusals.note("answer left unread", source)
        self.transport.abort()


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGINT and stops every part in order.
        yield


# After stop(): requests in flight (an upload, a download, a command waiting for a
# charger) get this long to finish, then they are cancelled.
REQUEST_GRACE_SECONDS = 1  # uvicorn takes whole seconds


class _CutAtStop(logging.Filter):
    """A request cut at the stop is expected, not an error: uvicorn logs each as an
    "Exception in ASGI application" with the traceback of its cancellation."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            return False
        if "timeout graceful shutdown exceeded" in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class EmbeddedHttpServer:
    """`await server.serve()` in a task; `server.stop()` to end it: no new connections,
    and those in flight end within REQUEST_GRACE_SECONDS."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        limits: ConnectionLimits | None = None,
        name: str = "HTTP server",
    ) -> None:
        limits = limits or ConnectionLimits()
        self.refusals = _Refusals(name)
        protocol = type(
            "GuardedH11Protocol",
            (GuardedH11Protocol,),
            {"limits": limits, "refusals": self.refusals},
        )
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=REQUEST_GRACE_SECONDS,
            http=protocol,
            ws="none",
            # Forwarded headers are ours to judge (contract/http/access.py): uvicorn would
            # believe them from any process on this machine.
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=limits.keep_alive_timeout,
            h11_max_incomplete_event_size=limits.max_header_bytes,
        )
        self._server = _EmbeddedServer(config)
        errors = logging.getLogger("uvicorn.error")
        if not any(isinstance(each, _CutAtStop) for each in errors.filters):
            errors.addFilter(_CutAtStop())

    async def serve(self) -> None:
        await self._server.serve()

    def stop(self) -> None:
        self._server.should_exit = True

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0
