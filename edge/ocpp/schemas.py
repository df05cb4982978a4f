"""Validating OCPP 1.6 payloads against the official JSON schemas, compiled.

The schemas are the ones the `ocpp` library ships, each checked by up to two compiled
validators:
- jsonschema_rs (Rust) answers first, and a frame it accepts is valid. Nearly every
  frame is, and it decides a MeterValues in a quarter of the time Python code takes
  (docs/performance.md);
- fastjsonschema (the schema compiled to Python) judges only what jsonschema_rs refuses
  or cannot take (a key that is not Unicode). Its verdict stands, and its error names
  the rule broken, which becomes the OCPP-J 1.6 error code.
Both read the schemas as JSON Schema 2019-09 (the `$schema` line is dropped), which
takes 1.0 where an integer is due, as some chargers send it.
tests/unit/test_schemas.py checks, on frames generated from every schema, that nothing
jsonschema_rs accepts is refused by fastjsonschema. The two share this module's format
checks, so they agree on dates and URIs by construction.

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
import re
from collections.abc import Callable
from datetime import UTC
from typing import Any

import fastjsonschema
import jsonschema_rs
from fastjsonschema.draft2019 import CodeGeneratorDraft2019
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


def _is_uri(text: str) -> bool:
    return _URI.match(text) is not None


# fastjsonschema's own URI rule, given to both validators.
_URI = re.compile(CodeGeneratorDraft2019.FORMAT_REGEXS["uri"])
_FORMATS: dict[str, Callable[[str], bool]] = {"date-time": _is_date_time, "uri": _is_uri}


@functools.cache
def _schema(schema_name: str) -> dict[str, Any]:
    try:
        schema = json.loads(schema_text(schema_name))
    except FileNotFoundError as error:
        raise NotImplementedError(description=f"no OCPP 1.6 schema for {schema_name}") from error
    schema.pop("$schema", None)
    refined: dict[str, Any] = _refined(schema)
    return refined


@functools.cache
def _validator(schema_name: str) -> Callable[[Any], Any]:
    """The judge: fastjsonschema, whose error names the rule."""
    compiled: Callable[[Any], Any] = fastjsonschema.compile(_schema(schema_name), formats=_FORMATS)
    return compiled


@functools.cache
def _fast_check(schema_name: str) -> jsonschema_rs.Validator:
    """The first answer: jsonschema_rs, trusted when it says valid."""
    # The judge's draft: fastjsonschema reads a schema without "$schema" as 2019-09.
    return jsonschema_rs.Draft201909Validator(
        _schema(schema_name), validate_formats=True, formats=_FORMATS
    )


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
        if _fast_check(schema_name).is_valid(payload):
            return
    except (ValueError, TypeError, OverflowError):
        pass  # what it cannot take (a key that is not Unicode): the judge decides
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
