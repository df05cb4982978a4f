"""Input that breaks the rules before any handler sees it: JSON nested far beyond any
OCPP message (answered FormationViolation, the connection stays up), and a command
whose body breaks its schema sent to a charger that is offline (422, nothing stored)."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError

from tests.adversarial.hostile import HostileCharger, daemon_runs, well_behaved_charger_is_served
from tests.conftest import RunningEdge, StartEdge
from tests.waiting import eventually


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        '[2, "deep-1", "DataTransfer", {"vendorId": "x", "data": ' + "[" * 900 + "]" * 900 + "}]",
        '[2, "deep-2", "Heartbeat", ' + '{"a":' * 500 + "{}" + "}" * 500 + "]",
    ],
    ids=["unclosed", "100000-deep", "900-deep-data", "500-deep-payload"],
)
async def test_deep_nesting_is_a_formation_violation(edge: RunningEdge, frame: str) -> None:
    async with HostileCharger(edge.url, "DEEP1") as charger:
        reply = await charger.send_raw(frame)
        assert reply[0] == 4 and reply[2] == "FormationViolation", reply
        assert reply[1] in ("-1", "deep-1", "deep-2")
        # Same connection, next call: answered as ever.
        assert (await charger.ok("Heartbeat", {}))["currentTime"]
    assert daemon_runs(edge)


async def test_deeply_nested_answer_to_a_command_is_recorded(start_edge: StartEdge) -> None:
    edge = await start_edge(push_local_list=True)
    versions = "WHERE action = 'GetLocalListVersion'"
    async with HostileCharger(edge.url, "DEEP2") as charger:
        await charger.boot()
        await charger.answer_local_list_keys()
        call = await charger.next_call("GetLocalListVersion")
        await charger.send_only(f'[3, "{call[1]}", {{"listVersion": {"[" * 800}{"]" * 800}}}]')
        assert (await charger.ok("Heartbeat", {}))["currentTime"]
        await eventually(
            lambda: edge.query(f"SELECT outcome FROM commands {versions}")[0][0] != "sent",
            within=15,
        )
    rows = edge.query(f"SELECT outcome, error_code FROM commands {versions}")
    assert [tuple(row) for row in rows] == [("callerror", "FormationViolation")]
    await well_behaved_charger_is_served(edge)


async def test_schema_breaking_command_to_offline_charger_is_422_and_not_stored(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(with_api=True)
    await edge.execute("INSERT INTO chargers (id, created_at) VALUES ('GONE1', 'x')")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.api_port}") as api:
        bad = await api.post("/api/chargers/GONE1/commands/Reset", json={"type": "Sideways"})
        assert bad.status_code == 422, bad.text
        assert "type" in bad.json()["detail"]
        reserve = {"connectorId": 1, "idTag": "X" * 30, "expiryDate": "2030-01-01T00:00:00Z"}
        bad = await api.post("/api/chargers/GONE1/commands/ReserveNow", json=reserve)
        assert bad.status_code == 422, bad.text
        assert edge.query("SELECT count(*) FROM commands")[0][0] == 0
        # The reservation the check allocated was undone with it.
        assert edge.query("SELECT count(*) FROM reservations")[0][0] == 0
        # A valid one is still recorded as sent to an offline charger.
        good = await api.post("/api/chargers/GONE1/commands/Reset", json={"type": "Soft"})
        assert good.status_code == 409, good.text
    assert [tuple(row) for row in edge.query("SELECT action, outcome FROM commands")] == [
        ("Reset", "offline")
    ]


async def test_meter_values_that_are_not_numbers_are_stored_as_text(edge: RunningEdge) -> None:
    """Strings a float() takes but no meter reads (found by the fuzzer): answered and stored
    raw, with no number beside them."""
    odd = ["1e400", "nan", "-Infinity", "999999999999999999999999999999"]
    async with HostileCharger(edge.url, "ODD1") as charger:
        payload = {
            "connectorId": 1,
            "meterValue": [
                {
                    "timestamp": "2026-01-01T00:00:00Z",
                    "sampledValue": [{"value": value} for value in odd],
                }
            ],
        }
        assert await charger.ok("MeterValues", payload) == {}
    rows = edge.query("SELECT value, normalized, wh FROM meter_values ORDER BY id")
    assert [tuple(row) for row in rows] == [(value, None, None) for value in odd]


async def test_text_frame_that_is_not_utf8_ends_only_that_connection(edge: RunningEdge) -> None:
    """A text frame must be UTF-8 (RFC 6455 section 8.1): bytes that are not, or a lone
    surrogate's encoding, end that charger's connection with 1007; the site goes on."""
    async with HostileCharger(edge.url, "BADUTF8") as charger:
        assert charger.connection is not None
        await charger.send_only_text(b'[2, "u1", "Heartbeat", {"x": "\xed\xa0\x80\xff"}]')
        with pytest.raises(ConnectionClosedError) as closed:
            await charger.receive()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    assert await well_behaved_charger_is_served(edge, "GOOD-AFTER-UTF8")
    assert daemon_runs(edge)
