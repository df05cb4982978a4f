"""Validating OCPP 1.6 payloads against the official JSON schemas, compiled.

The schemas are the ones the `ocpp` library ships. They are compiled to Python once
per action with fastjsonschema, which checks a MeterValues frame many times faster
than an interpreted validator; what is valid does not change. A schema violation
becomes the OCPP-J 1.6 error code that names it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from importlib import resources
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
    # OCPP's dateTime is ISO-8601; chargers often omit the offset (read as UTC).
    try:
        parse_timestamp(text)
    except ValueError:
        return False
    return True


@functools.cache
def _validator(schema_name: str) -> Callable[[Any], Any]:
    schema_file = resources.files("ocpp").joinpath("v16", "schemas", f"{schema_name}.json")
    try:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise NotImplementedError(description=f"no OCPP 1.6 schema for {schema_name}") from error
    schema.pop("$schema", None)
    compiled: Callable[[Any], Any] = fastjsonschema.compile(
        schema, formats={"date-time": _is_date_time}
    )
    return compiled


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
