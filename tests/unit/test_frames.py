"""OCPP-J frame parsing: what is a frame, and which error names what is wrong."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.exceptions import FormationViolationError

from edge.ocpp.frames import FrameError, encode_call_error, encode_call_result, parse_frame


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


# JSON values as chargers send them: any text, integers within 64 bits, finite floats.
_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES, st.booleans(), st.sampled_from([(",", ":"), (", ", ": ")]))
def test_a_frame_reads_as_the_standard_library_reads_it(
    payload: Any, ascii_only: bool, separators: tuple[str, str]
) -> None:
    """orjson reads the frames; whatever it reads, `json` would have read the same."""
    text = json.dumps(
        [2, "u1", "DataTransfer", {"data": payload}], ensure_ascii=ascii_only, separators=separators
    )
    assert parse_frame(text).payload == json.loads(text)[3]


@pytest.mark.parametrize(
    ("literal", "check"),
    [
        ("NaN", math.isnan),
        ("-Infinity", lambda value: value == -math.inf),
        ("1e400", lambda value: value == math.inf),
    ],
)
def test_what_orjson_refuses_json_still_reads(literal: str, check: Callable[[Any], bool]) -> None:
    """Not JSON, but chargers send it and the schemas judge it (as before orjson)."""
    frame = parse_frame(f'[2,"u1","DataTransfer",{{"vendorId":"v","data":{literal}}}]')
    assert check(frame.payload["data"])


def test_a_lone_surrogate_is_still_a_formation_violation_with_its_unique_id() -> None:
    with pytest.raises(FrameError) as raised:
        parse_frame('[2,"u7","DataTransfer",{"vendorId":"\\ud800"}]')
    assert (raised.value.error.code, raised.value.unique_id) == ("FormationViolation", "u7")


def test_an_integer_beyond_64_bits_is_read_as_a_float() -> None:
    frame = parse_frame(
        '[2,"u1","DataTransfer",{"data":[18446744073709551616,-9223372036854775809]}]'
    )
    assert frame.payload["data"] == [float(2**64), float(-(2**63) - 1)]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _JSON_VALUES, max_size=4))
def test_an_answer_reads_back_as_what_was_answered(payload: dict[str, Any]) -> None:
    assert json.loads(encode_call_result("u1", payload)) == [3, "u1", payload]


def test_an_answer_is_compact_json() -> None:
    answer = {"status": "Accepted", "currentTime": "2026-12-04T10:00:00.000Z", "interval": 300}
    assert encode_call_result("u1", answer) == (
        '[3,"u1",{"status":"Accepted","currentTime":"2026-12-04T10:00:00.000Z","interval":300}]'
    )


def test_an_answer_holding_text_that_is_not_unicode_is_escaped() -> None:
    """orjson refuses a lone surrogate; json escapes it, and the answer still goes."""
    text = encode_call_result("u1", {"data": "a\ud800", "limit": Decimal("7.5")})
    assert text == '[3,"u1",{"data":"a\\ud800","limit":7.5}]'
