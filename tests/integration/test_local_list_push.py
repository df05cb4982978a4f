"""Chargers' OCPP local lists follow the card table without anyone asking."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from edge.ocpp.local_list import chargers_behind, sync_local_list
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import RunningEdge, StartEdge
from tests.waiting import eventually_answers


async def nobody_behind(edge: RunningEdge) -> bool:
    return await chargers_behind(edge.context) == []


async def test_list_pushed_after_boot_and_resent_when_behind(start_edge: StartEdge) -> None:
    edge = await start_edge(push_local_list=True)
    await edge.execute(
        "INSERT INTO id_tags (id_tag, created_at, updated_at) VALUES ('CARD1', 'x', 'x')"
    )
    async with connect(f"{edge.url}/SIM1", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        charger = SimulatedCharger("SIM1", connection, SimulatedChargerConfig())
        listener = asyncio.create_task(charger.start())
        await charger.boot()
        async with asyncio.timeout(5):
            while charger.local_list_version == 0:  # noqa: ASYNC110 - the charger has no event for it
                await asyncio.sleep(0.01)
        assert charger.local_list == {"CARD1": {"status": "Accepted"}}
        # The charger holds the list; the edge records its answer a moment later.
        await eventually_answers(lambda: nobody_behind(edge))

        await edge.execute("UPDATE id_tags SET status = 'Blocked' WHERE id_tag = 'CARD1'")
        assert await chargers_behind(edge.context) == ["SIM1"]
        await sync_local_list(edge.context, "SIM1")
        assert charger.local_list == {"CARD1": {"status": "Blocked"}}
        assert await chargers_behind(edge.context) == []
        # A charger that lost its list (reports 0) gets a Full one again.
        charger.local_list, charger.local_list_version = {}, 0
        await sync_local_list(edge.context, "SIM1")
        assert charger.local_list == {"CARD1": {"status": "Blocked"}}
        listener.cancel()
    actions = [row[0] for row in edge.query("SELECT action FROM commands ORDER BY id")]
    # The local-list keys are read once after the boot.
    assert actions == ["GetConfiguration"] + ["GetLocalListVersion", "SendLocalList"] * 3
    update_types = [
        row[0]
        for row in edge.query(
            "SELECT json_extract(request, '$.updateType') FROM commands WHERE action = 'SendLocalList' ORDER BY id"
        )
    ]
    assert update_types == ["Full", "Differential", "Full"]
