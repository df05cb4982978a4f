"""Fifty simulated chargers (the project's own simulator, on the ocpp library) at once."""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import RunningEdge

CHARGERS = 50
METER_VALUES_EACH = 5


async def one_charger(edge: RunningEdge, number: int) -> int:
    charger_id = f"SIM{number:03d}"
    address = f"{edge.url}/{charger_id}"
    async with connect(address, subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        charger = SimulatedCharger(charger_id, connection, SimulatedChargerConfig(connectors=1))
        listener = asyncio.create_task(charger.start())
        try:
            assert (await charger.boot()).status == "Accepted"
            await charger.send_status(1, "Available")
            transaction_id, status = await charger.start_transaction(1, f"CARD{number:03d}")
            assert status == "Accepted"
            for _ in range(METER_VALUES_EACH):
                await charger.send_meter_values(1, seconds=60)
            await charger.stop_transaction(1)
            return transaction_id
        finally:
            listener.cancel()


async def test_fifty_chargers_charge_at_once(edge: RunningEdge) -> None:
    for number in range(CHARGERS):
        await edge.execute(
            "INSERT INTO id_tags (id_tag, status, created_at, updated_at) VALUES (?, 'Accepted', 'x', 'x')",
            (f"CARD{number:03d}",),
        )
    transaction_ids = await asyncio.wait_for(
        asyncio.gather(*(one_charger(edge, number) for number in range(CHARGERS))), timeout=60
    )
    assert len(set(transaction_ids)) == CHARGERS
    rows = edge.query(
        "SELECT t.id, t.meter_stop_wh - t.meter_start_wh AS energy, count(m.id) AS samples "
        "FROM transactions t LEFT JOIN meter_values m ON m.transaction_id = t.id "
        "WHERE t.stopped_at IS NOT NULL GROUP BY t.id"
    )
    assert len(rows) == CHARGERS
    # 7.2 kW for 5 minutes = 600 Wh; two sampled values per MeterValues.
    assert {row["energy"] for row in rows} == {600}
    assert {row["samples"] for row in rows} == {2 * METER_VALUES_EACH}
    assert (
        edge.query("SELECT count(*) FROM chargers WHERE last_boot_at IS NOT NULL")[0][0] == CHARGERS
    )


async def test_simulate_command_connects_its_chargers(edge: RunningEdge) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        "simulate",
        "--chargers",
        "3",
        "--url",
        edge.url,
        "--prefix",
        "cli-",
        "--seconds",
        "2",
    )
    assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    rows = edge.query("SELECT id FROM chargers WHERE last_boot_at IS NOT NULL ORDER BY id")
    assert [row["id"] for row in rows] == ["cli-1", "cli-2", "cli-3"]
    statuses = edge.query("SELECT count(*) FROM connectors WHERE charger_id LIKE 'cli-%'")
    assert statuses[0][0] == 9  # connector 0 and two connectors each
