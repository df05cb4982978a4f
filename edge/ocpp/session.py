"""One connected charger: reading its frames, answering its calls, logging both ways.

The `ocpp` library's ChargePoint gives the handler registry (`@on`) and the
CSMS-initiated `call()`. Answering a charger's CALL is done here rather than by the
library because the hot path has to be cheap and exact: compiled schema
validation, OCPP 1.6's own error codes, a CALLERROR for frames the library would
drop, and every frame written to the message log without blocking the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ocpp.exceptions import (
    InternalError,
    NotImplementedError,
    NotSupportedError,
    OCPPError,
    SecurityError,
)
from ocpp.messages import Call
from ocpp.v16 import ChargePoint
from ocpp.v16.enums import Action
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from edge import log_context
from edge.certificates import SiteCA
from edge.clock import now_ms, utc_now
from edge.events import SiteEvent, SiteEvents
from edge.ocpp.data_transfer import DataTransferHandlers
from edge.ocpp.frames import FrameError, encode_call_error, encode_call_result, parse_frame
from edge.ocpp.payloads import keyword_arguments, to_wire
from edge.ocpp.schemas import validate_request, validate_response
from edge.settings import AuthorizationSettings, OcppSettings
from edge.store import chargers, message_log
from edge.store.writer import StoreWriter
from edge.sync.outbox import Outbox

log = logging.getLogger(__name__)

# Actions a charger may send to a central system (OCPP 1.6 + security whitepaper).
CHARGER_INITIATED = frozenset(
    {
        "Authorize",
        "BootNotification",
        "DataTransfer",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
        "LogStatusNotification",
        "SecurityEventNotification",
        "SignCertificate",
        "SignedFirmwareStatusNotification",
    }
)
ALL_ACTIONS = frozenset(action.value for action in Action)

# How often, at most, a charger's last-seen time is written.
TOUCH_EVERY_SECONDS = 1.0


@dataclass
class SiteContext:
    """What every session shares: settings, the store, plug-ins."""

    settings: OcppSettings
    store: StoreWriter
    data_transfer: DataTransferHandlers = field(default_factory=DataTransferHandlers)
    # Called with the charger id after an accepted BootNotification has been answered.
    after_boot: list[Callable[[str], None]] = field(default_factory=list)
    # Signs chargers' CSRs (security whitepaper); None: requests are rejected.
    certificate_authority: SiteCA | None = None
    authorization: AuthorizationSettings = field(default_factory=AuthorizationSettings)
    # Events for the cloud, appended in the same unit of work as the change they report.
    outbox: Outbox = field(default_factory=lambda: Outbox(enabled=False))
    # What happened (transactions, meter readings, status), for the parts that react.
    events: SiteEvents = field(default_factory=SiteEvents)
    # Called with (charger id, certificate request id) after an accepted SignCertificate.
    after_sign_certificate: list[Callable[[str, int], None]] = field(default_factory=list)


class SessionBase(ChargePoint):  # type: ignore[misc]
    def __init__(self, charger_id: str, connection: ServerConnection, context: SiteContext) -> None:
        super().__init__(charger_id, connection, response_timeout=context.settings.response_timeout)
        self.context = context
        self.store = context.store
        self.settings = context.settings
        self.registration = "accepted"
        # Transaction ids this charger owns (ids are never reused) and their meter
        # start in Wh: saves a look-up for every MeterValues.
        self.known_transactions: dict[int, int] = {}
        self.certificate_request_to_sign: int | None = None
        self.outbox = context.outbox
        # When each transaction's figures last went to the cloud (monotonic seconds).
        self._meter_reported_at: dict[int, float] = {}
        self._last_touch = 0.0
        # Events of the call being handled, published once its answer is sent.
        self._events: list[SiteEvent] = []

    def announce(self, event: SiteEvent) -> None:
        """Publish `event` once the answer to the call being handled is on the wire."""
        self._events.append(event)

    async def start(self) -> None:
        """Serve frames until the connection closes."""
        try:
            async for raw in self._connection:
                await self.route_message(raw)
        except ConnectionClosed:
            pass

    async def route_message(self, raw_msg: str | bytes) -> None:
        at_ms = now_ms()
        self._touch()
        try:
            frame: Any = parse_frame(raw_msg)
        except FrameError as error:
            self._log_frame("in", raw_msg, None, None, None, at_ms)
            log.warning("%s sent a bad frame: %s", self.id, error.error.description)
            if error.answer:
                await self._send(encode_call_error(error.unique_id, error.error))
            return
        action = frame.action if isinstance(frame, Call) else None
        self._log_frame("in", raw_msg, frame.message_type_id, frame.unique_id, action, at_ms)
        if isinstance(frame, Call):
            # This connection's task has its own context: the call's transaction (or
            # none) stands for the lines logged while it is handled, until the next call.
            transaction = frame.payload.get("transactionId")
            log_context.TRANSACTION_ID.set(None if transaction is None else str(transaction))
            await self._answer(frame)
        else:
            # A response to one of our calls: `ChargePoint.call()` is waiting for it.
            self._response_queue.put_nowait(frame)

    async def _answer(self, call: Call) -> None:
        self._events.clear()
        try:
            handler = self._handler_for(call.action)
            validate_request(call.action, call.payload)
            result = await handler(**keyword_arguments(call.payload))
            payload = to_wire(result)
            validate_response(call.action, payload)
        except OCPPError as error:
            log.warning("%s %s answered %s: %s", self.id, call.action, error.code, error)
            await self._send(encode_call_error(call.unique_id, error), call.action)
            return
        except Exception:
            log.exception("%s: handling %s failed", self.id, call.action)
            internal = InternalError(
                description=f"the central system failed to handle {call.action}"
            )
            await self._send(encode_call_error(call.unique_id, internal), call.action)
            return
        await self._send(encode_call_result(call.unique_id, payload), call.action)
        after = self.route_map.get(call.action, {}).get("_after_action")
        if after is not None:
            after(**keyword_arguments(call.payload))
        for event in self._events:
            self.context.events.publish(event)
        self._events.clear()

    def _handler_for(self, action: str) -> Callable[..., Awaitable[Any]]:
        if action not in ALL_ACTIONS:
            raise NotImplementedError(description=f"{action} is not an OCPP 1.6 action")
        if action not in CHARGER_INITIATED:
            raise NotSupportedError(description=f"a central system does not accept {action}")
        handlers = self.route_map.get(action, {})
        if "_on_action" not in handlers:
            raise NotImplementedError(description=f"no handler for {action}")
        if self.registration == "rejected" and action != "BootNotification":
            raise SecurityError(description="this charger's registration was rejected")
        handler: Callable[..., Awaitable[Any]] = handlers["_on_action"]
        return handler

    async def _send(self, message: str, action: str | None = None) -> None:
        self._log_frame("out", message, None, None, action, now_ms())
        try:
            await self._connection.send(message)
        except ConnectionClosed:
            log.info("%s: connection closed before our answer could be sent", self.id)

    def _log_frame(
        self,
        direction: str,
        raw: str | bytes,
        message_type: int | None,
        unique_id: str | None,
        action: str | None,
        at_ms: int,
    ) -> None:
        text = raw if isinstance(raw, str) else raw.hex()
        if direction == "out" and message_type is None:
            message_type, unique_id = _peek_type_and_id(text)
        self.store.insert_later(
            message_log.APPEND_SQL,
            (self.id, direction, message_type, unique_id, action, text, at_ms),
        )

    def _touch(self) -> None:
        now = time.monotonic()
        if now - self._last_touch >= TOUCH_EVERY_SECONDS:
            self._last_touch = now
            charger_id, seen_at = self.id, utc_now()
            self.store.submit(lambda db: chargers.touch(db, charger_id, seen_at))


def _peek_type_and_id(text: str) -> tuple[int | None, str | None]:
    # Our own frames start `[N,"uniqueId",`: read both without parsing the JSON again.
    try:
        head, unique_id, _ = text.split('"', 2)
        return int(head.strip("[,")), unique_id
    except ValueError:
        return None, None
