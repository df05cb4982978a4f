"""Text a charger sends that SQLite and UTF-8 cannot hold (a lone UTF-16 surrogate,
written `"\\ud800"` in JSON) never fails another charger's unit of work: the frame is
answered FormationViolation and logged as it came, and every other charger's data is
stored meanwhile."""

from __future__ import annotations

import asyncio

from tests.adversarial.hostile import UNTHROTTLED, HostileCharger, daemon_runs
from tests.conftest import RunningEdge, StartEdge
from tests.ocpp_client import RawCharger, now_iso

HOSTILE_FRAMES = [
    '[2, "\\ud800", "Heartbeat", {}]',
    '[2, "id-\\udfff", "Authorize", {"idTag": "A"}]',
    '[2, "lone-1", "Authorize", {"idTag": "\\ud800"}]',
    '[2, "lone-2", "Heartbeat\\ud800", {}]',
    '[3, "\\ud800", {}]',
    '[4, "\\udbff", "GenericError", "", {}]',
]


async def hostile_loop(edge: RunningEdge, stop: asyncio.Event) -> int:
    """Send the hostile frames over and over until `stop`; how many rounds went."""
    rounds = 0
    async with HostileCharger(edge.url, "EVIL-UTF") as charger:
        while not stop.is_set():
            for frame in HOSTILE_FRAMES:
                await charger.send_only(frame)
                if frame.startswith("[2"):  # a CALL: answered, at the edge's pace
                    assert (await charger.receive())[2] == "FormationViolation"
            rounds += 1
    return rounds


async def test_lone_surrogates_fail_nobody_else(start_edge: StartEdge) -> None:
    edge = await start_edge(**UNTHROTTLED)
    stop = asyncio.Event()
    hostile = asyncio.create_task(hostile_loop(edge, stop))
    try:
        async with RawCharger(edge.url, "GOOD-UTF") as charger:
            assert (await charger.boot())["status"] == "Accepted"
            for number in range(20):
                reply = await charger.call(
                    "StartTransaction",
                    {
                        "connectorId": 1 + number % 2,
                        "idTag": f"TAG{number}",
                        "meterStart": number,
                        "timestamp": now_iso(),
                    },
                )
                assert reply[0] == 3, reply
                stopped = await charger.call(
                    "StopTransaction",
                    {
                        "transactionId": reply[2]["transactionId"],
                        "meterStop": number + 100,
                        "timestamp": now_iso(),
                    },
                )
                assert stopped[0] == 3, stopped
    finally:
        stop.set()
        rounds = await hostile
    assert rounds >= 1 and daemon_runs(edge)
    rows = edge.query("SELECT count(*) FROM transactions WHERE charger_id = 'GOOD-UTF'")
    assert rows[0][0] == 20
    # Every hostile frame is in the message log as it came (JSON escapes and all).
    logged = {
        row[0]
        for row in edge.query("SELECT payload FROM ocpp_messages WHERE charger_id = 'EVIL-UTF'")
    }
    assert set(HOSTILE_FRAMES) <= logged


async def test_lone_surrogate_calls_are_answered_formation_violation(edge: RunningEdge) -> None:
    async with HostileCharger(edge.url, "EVIL-UTF2") as charger:
        reply = await charger.send_raw(HOSTILE_FRAMES[0])
        # The charger's own uniqueId comes back, escaped as it was sent.
        assert reply[:3] == [4, "\ud800", "FormationViolation"]
        assert "surrogate" in reply[3]
        reply = await charger.send_raw(HOSTILE_FRAMES[2])
        assert reply[:3] == [4, "lone-1", "FormationViolation"]
        assert (await charger.ok("Heartbeat", {}))["currentTime"]
    assert daemon_runs(edge)
    assert edge.query("SELECT count(*) FROM card_decisions")[0][0] == 0
