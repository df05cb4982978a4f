"""OCPP-J frames: parsing what a charger sends, and the CALLERROR for what is wrong.

The error codes are OCPP-J 1.6 section 4.2.3's. A frame that is not JSON, or not a
JSON array shaped like an OCPP-J message, is a FormationViolation; a message type
other than 2, 3 or 4 is a ProtocolError. When the frame carries no usable uniqueId
the CALLERROR uses "-1", as OCPP 2.0.1 prescribes (1.6 says nothing).
"""

from __future__ import annotations

import json
from typing import Any

from ocpp.exceptions import FormationViolationError, OCPPError, ProtocolError
from ocpp.messages import Call, CallError, CallResult

UNKNOWN_UNIQUE_ID = "-1"
MAX_UNIQUE_ID_LENGTH = 36

# The ocpp library's message classes (untyped): Call, CallResult or CallError.
Frame = Any


class FrameError(Exception):
    """A frame that cannot be handled; `error` is what to answer, if anything."""

    def __init__(self, error: OCPPError, unique_id: str, *, answer: bool = True) -> None:
        super().__init__(error.description)
        self.error = error
        self.unique_id = unique_id
        # A broken CALLRESULT/CALLERROR is never answered: responses get no response.
        self.answer = answer


def parse_frame(raw: str | bytes) -> Frame:
    if isinstance(raw, bytes):
        raise FrameError(
            FormationViolationError(description="OCPP-J frames are text, not binary"),
            UNKNOWN_UNIQUE_ID,
        )
    try:
        message = json.loads(raw)
    except ValueError as error:
        raise FrameError(
            FormationViolationError(description=f"frame is not valid JSON: {error}"),
            UNKNOWN_UNIQUE_ID,
        ) from error
    if not isinstance(message, list) or not message:
        raise FrameError(
            FormationViolationError(description="an OCPP-J frame is a JSON array"),
            UNKNOWN_UNIQUE_ID,
        )
    message_type = message[0]
    unique_id = _unique_id(message)
    if message_type == 2:
        return _call(message, unique_id)
    if message_type == 3:
        if len(message) != 3 or unique_id is None or not isinstance(message[2], dict):
            raise _malformed("CALLRESULT", unique_id, answer=False)
        return CallResult(unique_id, message[2])
    if message_type == 4:
        if len(message) != 5 or unique_id is None or not isinstance(message[2], str):
            raise _malformed("CALLERROR", unique_id, answer=False)
        return CallError(unique_id, message[2], message[3], message[4])
    raise FrameError(
        ProtocolError(description=f"unknown MessageTypeId {message_type!r}: expected 2, 3 or 4"),
        unique_id or UNKNOWN_UNIQUE_ID,
    )


def _call(message: list[Any], unique_id: str | None) -> Call:
    if len(message) != 4 or unique_id is None:
        raise _malformed("CALL", unique_id, answer=True)
    action, payload = message[2], message[3]
    if not isinstance(action, str):
        raise _malformed("CALL", unique_id, answer=True)
    if not isinstance(payload, dict):
        raise FrameError(
            FormationViolationError(description=f"the payload of {action} must be a JSON object"),
            unique_id,
        )
    return Call(unique_id, action, payload)


def _unique_id(message: list[Any]) -> str | None:
    if len(message) < 2:
        return None
    unique_id = message[1]
    if isinstance(unique_id, str) and 0 < len(unique_id) <= MAX_UNIQUE_ID_LENGTH:
        return unique_id
    return None


def _malformed(kind: str, unique_id: str | None, *, answer: bool) -> FrameError:
    shapes = {
        "CALL": "[2, uniqueId, action, {payload}]",
        "CALLRESULT": "[3, uniqueId, {payload}]",
        "CALLERROR": "[4, uniqueId, errorCode, errorDescription, {errorDetails}]",
    }
    return FrameError(
        FormationViolationError(
            description=f"a {kind} is {shapes[kind]} with a uniqueId of at most "
            f"{MAX_UNIQUE_ID_LENGTH} characters"
        ),
        unique_id or UNKNOWN_UNIQUE_ID,
        answer=answer,
    )


def encode_call_result(unique_id: str, payload: dict[str, Any]) -> str:
    return json.dumps([3, unique_id, payload], separators=(",", ":"))


def encode_call_error(unique_id: str, error: OCPPError) -> str:
    details = error.details if isinstance(error.details, dict) else {}
    return json.dumps(
        [4, unique_id, error.code, error.description or "", details],
        separators=(",", ":"),
        default=str,
    )
