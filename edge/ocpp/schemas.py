"""Validating OCPP 1.6 payloads against the official JSON schemas, compiled.

The schemas are the ones the `ocpp` library ships. They are compiled to Python once
per action with fastjsonschema, which checks a MeterValues frame many times faster
than an interpreted validator; what is valid does not change. A schema violation
becomes the OCPP-J 1.6 error code that names it.

Before compiling, the rules the specification states in words and the JSON schemas
leave out are added (`_refined`): a connectorId is never negative, an idTag is not
empty, and an integer fits the 64 bits the store keeps (the specification's own
integers are 32-bit; a charger's lifetime energy register can outgrow that, so the
edge takes what it can store). A charger breaking one is answered with a CALLERROR
instead of failing in the store.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC
from typing import Any

import fastjsonschema
from ocpp.exceptions import (
    FormationViolationError,
    NotImplementedError,
    OccurenceConstraintViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    ProtocolError,
    TypeConstraintViolationError,
)

from edge.clock import parse_timestamp
from edge.ocpp.library import schema_text

_ERROR_FOR_RULE: dict[str, type[OCPPError]] = {
    "type": TypeConstraintViolationError,
    "maxLength": TypeConstraintViolationError,
    "minLength": TypeConstraintViolationError,
    "format": TypeConstraintViolationError,
    "multipleOf": TypeConstraintViolationError,
    "required": ProtocolError,
    "minItems": OccurenceConstraintViolationError,
    "maxItems": OccurenceConstraintViolationError,
    "enum": PropertyConstraintViolationError,
    "minimum": PropertyConstraintViolationError,
    "maximum": PropertyConstraintViolationError,
    "pattern": PropertyConstraintViolationError,
    "additionalProperties": FormationViolationError,
}


def _is_date_time(text: str) -> bool:
    # OCPP's dateTime is ISO-8601; chargers often omit the offset (read as UTC). It must
    # also be a moment in UTC (0001-01-01T00:00+00:01 is not: that is year 0).
    try:
        parse_timestamp(text).astimezone(UTC)
    except (ValueError, OverflowError):
        return False
    return True


@functools.cache
def _validator(schema_name: str) -> Callable[[Any], Any]:
    try:
        schema = json.loads(schema_text(schema_name))
    except FileNotFoundError as error:
        raise NotImplementedError(description=f"no OCPP 1.6 schema for {schema_name}") from error
    schema.pop("$schema", None)
    compiled: Callable[[Any], Any] = fastjsonschema.compile(
        _refined(schema), formats={"date-time": _is_date_time}
    )
    return compiled


# The specification's rules in words, by property name: what the JSON schemas omit.
_PROPERTY_RULES: dict[str, dict[str, Any]] = {
    "connectorId": {"minimum": 0},
    "idTag": {"minLength": 1},
}
_SMALLEST_INTEGER, _LARGEST_INTEGER = -(2**63), 2**63 - 1


def _refined(schema: Any) -> Any:
    """`schema` with `_PROPERTY_RULES` and 64-bit bounds on every integer added."""
    if isinstance(schema, list):
        return [_refined(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    refined = {key: _refined(value) for key, value in schema.items()}
    if refined.get("type") == "integer":
        refined.setdefault("minimum", _SMALLEST_INTEGER)
        refined.setdefault("maximum", _LARGEST_INTEGER)
    for name, rules in _PROPERTY_RULES.items():
        prop = refined.get("properties", {}).get(name)
        if isinstance(prop, dict):
            refined["properties"][name] = {**prop, **rules}
    return refined


def validate_request(action: str, payload: dict[str, Any]) -> None:
    _validate(action, action, payload)


def validate_response(action: str, payload: dict[str, Any]) -> None:
    _validate(action, f"{action}Response", payload)


def _validate(action: str, schema_name: str, payload: dict[str, Any]) -> None:
    try:
        _validator(schema_name)(payload)
    except fastjsonschema.JsonSchemaValueException as error:
        error_class = _ERROR_FOR_RULE.get(error.rule or "", FormationViolationError)
        field = (error.name or "data").removeprefix("data").lstrip(".") or "payload"
        raise error_class(
            description=f"{action}: {field} {_reason(error)}",
            details={"field": field, "rule": error.rule},
        ) from error


def _reason(error: fastjsonschema.JsonSchemaValueException) -> str:
    message = str(error.message)
    # fastjsonschema says "data.x must be ..."; keep the part after the field name.
    return message.split(" ", 1)[1] if message.startswith("data") else message
