"""Pending means pending (OCPP 1.6 section 4.2): a charger not yet accepted may send
BootNotification and nothing else unless the edge triggered it; nothing else it says
is authorised, stored or billed, until an operator accepts it."""

from __future__ import annotations

import asyncio

from edge.ocpp.commands import send_command
from tests.adversarial.hostile import HostileCharger, daemon_runs
from tests.conftest import StartEdge
from tests.ocpp_client import now_iso

CARD = "KNOWNCARD1"

CALLS = [
    ("Authorize", {"idTag": CARD}),
    (
        "StartTransaction",
        {"connectorId": 1, "idTag": CARD, "meterStart": 0, "timestamp": now_iso()},
    ),
    ("StopTransaction", {"transactionId": 1, "meterStop": 10, "timestamp": now_iso()}),
    ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
    (
        "MeterValues",
        {
            "connectorId": 1,
            "meterValue": [{"timestamp": now_iso(), "sampledValue": [{"value": "5"}]}],
        },
    ),
    ("DataTransfer", {"vendorId": "x"}),
    ("Heartbeat", {}),
    ("SecurityEventNotification", {"type": "x", "timestamp": now_iso()}),
]

TABLES = ("transactions", "card_decisions", "meter_values", "status_history", "data_transfers")


async def test_pending_charger_may_only_boot(start_edge: StartEdge) -> None:
    edge = await start_edge(unknown_chargers="pending")
    await edge.execute(
        f"INSERT INTO id_tags (id_tag, created_at, updated_at) VALUES ('{CARD}', 'x', 'x')"
    )
    async with HostileCharger(edge.url, "NEWCOMER") as charger:
        assert (await charger.boot())["status"] == "Pending"
        for action, payload in CALLS:
            reply = await charger.call(action, payload)
            assert reply[0] == 4 and reply[2] == "SecurityError", (action, reply)
            assert "pending" in reply[3]
        assert (await charger.boot())["status"] == "Pending"
        counts = {table: edge.query(f"SELECT count(*) FROM {table}")[0][0] for table in TABLES}
        assert counts == dict.fromkeys(TABLES, 0)

        # An operator accepts it (ocpp-edge chargers accept NEWCOMER): effective on the live
        # connection within a second, before its next boot.
        await edge.execute("UPDATE chargers SET registration = 'accepted' WHERE id = 'NEWCOMER'")
        async with asyncio.timeout(10):
            while (reply := await charger.call("Authorize", {"idTag": CARD}))[0] != 3:
                assert reply[2] == "SecurityError"
                await asyncio.sleep(0.2)
        assert reply[2]["idTagInfo"]["status"] == "Accepted"
    assert daemon_runs(edge)


async def test_pending_charger_may_send_what_the_edge_triggered(start_edge: StartEdge) -> None:
    edge = await start_edge(unknown_chargers="pending")
    async with HostileCharger(edge.url, "NEWCOMER2") as charger:
        assert (await charger.boot())["status"] == "Pending"
        sending = send_command(
            edge.context, "NEWCOMER2", "TriggerMessage", {"requested_message": "StatusNotification"}
        )
        task = asyncio.create_task(sending)
        call = await charger.next_call("TriggerMessage")
        await charger.send_only(f'[3, "{call[1]}", {{"status": "Accepted"}}]')
        await task
        status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        assert await charger.ok("StatusNotification", status) == {}
        # Only what was triggered.
        reply = await charger.call("Authorize", {"idTag": CARD})
        assert reply[2] == "SecurityError"
    assert edge.query("SELECT count(*) FROM status_history")[0][0] == 1
