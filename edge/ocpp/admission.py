"""What a peer may hold on the OCPP port before any charger code runs for it.

Counted from the moment a TCP connection is made (after TLS, for profiles 2 and 3):
connections per source address (open sessions and handshakes alike), handshakes a
minute per source address, handshakes in progress from all addresses, and the bytes of
a handshake request. A peer beyond a
limit is answered with an HTTP status and a sentence at once, without waiting for its
request, which a slow sender (slowloris) might never finish. Every refusal is counted by
reason and logged at a bounded rate, so that a flood of them cannot flood the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from enum import StrEnum
from http import HTTPStatus
from typing import ClassVar

from websockets.asyncio.server import ServerConnection

from edge.settings import OcppSettings

log = logging.getLogger(__name__)

# A refused peer's late bytes are read and dropped this long, so that it reads our
# answer instead of a reset; at most this many refused peers linger at once.
LINGER_SECONDS = 1.0
MAX_LINGERING = 64
# Source addresses whose handshake rate is remembered at most.
MAX_ADDRESSES = 4096
# At most one log line per refusal reason in this time; the others are counted in it.
LOG_EVERY_SECONDS = 60.0


class Refusal(StrEnum):
    """Why a handshake was refused: the counters' keys and the log's words."""

    BAD_PATH = "not an OCPP path"
    BAD_CHARGER_ID = "charger id outside the safe characters"
    NO_SUBPROTOCOL = "no ocpp1.6 subprotocol"
    TOO_MANY_FROM_ADDRESS = "too many connections from one address"
    TOO_MANY_HANDSHAKES = "too many handshakes in progress"
    HANDSHAKES_TOO_OFTEN = "too many handshakes a minute from one address"
    REQUEST_TOO_LARGE = "handshake request too large"
    UNKNOWN_CHARGER = "unknown charger"
    TOO_MANY_PENDING = "too many pending chargers"
    WRONG_CREDENTIALS = "wrong or missing Basic auth credentials"
    BACKING_OFF = "source address backing off after failed logins"
    PASSWORD_CHECKS_BUSY = "too many password checks waiting"
    WRONG_CERTIFICATE = "client certificate of another charger"


class RefusalLog:
    """Refusals counted by reason; the first of a reason is logged, then one line per
    LOG_EVERY_SECONDS at most, telling how many were refused meanwhile."""

    def __init__(self, every_seconds: float = LOG_EVERY_SECONDS) -> None:
        self.every_seconds = every_seconds
        self.counts: Counter[Refusal] = Counter()
        self._logged_at: dict[Refusal, float] = {}
        self._unlogged: Counter[Refusal] = Counter()

    def record(self, reason: Refusal, detail: str) -> None:
        self.counts[reason] += 1
        now = time.monotonic()
        logged_at = self._logged_at.get(reason)
        if logged_at is not None and now - logged_at < self.every_seconds:
            self._unlogged[reason] += 1
            return
        self._logged_at[reason] = now
        unlogged = self._unlogged.pop(reason, 0)
        more = f" ({unlogged} more like it since the last report)" if unlogged else ""
        log.warning("refused at the handshake: %s%s", detail, more)


class Admission:
    """Connections counted per source address and handshakes counted in all."""

    def __init__(self, settings: OcppSettings) -> None:
        self.settings = settings
        self.refusals = RefusalLog()
        self.connections: Counter[str] = Counter()
        self.handshakes_in_progress = 0
        self.lingering = 0
        # address -> (handshakes it may still start, when that was worked out)
        self._allowances: dict[str, tuple[float, float]] = {}

    @property
    def refused(self) -> Counter[Refusal]:
        return self.refusals.counts

    def arrived(self, address: str) -> tuple[HTTPStatus, Refusal, str] | None:
        """Count a new connection from `address`; why to refuse it, if it is one too many."""
        self.connections[address] += 1
        self.handshakes_in_progress += 1
        limit = self.settings.max_connections_per_address
        if self.connections[address] > limit:
            return (
                HTTPStatus.TOO_MANY_REQUESTS,
                Refusal.TOO_MANY_FROM_ADDRESS,
                f"{address} already holds {limit} connections to this central system "
                f"(ocpp.max_connections_per_address); close some or try again later",
            )
        if not self._allowed_another(address):
            per_minute = self.settings.handshakes_per_minute_per_address
            return (
                HTTPStatus.TOO_MANY_REQUESTS,
                Refusal.HANDSHAKES_TOO_OFTEN,
                f"{address} started more than {per_minute} handshakes in a minute "
                "(ocpp.handshakes_per_minute_per_address); try again later",
            )
        if self.handshakes_in_progress > self.settings.max_handshakes_in_progress:
            return (
                HTTPStatus.SERVICE_UNAVAILABLE,
                Refusal.TOO_MANY_HANDSHAKES,
                f"{self.settings.max_handshakes_in_progress} handshakes are in progress "
                "(ocpp.max_handshakes_in_progress); try again in a few seconds",
            )
        return None

    def _allowed_another(self, address: str) -> bool:
        """A token bucket per address: handshakes_per_minute_per_address at once, then
        that many a minute. Each handshake costs a store commit and two events for the
        cloud, so a peer reconnecting in a loop must not get them for free."""
        capacity = float(self.settings.handshakes_per_minute_per_address)
        rate = capacity / 60.0
        now = time.monotonic()
        allowance, at = self._allowances.pop(address, (capacity, now))
        allowance = min(capacity, allowance + (now - at) * rate)
        allowed = allowance >= 1.0
        self._allowances[address] = (allowance - 1.0 if allowed else allowance, now)
        if len(self._allowances) > MAX_ADDRESSES:
            # Forget the addresses whose allowance is full again, then the oldest.
            for other, (left, since) in list(self._allowances.items()):
                if left + (now - since) * rate >= capacity:
                    del self._allowances[other]
            while len(self._allowances) > MAX_ADDRESSES:
                del self._allowances[next(iter(self._allowances))]
        return allowed

    def handshake_ended(self) -> None:
        self.handshakes_in_progress -= 1

    def left(self, address: str) -> None:
        self.connections[address] -= 1
        if self.connections[address] <= 0:
            del self.connections[address]


class GuardedConnection(ServerConnection):
    """A WebSocket server connection counted by its Admission from its first moment."""

    admission: ClassVar[Admission]
    address = "unknown"
    _handshaking = False
    _refused = False
    _request_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.address = str(peer[0])
        self._handshaking = True
        refused = self.admission.arrived(self.address)
        if refused is not None:
            self.refuse(*refused)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # a refused peer's late bytes: read and dropped
        if self.request is None:  # still sending its handshake request
            self._request_bytes += len(data)
            limit = self.admission.settings.handshake_max_bytes
            if self._request_bytes > limit:
                self.refuse(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    Refusal.REQUEST_TOO_LARGE,
                    f"a handshake request has at most {limit} bytes (ocpp.handshake_max_bytes)",
                )
                return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.end_handshake()
        self.admission.left(self.address)
        super().connection_lost(exc)

    def end_handshake(self) -> None:
        """The handshake is over (opened or refused): no longer counted as in progress."""
        if self._handshaking:
            self._handshaking = False
            self.admission.handshake_ended()

    def refuse(self, status: HTTPStatus, reason: Refusal, sentence: str) -> None:
        """Answer `status` now, outside websockets' handshake (which waits for a request
        that may never come), and end the connection."""
        self._refused = True
        self.end_handshake()
        self.admission.refusals.record(reason, f"{self.address}: {sentence}")
        body = (sentence + "\n").encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Retry-After: 10\r\nConnection: close\r\n\r\n"
        )
        transport = self.transport
        transport.write(head.encode() + body)
        if self.admission.lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()  # sends what is buffered, then closes
            return
        # Half-close: the peer gets the answer and an end of stream; what it still sends
        # is dropped (data_received) instead of answered with a reset.
        transport.write_eof()
        self.admission.lingering += 1

        def linger_over() -> None:
            self.admission.lingering -= 1
            transport.abort()

        self.loop.call_later(LINGER_SECONDS, linger_over)


def connection_class(admission: Admission) -> type[GuardedConnection]:
    """The connection class for one server, counting on `admission`."""

    class OcppConnection(GuardedConnection):
        pass

    OcppConnection.admission = admission
    return OcppConnection
