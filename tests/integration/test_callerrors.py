"""Bad frames get the OCPP-J 1.6 CALLERROR that names the fault; the connection stays up
and nothing of the bad message reaches the store."""

from __future__ import annotations

import json

import pytest

from tests.conftest import RunningEdge
from tests.ocpp_client import RawCharger

DATA_TABLES = (
    "transactions",
    "meter_values",
    "status_history",
    "connectors",
    "id_tags",
    "data_transfers",
)


def data_counts(edge: RunningEdge) -> dict[str, int]:
    return {table: edge.query(f"SELECT count(*) FROM {table}")[0][0] for table in DATA_TABLES}


@pytest.mark.parametrize(
    ("frame", "code", "unique_id"),
    [
        ("this is not json", "FormationViolation", "-1"),
        ('{"an": "object"}', "FormationViolation", "-1"),
        ('[2, "u1", "Heartbeat"]', "FormationViolation", "u1"),
        ('[2, "u2", "Heartbeat", []]', "FormationViolation", "u2"),
        ('[7, "u3", "Heartbeat", {}]', "ProtocolError", "u3"),
        ('[2, "u4", "MakeCoffee", {}]', "NotImplemented", "u4"),
        ('[2, "u5", "RemoteStartTransaction", {"idTag": "A"}]', "NotSupported", "u5"),
        (
            '[2, "u6", "StartTransaction", {"connectorId": "one", "idTag": "A", "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"}]',
            "TypeConstraintViolation",
            "u6",
        ),
        (
            '[2, "u7", "StartTransaction", {"connectorId": 1, "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"}]',
            "ProtocolError",
            "u7",
        ),
        (
            '[2, "u8", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}]',
            "PropertyConstraintViolation",
            "u8",
        ),
        ('[2, "u9", "Heartbeat", {"extra": 1}]', "FormationViolation", "u9"),
        (
            '[2, "u10", "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": "not a time"}]',
            "TypeConstraintViolation",
            "u10",
        ),
        (
            '[2, "u11", "Authorize", {"idTag": "123456789012345678901"}]',
            "TypeConstraintViolation",
            "u11",
        ),
        (
            '[2, "u12", "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "1", "unit": "parsecs"}]}]}]',
            "PropertyConstraintViolation",
            "u12",
        ),
        (
            # The store's own shape of time, but no such day: refused, not stored as sent.
            '[2, "u13", "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "2026-02-30T00:00:00.000Z", "sampledValue": [{"value": "1"}]}]}]',
            "TypeConstraintViolation",
            "u13",
        ),
    ],
)
async def test_bad_frame_gets_callerror_and_connection_stays_up(
    edge: RunningEdge, frame: str, code: str, unique_id: str
) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        before = data_counts(edge)
        reply = await charger.send_raw(frame)
        assert reply[0] == 4 and reply[1] == unique_id and reply[2] == code, reply
        assert isinstance(reply[3], str) and reply[3]
        assert isinstance(reply[4], dict)
        # Same connection, next message: answered normally.
        assert (await charger.ok("Heartbeat", {}))["currentTime"]
        assert data_counts(edge) == before


async def test_binary_frame_is_a_formation_violation(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        reply = await charger.send_raw(b"\x00\x01")
        assert reply[2] == "FormationViolation"
        assert (await charger.ok("Heartbeat", {}))["currentTime"]


async def test_failing_handler_answers_internal_error_and_writes_nothing(edge: RunningEdge) -> None:
    def explode(message_id: str | None, data: str | None) -> tuple[str, str | None]:
        raise RuntimeError("vendor plug-in bug")

    edge.server.context.data_transfer.register("com.broken", explode)
    async with RawCharger(edge.url, "CP1") as charger:
        reply = await charger.call("DataTransfer", {"vendorId": "com.broken"})
        assert reply[2] == "InternalError"
        assert (await charger.ok("Heartbeat", {}))["currentTime"]
    assert edge.query("SELECT count(*) FROM data_transfers")[0][0] == 0


async def test_stray_callresult_is_not_answered(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        assert charger.connection is not None
        await charger.connection.send(json.dumps([3, "nobody-asked", {}]))
        await charger.connection.send(json.dumps([3]))
        # The next frame we receive answers the heartbeat: nothing answered the responses.
        assert (await charger.ok("Heartbeat", {}))["currentTime"]
