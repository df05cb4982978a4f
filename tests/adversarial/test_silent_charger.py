"""A charger that never answers the edge's calls costs only its own timeout: the site's
other chargers get their power shares and local lists at once, and reservations still
expire on time."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

import edge.site_tasks
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import StartEdge
from tests.ocpp_client import now_iso
from tests.waiting import eventually

OCPP16 = [Subprotocol("ocpp1.6")]
UNLIMITED = 22000.0  # the simulator's rating while it holds no profile
# The edge waits this long for an answer (the default); the others must not wait for it.
RESPONSE_TIMEOUT = 30.0
PROMPTLY = 5.0


class SilentCharger:
    """Reads everything, answers the edge's calls never; its own calls get answers."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.calls_received: list[str] = []
        self._answers: dict[str, asyncio.Future[list[object]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.connection:
                frame = json.loads(raw)
                if frame[0] == 2:
                    self.calls_received.append(frame[2])  # and never answered
                elif frame[1] in self._answers:
                    self._answers.pop(frame[1]).set_result(frame)

    async def call(self, action: str, payload: dict[str, object]) -> list[object]:
        unique_id = f"silent-{len(self._answers)}-{action}"
        answer = asyncio.get_running_loop().create_future()
        self._answers[unique_id] = answer
        await self.connection.send(json.dumps([2, unique_id, action, payload]))
        return await asyncio.wait_for(answer, timeout=10)

    def stop(self) -> None:
        self._reader.cancel()


@asynccontextmanager
async def simulated(url: str, charger_id: str) -> AsyncIterator[SimulatedCharger]:
    async with connect(f"{url}/{charger_id}", subprotocols=OCPP16) as connection:
        charger = SimulatedCharger(charger_id, connection, SimulatedChargerConfig(connectors=1))
        listener = asyncio.create_task(charger.start())
        try:
            yield charger
        finally:
            listener.cancel()


async def test_silent_charger_does_not_hold_back_the_others_power_shares(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(
        smart_charging={"site_limit_w": 11000, "connector_max_w": 7400},
        response_timeout=RESPONSE_TIMEOUT,
    )
    async with (
        connect(f"{edge.url}/SILENT", subprotocols=OCPP16) as silent_connection,
        simulated(edge.url, "A") as a,
        simulated(edge.url, "C") as c,
    ):
        silent = SilentCharger(silent_connection)
        start = {"connectorId": 1, "idTag": "CARD-S", "meterStart": 0, "timestamp": now_iso()}
        assert (await silent.call("StartTransaction", start))[0] == 3
        await eventually(lambda: "SetChargingProfile" in silent.calls_received)
        # SILENT now holds the edge's call for up to RESPONSE_TIMEOUT seconds.
        await a.start_transaction(1, "CARD-A")
        await eventually(lambda: a.composite_limit(1) == 5500.0, within=PROMPTLY)
        await c.start_transaction(1, "CARD-C")
        await eventually(
            lambda: [a.composite_limit(1), c.composite_limit(1)] == [3666.6, 3666.6],
            within=PROMPTLY,
        )
        silent.stop()
    assert not edge.task.done()


async def test_silent_charger_does_not_hold_back_local_lists_or_reservation_expiry(
    start_edge: StartEdge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge.site_tasks, "EVERY_SECONDS", 0.2)
    running = await start_edge(push_local_list=True, response_timeout=RESPONSE_TIMEOUT)
    await running.execute(
        "INSERT INTO id_tags (id_tag, created_at, updated_at) VALUES ('CARD1', 'x', 'x')"
    )
    async with connect(f"{running.url}/SILENT", subprotocols=OCPP16) as silent_connection:
        silent = SilentCharger(silent_connection)
        # The first call of a list push: the charger's local-list keys.
        await eventually(lambda: "GetConfiguration" in silent.calls_received)
        # SILENT holds the edge's call; A and C connect after it.
        async with simulated(running.url, "A") as a, simulated(running.url, "C") as c:
            await eventually(
                lambda: a.local_list_version > 0 and c.local_list_version > 0, within=PROMPTLY
            )
            assert a.local_list == c.local_list == {"CARD1": {"status": "Accepted"}}
            await running.execute(
                "INSERT INTO reservations (charger_id, connector_id, id_tag, expiry_date, "
                "status, created_at, updated_at) "
                "VALUES ('A', 1, 'CARD1', '2020-01-01T00:00:00.000Z', 'active', 'x', 'x')"
            )
            await eventually(
                lambda: running.query("SELECT status FROM reservations")[0][0] == "expired",
                within=PROMPTLY,
            )
        silent.stop()
    assert not running.task.done()
