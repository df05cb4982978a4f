"""The `ocpp` library's insides, as the edge uses them, in one place.

The edge takes from mobilityhouse/ocpp its documented API (the `call`/`call_result`
dataclasses, enums, datatypes, exceptions, `ChargePoint`, the `@on` decorator) and a few
things it does not document: the frame classes in `ocpp.messages`, the shape of a
ChargePoint's `route_map` (handlers under "_on_action"), and where it ships the OCPP 1.6
JSON schemas. Everything that depends on those is here; tests/unit/test_ocpp_library.py
fails if the library changes them, before a session fails with a charger.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from ocpp.messages import Call, CallError, CallResult
from ocpp.routing import on
from ocpp.v16 import ChargePoint

__all__ = [
    "Call",
    "CallError",
    "CallResult",
    "ChargePoint",
    "Handler",
    "handler_for",
    "on",
    "schema_text",
    "set_handler",
]

Handler = Callable[..., Awaitable[Any]]

# The key under which `create_route_map` files an action's `@on` handler.
_ON_ACTION = "_on_action"


def handler_for(charge_point: ChargePoint, action: str) -> Handler | None:
    """`charge_point`'s `@on(action)` handler, bound; None when it has none."""
    handler: Handler | None = charge_point.route_map.get(action, {}).get(_ON_ACTION)
    return handler


def set_handler(charge_point: ChargePoint, action: str, handler: Handler | None) -> None:
    """Answer `action` with `handler` from now on; None: answer it with no handler at
    all (the simulator's misbehaving chargers)."""
    if handler is None:
        charge_point.route_map.pop(action, None)
    else:
        charge_point.route_map.setdefault(action, {})[_ON_ACTION] = handler


def schema_text(name: str) -> str:
    """The OCPP 1.6 JSON schema `name` ("BootNotification", "BootNotificationResponse")
    as the library ships it; FileNotFoundError when there is none."""
    return resources.files("ocpp").joinpath("v16", "schemas", f"{name}.json").read_text("utf-8")
