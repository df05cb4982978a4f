"""One connected charger: reading its frames, answering its calls, making ours,
logging both ways.

The `ocpp` library's ChargePoint gives the handler registry (`@on`) and nothing
else. Answering a charger's CALL is done here because the hot path has to be cheap
and exact: compiled schema validation, OCPP 1.6's own error codes, a CALLERROR for
frames the library would drop, and every frame written to the message log without
blocking the loop. The edge's own calls are matched to their answers here too, by
uniqueId (`call_charger`): whatever a charger answers, or sends unasked, ends as a
`CallFailed` for that one call or is dropped and counted, never as an exception from
the library in some other task, and nothing queues.

What one connection may use is bounded by `[ocpp.limits]` (edge/ocpp/limits.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from ocpp.exceptions import (
    InternalError,
    NotImplementedError,
    NotSupportedError,
    OCPPError,
    SecurityError,
)
from ocpp.v16.enums import Action
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from edge import log_context
from edge.clock import now_ms, utc_now_text
from edge.events import SiteEvent
from edge.ocpp.frames import (
    FrameError,
    bounded,
    encode_call,
    encode_call_error,
    encode_call_result,
    encode_call_text,
    parse_frame,
)
from edge.ocpp.library import Call, CallError, ChargePoint, Handler, handler_for
from edge.ocpp.limits import SAMPLED_VALUE_FIELDS, Note, check_sampled_values
from edge.ocpp.payloads import keyword_arguments, to_wire
from edge.ocpp.schemas import validate_request, validate_response
from edge.site import SiteContext
from edge.store import chargers, message_log

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
# How often, at most, a pending or rejected charger's registration is read again when
# it calls (so that an operator's acceptance counts at once, not at its next boot).
REGISTRATION_CHECK_SECONDS = 1.0
# How long a message the edge triggered (TriggerMessage) may come from a pending charger.
TRIGGERED_SECONDS = 60.0
# TriggerMessage / ExtendedTriggerMessage's requestedMessage -> the action it makes.
_TRIGGERED_ACTION = {"SignChargePointCertificate": "SignCertificate"}


class CallFailed(Exception):
    """A call from the edge ended without a CALLRESULT the edge can use."""

    def __init__(self, description: str, code: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.code = code


class CallRefused(CallFailed):
    """The charger answered with a CALLERROR; its code is kept as sent (some firmwares
    send codes OCPP 1.6 does not define, such as 2.0.1's RpcFrameworkError)."""


class InvalidAnswer(CallFailed):
    """The answer broke OCPP-J or the action's response schema; `code` is the OCPP-J
    error code that names the fault."""


class ConnectionLost(CallFailed):
    """The connection closed before the answer came."""


class SessionBase(ChargePoint):  # type: ignore[misc]
    def __init__(self, charger_id: str, connection: ServerConnection, context: SiteContext) -> None:
        super().__init__(charger_id, connection, response_timeout=context.settings.response_timeout)
        # Ours, not the library's private attribute of the same connection.
        self.websocket = connection
        self.context = context
        self.store = context.store
        self.settings = context.settings
        self.registration = "accepted"
        # Transaction ids this charger owns (ids are never reused) and their meter
        # start in Wh: saves a look-up for every MeterValues.
        self.known_transactions: dict[int, int] = {}
        self.outbox = context.outbox
        self._last_touch = 0.0
        # Events of the call being handled, published once its answer is sent.
        self._events: list[SiteEvent] = []
        self.limits = context.settings.limits
        allowance = context.allowances.of(charger_id, self.limits)
        self._budget = allowance.frames
        self._log_share = allowance.logged_bytes
        # The edge's own calls waiting for their answer, by uniqueId: one at a time.
        self._awaiting: dict[str, asyncio.Future[Any]] = {}
        self._calling = asyncio.Lock()
        self._closed = False
        self._registration_checked = 0.0
        # Messages a pending charger may send because the edge triggered them: deadlines.
        self._triggered: dict[str, float] = {}
        # Counters for what this connection sent that the edge dropped or slowed down.
        self.throttled_frames = 0
        self._unsolicited = Note(log)
        self._bad_frames = Note(log)
        self._refused = Note(log)
        self._not_logged = Note(log)

    @property
    def unsolicited_results(self) -> int:
        """CALLRESULTs and CALLERRORs that answered nothing the edge was waiting for."""
        return self._unsolicited.count

    @property
    def frames_not_logged(self) -> int:
        """Frames answered but left out of the message log (over its share)."""
        return self._not_logged.count

    @property
    def bad_frames(self) -> int:
        return self._bad_frames.count

    def announce(self, event: SiteEvent) -> None:
        """Publish `event` once the answer to the call being handled is on the wire."""
        self._events.append(event)

    async def start(self) -> None:
        """Serve frames until the connection closes."""
        try:
            async for raw in self.websocket:
                # Over its budget a charger is read more slowly: while this waits, the
                # connection's bounded queue fills and TCP holds the charger back.
                delay = self._budget.delay()
                if delay:
                    self.throttled_frames += 1
                    await asyncio.sleep(delay)
                await self.route_message(raw)
        except ConnectionClosed:
            pass
        finally:
            self._closed = True
            if self.bad_frames or self.unsolicited_results or self.throttled_frames:
                log.warning(
                    "%s: this connection sent %d bad frames and %d answers to nothing "
                    "(dropped), %d calls answered with a CALLERROR; %d frames waited for "
                    "the frame budget",
                    self.id,
                    self.bad_frames,
                    self.unsolicited_results,
                    self._refused.count,
                    self.throttled_frames,
                )
            for waiting in self._awaiting.values():
                if not waiting.done():
                    waiting.set_exception(
                        ConnectionLost("the connection closed before the charger answered")
                    )

    async def route_message(self, raw_msg: str | bytes) -> None:
        at_ms = now_ms()
        self._touch()
        try:
            frame: Any = parse_frame(raw_msg)
        except FrameError as error:
            self._log_frame("in", raw_msg, None, None, None, at_ms)
            if error.answer:
                self._bad_frames("%s sent a bad frame: %s", self.id, error.error.description)
                await self._send(encode_call_error(error.unique_id, error.error))
            else:
                self._bad_answer(error)
            return
        action = frame.action if isinstance(frame, Call) else None
        self._log_frame("in", raw_msg, frame.message_type_id, frame.unique_id, action, at_ms)
        if isinstance(frame, Call):
            # This connection's task has its own context: the call's transaction (or
            # none) stands for the lines logged while it is handled, until the next call.
            transaction = frame.payload.get("transactionId")
            log_context.TRANSACTION_ID.set(str(transaction) if type(transaction) is int else None)
            await self._answer(frame)
            return
        waiting = self._awaiting.get(frame.unique_id)
        if waiting is None or waiting.done():
            self._unsolicited(
                "%s sent an answer to no call of ours (unknown or late uniqueId); dropped",
                self.id,
            )
        else:
            waiting.set_result(frame)

    def _bad_answer(self, error: FrameError) -> None:
        """A malformed CALLRESULT/CALLERROR: the failed answer to our call if it names it."""
        waiting = self._awaiting.get(error.unique_id)
        if waiting is None or waiting.done():
            self._bad_frames("%s sent a bad answer: %s", self.id, error.error.description)
            return
        waiting.set_exception(
            InvalidAnswer(
                f"the charger's answer is malformed: {error.error.description}", error.error.code
            )
        )

    async def call_charger(
        self, action: str, payload: dict[str, Any], *, text: str | None = None
    ) -> dict[str, Any]:
        """Send `action` with `payload` (already valid; `text`: its JSON, made once for
        many chargers) and return the charger's CALLRESULT payload, valid against the
        action's response schema; raise `CallFailed` otherwise. One call at a time, as
        OCPP-J asks; the caller bounds the wait."""
        async with self._calling:
            if self._closed:
                raise ConnectionLost("the charger's connection is closed")
            unique_id = str(uuid.uuid4())
            answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._awaiting[unique_id] = answer
            try:
                if text is None:
                    message = encode_call(unique_id, action, payload)
                else:
                    message = encode_call_text(unique_id, action, text)
                self._log_frame("out", message, 2, unique_id, action, now_ms())
                try:
                    await self.websocket.send(message)
                except ConnectionClosed as error:
                    raise ConnectionLost(
                        "the connection closed before the call could be sent"
                    ) from error
                frame = await answer
            finally:
                del self._awaiting[unique_id]
        if isinstance(frame, CallError):
            raise CallRefused(frame.error_description, frame.error_code)
        result: dict[str, Any] = frame.payload
        try:
            validate_response(action, result)
        except OCPPError as error:
            raise InvalidAnswer(
                f"the charger's answer breaks the {action} response schema: {error.description}",
                error.code,
            ) from error
        except (ArithmeticError, ValueError) as error:  # numbers the validator cannot take
            raise InvalidAnswer(
                f"the charger's answer to {action} cannot be checked: {error}",
                "TypeConstraintViolation",
            ) from error
        if action in ("TriggerMessage", "ExtendedTriggerMessage") and (
            result.get("status") == "Accepted"
        ):
            requested = str(payload.get("requestedMessage"))
            triggered = _TRIGGERED_ACTION.get(requested, requested)
            self._triggered[triggered] = time.monotonic() + TRIGGERED_SECONDS
        return result

    async def call(self, *_: Any, **__: Any) -> Any:
        """The library's own call() matches answers through an unbounded queue."""
        raise TypeError("use call_charger(), which matches answers by uniqueId")

    async def _answer(self, call: Call) -> None:
        self._events.clear()
        try:
            if self.registration != "accepted" and call.action != "BootNotification":
                await self._check_registration_again()
            handler = self._handler_for(call.action)
            if call.action in SAMPLED_VALUE_FIELDS:
                check_sampled_values(call.action, call.payload, self.limits.max_sampled_values)
            validate_request(call.action, call.payload)
            result = await handler(**keyword_arguments(call.payload))
            payload = to_wire(result)
            validate_response(call.action, payload)
        except OCPPError as error:
            self._refused(
                "%s %s answered %s: %s",
                self.id,
                bounded(call.action, 64),
                error.code,
                bounded(error.description or "", 300),
            )
            await self._send(encode_call_error(call.unique_id, error), call.action)
            return
        except Exception:
            log.exception("%s: handling %s failed", self.id, call.action)
            internal = InternalError(
                description=f"the central system failed to handle {call.action}"
            )
            await self._send(encode_call_error(call.unique_id, internal), call.action)
            return
        await self._send(encode_call_result(call.unique_id, payload), call.action, call.unique_id)
        # What follows an answer (edge.events) is published once it is on the wire.
        for event in self._events:
            self.context.events.publish(event)
        self._events.clear()

    def _handler_for(self, action: str) -> Handler:
        if action not in ALL_ACTIONS:
            raise NotImplementedError(
                description=f"{bounded(action, 64)} is not an OCPP 1.6 action"
            )
        if action not in CHARGER_INITIATED:
            raise NotSupportedError(
                description=f"a central system does not accept {bounded(action, 64)}"
            )
        handler = handler_for(self, action)
        if handler is None:
            raise NotImplementedError(description=f"no handler for {action}")
        if (
            self.registration != "accepted"
            and action != "BootNotification"
            and self._triggered.get(action, 0.0) < time.monotonic()
        ):
            raise SecurityError(
                description=f"this charger's registration is {self.registration}: until "
                "it is accepted it may send only BootNotification (OCPP 1.6 section 4.2)"
            )
        return handler

    async def _check_registration_again(self) -> None:
        """A pending or rejected charger calls: read its registration again (an operator
        may have accepted it since), at most once per REGISTRATION_CHECK_SECONDS."""
        now = time.monotonic()
        if now - self._registration_checked < REGISTRATION_CHECK_SECONDS:
            return
        self._registration_checked = now
        charger_id = self.id
        row = await self.store.run(lambda db: chargers.get_charger(db, charger_id))
        if row is not None:
            self.registration = str(row["registration"])

    async def _send(
        self, message: str, action: str | None = None, result_for: str | None = None
    ) -> None:
        """Send `message`: a CALLRESULT to the call `result_for` (then its type and
        uniqueId need not be read back from the text), or a CALLERROR."""
        message_type = None if result_for is None else 3
        self._log_frame("out", message, message_type, result_for, action, now_ms())
        try:
            await self.websocket.send(message)
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
        # A charger's flood is answered but not all written down: the message log keeps
        # its share of bytes per charger, so no device can fill the disk.
        if not self._log_share.take_if_available(len(text)):
            self._not_logged(
                "%s: a frame not kept in the message log (over "
                "ocpp.limits.message_log_bytes_per_second)",
                self.id,
            )
            return
        if direction == "out" and message_type is None:
            message_type, unique_id = _peek_type_and_id(text)
        self.store.insert_later(
            message_log.APPEND_SQL,
            message_log.log_row(self.id, direction, message_type, unique_id, action, text, at_ms),
        )

    def _touch(self) -> None:
        now = time.monotonic()
        if now - self._last_touch >= TOUCH_EVERY_SECONDS:
            self._last_touch = now
            charger_id, seen_at = self.id, utc_now_text()
            self.store.submit(lambda db: chargers.touch(db, charger_id, seen_at))


def _peek_type_and_id(text: str) -> tuple[int | None, str | None]:
    # Our own frames start `[N,"uniqueId",`: read both without parsing the JSON again.
    try:
        head, unique_id, _ = text.split('"', 2)
        return int(head.strip("[,")), unique_id
    except ValueError:
        return None, None
