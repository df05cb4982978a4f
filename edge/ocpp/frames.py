"""OCPP-J frames: parsing what a charger sends, and the CALLERROR for what is wrong.

The error codes are OCPP-J 1.6 section 4.2.3's. A frame that is not JSON, or not a
JSON array shaped like an OCPP-J message, is a FormationViolation; a message type
other than 2, 3 or 4 is a ProtocolError. When the frame carries no usable uniqueId
the CALLERROR uses "-1", as OCPP 2.0.1 prescribes (1.6 says nothing).

Two kinds of valid JSON are refused as FormationViolation too, because nothing
after parsing could handle them safely: nesting deeper than `MAX_NESTING_DEPTH`
(no OCPP 1.6 message goes beyond 6 levels; Python's own parser gives up near 1,000
with a RecursionError), and text holding a lone UTF-16 surrogate (the escape
`"\\ud800"` with no partner): it is not Unicode, so it can be neither stored in
SQLite nor encoded as UTF-8 again.

Frames are parsed and answers encoded with orjson, three times quicker than the
standard library's json on a MeterValues frame. What orjson refuses (NaN, 1e400, a lone
surrogate, nesting beyond 1,024 levels) is parsed again by `json`, so those frames are
judged as before. One difference remains: orjson reads an integer beyond 64 bits as a
float. An integer field refuses it either way (edge/ocpp/schemas.py bounds every integer
to 64 bits), with the same CALLERROR, its description showing the number as a float; a
number field (a charging limit) holds the same quantity as a float.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
from ocpp.exceptions import FormationViolationError, OCPPError, ProtocolError

from edge.ocpp.library import Call, CallError, CallResult

UNKNOWN_UNIQUE_ID = "-1"
MAX_UNIQUE_ID_LENGTH = 36
# The deepest OCPP 1.6 frame (MeterValues, SetChargingProfile) nests 6 levels.
MAX_NESTING_DEPTH = 16
# A charger's CALLERROR is stored with the command; OCPP's own codes are <= 28 characters.
MAX_ERROR_CODE_LENGTH = 50
MAX_ERROR_DESCRIPTION_LENGTH = 1000
TRUNCATED = " [truncated]"

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
    message = _loads(raw)
    if not isinstance(message, list) or not message:
        raise FrameError(
            FormationViolationError(description="an OCPP-J frame is a JSON array"),
            UNKNOWN_UNIQUE_ID,
        )
    message_type = message[0]
    unique_id = _unique_id(message)
    # Cheap screens first (C-speed substring counts); the walks run only when they hit.
    if raw.count("[") + raw.count("{") > MAX_NESTING_DEPTH and (
        _depth(message) > MAX_NESTING_DEPTH
    ):
        raise _too_deep(unique_id or UNKNOWN_UNIQUE_ID, answer=message_type not in (3, 4))
    if "\\u" in raw and ("\\ud" in raw or "\\uD" in raw) and _holds_lone_surrogate(message):
        raise FrameError(
            FormationViolationError(
                description="the frame holds a lone UTF-16 surrogate escape (such as \\ud800): "
                "that is not Unicode text"
            ),
            UNKNOWN_UNIQUE_ID if unique_id is None else unique_id,
            answer=message_type not in (3, 4),
        )
    if message_type == 2:
        return _call(message, unique_id)
    if message_type == 3:
        if len(message) != 3 or unique_id is None or not isinstance(message[2], dict):
            raise _malformed("CALLRESULT", unique_id, answer=False)
        return CallResult(unique_id, message[2])
    if message_type == 4:
        if (
            len(message) != 5
            or unique_id is None
            or not isinstance(message[2], str)
            or not isinstance(message[3], str)
            or not isinstance(message[4], dict)
        ):
            raise _malformed("CALLERROR", unique_id, answer=False)
        return CallError(
            unique_id,
            bounded(message[2], MAX_ERROR_CODE_LENGTH),
            bounded(message[3], MAX_ERROR_DESCRIPTION_LENGTH),
            message[4],
        )
    raise FrameError(
        ProtocolError(
            description=f"unknown MessageTypeId {bounded(repr(message_type), 40)}: "
            "expected 2, 3 or 4"
        ),
        unique_id or UNKNOWN_UNIQUE_ID,
    )


def _loads(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # parsed again by `json`: it takes NaN and more, and its error says why
    try:
        return json.loads(raw)
    except ValueError as error:
        raise FrameError(
            FormationViolationError(description=f"frame is not valid JSON: {error}"),
            UNKNOWN_UNIQUE_ID,
        ) from error
    except RecursionError as error:
        raise _too_deep(UNKNOWN_UNIQUE_ID) from error


def bounded(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with a marker saying so."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def _call(message: list[Any], unique_id: str | None) -> Call:
    if len(message) != 4 or unique_id is None:
        raise _malformed("CALL", unique_id, answer=True)
    action, payload = message[2], message[3]
    if not isinstance(action, str):
        raise _malformed("CALL", unique_id, answer=True)
    if not isinstance(payload, dict):
        raise FrameError(
            FormationViolationError(
                description=f"the payload of {bounded(action, 64)} must be a JSON object"
            ),
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


def _depth(message: Any) -> int:
    """How deeply `message` nests arrays and objects (without recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(message, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))
    return deepest


def _holds_lone_surrogate(message: Any) -> bool:
    """Whether any key or string in `message` holds a surrogate code point: json.loads
    joins valid pairs, so any left is alone."""
    stack: list[Any] = [message]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            texts: list[str] = [value]
        elif isinstance(value, dict):
            texts = list(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            texts = []
            stack.extend(value)
        else:
            continue
        for text in texts:
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    return True
    return False


def _too_deep(unique_id: str, *, answer: bool = True) -> FrameError:
    return FrameError(
        FormationViolationError(
            description=f"the frame nests arrays and objects deeper than {MAX_NESTING_DEPTH} "
            "levels; no OCPP 1.6 message does"
        ),
        unique_id,
        answer=answer,
    )


def _malformed(kind: str, unique_id: str | None, *, answer: bool) -> FrameError:
    shapes = {
        "CALL": "[2, uniqueId, action, {payload}]",
        "CALLRESULT": "[3, uniqueId, {payload}]",
        "CALLERROR": '[4, uniqueId, "errorCode", "errorDescription", {errorDetails}]',
    }
    return FrameError(
        FormationViolationError(
            description=f"a {kind} is {shapes[kind]} with a uniqueId of at most "
            f"{MAX_UNIQUE_ID_LENGTH} characters"
        ),
        unique_id or UNKNOWN_UNIQUE_ID,
        answer=answer,
    )


def encode_call(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    return _CALL_ENCODER.encode([2, unique_id, action, payload])


def encode_call_text(unique_id: str, action: str, payload_text: str) -> str:
    """A CALL around a payload already encoded (shared by many chargers' frames)."""
    return f"[2,{_COMPACT.encode(unique_id)},{_COMPACT.encode(action)},{payload_text}]"


def _number(value: Any) -> Any:
    # Charging schedules may hold Decimal (the ocpp library's types for multipleOf 0.1).
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


# Made once: json.dumps with options builds an encoder for every frame.
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_CALL_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_number)


def encode_call_result(unique_id: str, payload: dict[str, Any]) -> str:
    frame = [3, unique_id, payload]
    try:
        return orjson.dumps(frame, default=_number).decode()
    except orjson.JSONEncodeError:  # text that is not Unicode: json escapes it
        return _CALL_ENCODER.encode(frame)


def encode_call_error(unique_id: str, error: OCPPError) -> str:
    details = error.details if isinstance(error.details, dict) else {}
    return json.dumps(
        [4, unique_id, error.code, error.description or "", details],
        separators=(",", ":"),
        default=str,
    )
