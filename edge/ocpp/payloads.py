"""Payload keys between OCPP's camelCase and Python's snake_case, and the wire form
of the `ocpp` library's result dataclasses. Key conversions are cached: the same
few dozen keys arrive millions of times; the caches are bounded, since keys come from
chargers and the cloud and an unbounded cache would grow with every new one."""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

_FIRST = re.compile(r"(.)([A-Z][a-z]+)")
_SECOND = re.compile(r"([a-z0-9])([A-Z])")


# OCPP 1.6 has a few hundred field names; beyond these, the least used are dropped.
KEYS_CACHED = 1024


@functools.lru_cache(maxsize=KEYS_CACHED)
def snake_case(key: str) -> str:
    return _SECOND.sub(r"\1_\2", _FIRST.sub(r"\1_\2", key)).lower()


@functools.lru_cache(maxsize=KEYS_CACHED)
def camel_case(key: str) -> str:
    first, *rest = key.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def keyword_arguments(payload: dict[str, Any]) -> dict[str, Any]:
    """A CALL's top-level fields as snake_case keyword arguments for its handler.

    Nested objects (meterValue, sampledValue...) stay as they are on the wire: the
    handlers that read them know their camelCase keys, and converting every nested
    key of every frame was a measurable share of the time per message.
    """
    return {snake_case(key): value for key, value in payload.items()}


@functools.cache
def _field_names(cls: type) -> tuple[tuple[str, str], ...]:
    return tuple((field.name, camel_case(field.name)) for field in dataclasses.fields(cls))


def to_wire(data: Any) -> Any:
    """A library dataclass as an OCPP payload: camelCase keys, None fields left out."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        wire = {}
        for name, key in _field_names(type(data)):
            value = getattr(data, name)
            if value is not None:
                wire[key] = to_wire(value)
        return wire
    if isinstance(data, list):
        return [to_wire(item) for item in data]
    if isinstance(data, dict):
        return {camel_case(key): to_wire(value) for key, value in data.items()}
    return data
