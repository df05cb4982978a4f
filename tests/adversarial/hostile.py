"""A charger that says exactly what a test writes, for attacks on the daemon; and the
checks every attack ends with: the daemon still runs, and a well-behaved charger is
still answered and stored."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import RunningEdge
from tests.ocpp_client import RawCharger

_transaction_cards = itertools.count(1)

# `[ocpp] limits` for tests that flood on purpose to reach something else than the
# frame budget.
UNTHROTTLED = {"limits": {"frames_per_second": 100_000, "frame_burst": 100_000}}


class HostileCharger(RawCharger):
    """A RawCharger that can also send without waiting, and read the edge's calls."""

    async def send_only(self, text: str | bytes) -> None:
        assert self.connection is not None
        await self.connection.send(text)

    async def send_only_text(self, data: bytes) -> None:
        """`data` as a text frame, as it is: UTF-8 or not."""
        assert self.connection is not None
        await self.connection.send(data, text=True)

    async def receive(self, within: float = 10.0) -> list[Any]:
        assert self.connection is not None
        async with asyncio.timeout(within):
            frame = await self.connection.recv()
        return list(json.loads(frame))

    async def answer_local_list_keys(self) -> None:
        """Answer the GetConfiguration of its local-list keys that follows a boot (with
        none: the edge then uses its defaults) so that the edge's next call comes."""
        call = await self.next_call("GetConfiguration")
        await self.send_only(json.dumps([3, call[1], {}]))

    async def next_call(self, action: str, within: float = 10.0) -> list[Any]:
        """The edge's next CALL of `action` ([2, uniqueId, action, payload]); other
        frames on the way are skipped."""
        async with asyncio.timeout(within):
            while True:
                frame = await self.receive(within)
                if frame[0] == 2 and frame[2] == action:
                    return frame


def daemon_runs(edge: RunningEdge) -> bool:
    """The in-process daemon's task has not ended (a TaskGroup failure ends it)."""
    if edge.task.done():
        error = None if edge.task.cancelled() else edge.task.exception()
        raise AssertionError(f"the daemon stopped: {error!r}")
    return True


async def well_behaved_charger_is_served(edge: RunningEdge, charger_id: str = "GOOD1") -> int:
    """The project's simulated charger (it answers the edge's calls too) boots, starts a
    transaction and is answered; the transaction is stored. Returns its id."""
    card = f"CARD{next(_transaction_cards)}"
    async with connect(f"{edge.url}/{charger_id}", subprotocols=[Subprotocol("ocpp1.6")]) as link:
        charger = SimulatedCharger(charger_id, link, SimulatedChargerConfig())
        listener = asyncio.create_task(charger.start())
        try:
            async with asyncio.timeout(30):
                assert (await charger.boot()).status == "Accepted"
                transaction_id, _ = await charger.start_transaction(1, card)
        finally:
            listener.cancel()
    rows = edge.query(
        "SELECT charger_id, id_tag, meter_start_wh FROM transactions WHERE id = ?",
        (transaction_id,),
    )
    assert [tuple(row) for row in rows] == [(charger_id, card, 0)]
    return transaction_id
