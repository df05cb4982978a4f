"""The `ocpp` library still has the shape edge/ocpp/library.py relies on: its route map,
its frame classes, its schema files. Fails on a library upgrade that changes them,
before any charger does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from edge.ocpp.library import (
    Call,
    CallError,
    CallResult,
    ChargePoint,
    handler_for,
    on,
    schema_text,
    set_handler,
)


class _Charger(ChargePoint):  # type: ignore[misc]
    @on(Action.heartbeat)
    async def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time="2026-01-01T00:00:00Z")


def _charger() -> _Charger:
    return _Charger("CP1", connection=None, response_timeout=1)


async def test_an_on_handler_is_found_bound_by_its_action() -> None:
    charger = _charger()
    handler = handler_for(charger, "Heartbeat")
    assert handler is not None
    assert (await handler()).current_time == "2026-01-01T00:00:00Z"
    assert handler_for(charger, "BootNotification") is None
    assert handler_for(charger, "NoSuchAction") is None


async def test_a_handler_can_be_replaced_and_removed() -> None:
    charger = _charger()

    async def other(**_: Any) -> str:
        return "other"

    set_handler(charger, "Heartbeat", other)
    replaced = handler_for(charger, "Heartbeat")
    assert replaced is not None and await replaced() == "other"
    set_handler(charger, "Heartbeat", None)
    assert handler_for(charger, "Heartbeat") is None
    set_handler(charger, "Reset", other)
    assert handler_for(charger, "Reset") is other


def test_the_frame_classes_take_and_keep_their_fields() -> None:
    request = Call("id-1", "Heartbeat", {})
    assert (request.message_type_id, request.unique_id, request.action, request.payload) == (
        2,
        "id-1",
        "Heartbeat",
        {},
    )
    result = CallResult("id-1", {"currentTime": "x"})
    assert (result.message_type_id, result.unique_id, result.payload) == (
        3,
        "id-1",
        {"currentTime": "x"},
    )
    error = CallError("id-1", "NotImplemented", "no", {})
    assert (error.message_type_id, error.error_code, error.error_description) == (
        4,
        "NotImplemented",
        "no",
    )


@pytest.mark.parametrize("name", ["BootNotification", "BootNotificationResponse", "MeterValues"])
def test_the_v16_schemas_are_shipped_where_expected(name: str) -> None:
    schema = json.loads(schema_text(name))
    assert schema["type"] == "object" and "properties" in schema


def test_a_missing_schema_is_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        schema_text("NoSuchAction")
