"""OCPP-J frame parsing: what is a frame, and which error names what is wrong."""

from __future__ import annotations

import json

import pytest
from ocpp.exceptions import FormationViolationError

from edge.ocpp.frames import FrameError, encode_call_error, parse_frame


def test_parses_the_three_message_types() -> None:
    call = parse_frame('[2,"a","Heartbeat",{}]')
    assert (call.message_type_id, call.unique_id, call.action, call.payload) == (
        2,
        "a",
        "Heartbeat",
        {},
    )
    result = parse_frame('[3,"b",{"x":1}]')
    assert (result.message_type_id, result.payload) == (3, {"x": 1})
    error = parse_frame('[4,"c","GenericError","oops",{}]')
    assert (error.message_type_id, error.error_code) == (4, "GenericError")


@pytest.mark.parametrize(
    ("frame", "code", "unique_id", "answer"),
    [
        ("{", "FormationViolation", "-1", True),
        ("[]", "FormationViolation", "-1", True),
        ('[2, 17, "Heartbeat", {}]', "FormationViolation", "-1", True),
        ('[2, "' + "x" * 37 + '", "Heartbeat", {}]', "FormationViolation", "-1", True),
        ('[9, "z", "Heartbeat", {}]', "ProtocolError", "z", True),
        ('[3, "r"]', "FormationViolation", "r", False),
        ('[4, "r", 5, "d", {}]', "FormationViolation", "r", False),
    ],
)
def test_malformed_frames(frame: str, code: str, unique_id: str, answer: bool) -> None:
    with pytest.raises(FrameError) as raised:
        parse_frame(frame)
    assert (raised.value.error.code, raised.value.unique_id, raised.value.answer) == (
        code,
        unique_id,
        answer,
    )


def test_call_error_encoding_is_ocpp_j() -> None:
    frame = json.loads(encode_call_error("u1", FormationViolationError(description="bad")))
    assert frame == [4, "u1", "FormationViolation", "bad", {}]
