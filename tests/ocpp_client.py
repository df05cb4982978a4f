"""A bare OCPP-J client for tests: sends exactly the frames a test writes."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

_ids = itertools.count(1)


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class RawCharger:
    """`async with RawCharger(url, "CP1") as charger: await charger.call(...)`."""

    def __init__(self, url: str, charger_id: str, subprotocols: list[str] | None = None) -> None:
        self.address = f"{url}/{charger_id}"
        offered = ["ocpp1.6"] if subprotocols is None else subprotocols
        self.subprotocols = [Subprotocol(name) for name in offered]
        self.connection: ClientConnection | None = None

    async def __aenter__(self) -> RawCharger:
        self.connection = await connect(
            self.address,
            subprotocols=self.subprotocols,
            open_timeout=5,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self.connection is not None
        await self.connection.close()

    async def send_raw(self, text: str | bytes) -> list[Any]:
        """Send a frame as-is and return the next frame received, parsed."""
        assert self.connection is not None
        await self.connection.send(text)
        reply = await self.connection.recv()
        return list(json.loads(reply))

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        """Send a CALL; return the whole reply frame ([3, id, payload] or [4, id, ...])."""
        unique_id = f"t{next(_ids)}"
        reply = await self.send_raw(json.dumps([2, unique_id, action, payload]))
        assert reply[1] == unique_id, reply
        return reply

    async def ok(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a CALL that must succeed; return the CALLRESULT payload."""
        reply = await self.call(action, payload)
        assert reply[0] == 3, f"{action} answered {reply}"
        result: dict[str, Any] = reply[2]
        return result

    async def boot(self) -> dict[str, Any]:
        return await self.ok(
            "BootNotification",
            {"chargePointVendor": "TestVendor", "chargePointModel": "T1", "firmwareVersion": "1.2"},
        )
