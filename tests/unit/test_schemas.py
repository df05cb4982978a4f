"""The two validators of edge/ocpp/schemas.py: jsonschema_rs answers first and is
trusted when it says valid, so it must never accept what fastjsonschema, the judge,
refuses. Checked on payloads generated from every OCPP 1.6 schema and then broken."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from ocpp.exceptions import (
    FormationViolationError,
    PropertyConstraintViolationError,
    TypeConstraintViolationError,
)

from edge.ocpp import schemas
from edge.ocpp.frames import parse_frame

SCHEMA_NAMES = sorted(
    entry.name.removesuffix(".json")
    for entry in resources.files("ocpp").joinpath("v16", "schemas").iterdir()
    if entry.name.endswith(".json")
)

# Any JSON value, with the numbers chargers get wrong: floats where integers are due,
# integers beyond 64 bits, NaN and infinities (json.loads takes them).
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.integers(min_value=-5, max_value=5).map(float)
    | st.text(max_size=60)
    | st.sampled_from(["2026-02-30T00:00:00Z", "2026-12-04T10:00:00", "ftp://x/y", "Accepted"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _judge_accepts(schema_name: str, payload: Any) -> bool:
    try:
        schemas._validator(schema_name)(payload)
    except fastjsonschema.JsonSchemaValueException:
        return False
    except (ArithmeticError, ValueError):  # numbers the judge cannot take: refused
        return False
    return True


def _fast_check_accepts(schema_name: str, payload: Any) -> bool:
    try:
        return bool(schemas._fast_check(schema_name).is_valid(payload))
    except (ValueError, TypeError, OverflowError):
        return False


@st.composite
def _broken(draw: st.DrawFn, payload: Any) -> Any:
    """`payload` with one value, anywhere in it, replaced or one key added."""
    if not isinstance(payload, (dict, list)) or not payload:
        return draw(JSON_VALUES)
    keys = list(payload) if isinstance(payload, dict) else list(range(len(payload)))
    key = draw(st.sampled_from(keys))
    copy = dict(payload) if isinstance(payload, dict) else list(payload)
    action = draw(st.sampled_from(["replace", "descend", "add"]))
    if action == "descend":
        copy[key] = draw(_broken(copy[key]))
    elif action == "add" and isinstance(copy, dict):
        copy[draw(st.text(max_size=12))] = draw(JSON_VALUES)
    else:
        copy[key] = draw(JSON_VALUES)
    return copy


@pytest.mark.parametrize("schema_name", SCHEMA_NAMES)
def test_what_jsonschema_rs_accepts_fastjsonschema_accepts(schema_name: str) -> None:
    # Without its "$id" hypothesis-jsonschema resolves the schema's "#/definitions" refs.
    schema = {key: value for key, value in schemas._schema(schema_name).items() if key != "$id"}
    generated = from_schema(schema)
    payloads = generated | generated.flatmap(_broken) | JSON_VALUES
    agreements = {"valid": 0}

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )
    @given(payloads)
    def agree(payload: Any) -> None:
        if _fast_check_accepts(schema_name, payload):
            agreements["valid"] += 1
            assert _judge_accepts(schema_name, payload), payload

    agree()
    # The generated payloads are valid ones too: the check above was exercised.
    assert agreements["valid"] > 0


def test_a_float_where_an_integer_is_due_is_taken_by_both() -> None:
    """Both read the schemas as 2019-09: 10.0 is an integer, as some chargers send it."""
    payload = {
        "connectorId": 1,
        "idTag": "A",
        "meterStart": 10.0,
        "timestamp": "2026-01-01T00:00:00Z",
    }
    assert schemas._fast_check("StartTransaction").is_valid(payload)
    assert _judge_accepts("StartTransaction", payload)
    with pytest.raises(TypeConstraintViolationError):
        schemas.validate_request("StartTransaction", {**payload, "meterStart": 10.5})


@pytest.mark.parametrize(
    ("payload", "error", "field"),
    [
        ({"connectorId": -1}, PropertyConstraintViolationError, "connectorId"),
        ({"status": "Sideways"}, PropertyConstraintViolationError, "status"),
        ({"timestamp": "2026-02-30T00:00:00Z"}, TypeConstraintViolationError, "timestamp"),
        ({"info": "x" * 51}, TypeConstraintViolationError, "info"),
        ({"surplus": 1}, FormationViolationError, "payload"),
    ],
)
def test_what_is_refused_is_named_by_the_judge(
    payload: dict[str, Any], error: type[Exception], field: str
) -> None:
    valid = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
    with pytest.raises(error) as raised:
        schemas.validate_request("StatusNotification", {**valid, **payload})
    assert raised.value.details["field"] == field  # type: ignore[attr-defined]


def test_a_key_that_is_not_unicode_is_refused_not_raised() -> None:
    """jsonschema_rs cannot take it at all; the judge refuses it."""
    with pytest.raises(FormationViolationError):
        schemas.validate_request("Heartbeat", {"\ud800": 1})


def test_an_integer_beyond_64_bits_gets_the_same_error_after_parsing() -> None:
    """orjson reads it as a float (edge/ocpp/frames.py): still out of range."""
    frame = parse_frame(
        '[2,"u","StatusNotification",{"connectorId":18446744073709551616,'
        '"errorCode":"NoError","status":"Available"}]'
    )
    with pytest.raises(PropertyConstraintViolationError):
        schemas.validate_request("StatusNotification", frame.payload)
    assert json.loads('{"a": 18446744073709551616}')["a"] == 2**64
