"""A simulated OCPP 1.6J charger, built on the `ocpp` library's ChargePoint.

It boots, reports connector status, heartbeats, authorizes a card, runs
transactions with meter values and answers the central system's commands the way
a charger does. The demo site, the tests and the benchmark drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import (
    Action,
    AvailabilityStatus,
    ChargePointStatus,
    ConfigurationStatus,
    DataTransferStatus,
    RemoteStartStopStatus,
    ResetStatus,
    TriggerMessageStatus,
    UnlockStatus,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from edge.clock import utc_now

log = logging.getLogger(__name__)


@dataclass
class Connector:
    status: str = ChargePointStatus.available
    transaction_id: int | None = None
    id_tag: str | None = None
    meter_wh: int = 0
    power_w: int = 7200


@dataclass
class SimulatedChargerConfig:
    connectors: int = 2
    vendor: str = "ocpp-edge"
    model: str = "Simulated AC 22kW"
    firmware_version: str = "sim-1.0"
    meter_interval: float = 10.0


class SimulatedCharger(ChargePoint):  # type: ignore[misc]
    def __init__(
        self, charger_id: str, connection: ClientConnection, config: SimulatedChargerConfig
    ) -> None:
        super().__init__(charger_id, connection, response_timeout=30)
        self.config = config
        self.connectors = {number: Connector() for number in range(1, config.connectors + 1)}
        self.configuration: dict[str, str] = {
            "HeartbeatInterval": "300",
            "MeterValueSampleInterval": str(int(config.meter_interval)),
            "NumberOfConnectors": str(config.connectors),
        }
        self.heartbeat_interval = 300
        self._background: set[asyncio.Task[Any]] = set()

    # Charger-initiated -------------------------------------------------------

    async def boot(self) -> call_result.BootNotification:
        response: call_result.BootNotification = await self.call(
            call.BootNotification(
                charge_point_vendor=self.config.vendor,
                charge_point_model=self.config.model,
                firmware_version=self.config.firmware_version,
                charge_point_serial_number=f"SN-{self.id}",
            ),
            suppress=False,
        )
        self.heartbeat_interval = response.interval
        return response

    async def send_status(
        self, connector_id: int, status: str, error_code: str = "NoError"
    ) -> None:
        if connector_id:
            self.connectors[connector_id].status = status
        await self.call(
            call.StatusNotification(
                connector_id=connector_id, error_code=error_code, status=status, timestamp=utc_now()
            ),
            suppress=False,
        )

    async def heartbeat(self) -> call_result.Heartbeat:
        return await self.call(call.Heartbeat(), suppress=False)

    async def authorize(self, id_tag: str) -> str:
        response = await self.call(call.Authorize(id_tag=id_tag), suppress=False)
        return str(response.id_tag_info["status"])

    async def start_transaction(self, connector_id: int, id_tag: str) -> tuple[int, str]:
        connector = self.connectors[connector_id]
        await self.send_status(connector_id, ChargePointStatus.preparing)
        response = await self.call(
            call.StartTransaction(
                connector_id=connector_id,
                id_tag=id_tag,
                meter_start=connector.meter_wh,
                timestamp=utc_now(),
            ),
            suppress=False,
        )
        status = str(response.id_tag_info["status"])
        connector.transaction_id = response.transaction_id
        connector.id_tag = id_tag
        await self.send_status(connector_id, ChargePointStatus.charging)
        return response.transaction_id, status

    async def send_meter_values(self, connector_id: int, seconds: float) -> None:
        connector = self.connectors[connector_id]
        connector.meter_wh += round(connector.power_w * seconds / 3600)
        await self.call(
            call.MeterValues(
                connector_id=connector_id,
                transaction_id=connector.transaction_id,
                meter_value=[
                    {
                        "timestamp": utc_now(),
                        "sampledValue": [
                            {
                                "value": str(connector.meter_wh),
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "Wh",
                                "context": "Sample.Periodic",
                            },
                            {
                                "value": f"{connector.power_w / 1000:.1f}",
                                "measurand": "Power.Active.Import",
                                "unit": "kW",
                            },
                        ],
                    }
                ],
            ),
            suppress=False,
        )

    async def stop_transaction(self, connector_id: int, reason: str = "Local") -> None:
        connector = self.connectors[connector_id]
        if connector.transaction_id is None:
            return
        await self.send_status(connector_id, ChargePointStatus.finishing)
        await self.call(
            call.StopTransaction(
                meter_stop=connector.meter_wh,
                timestamp=utc_now(),
                transaction_id=connector.transaction_id,
                reason=reason,
                id_tag=connector.id_tag,
            ),
            suppress=False,
        )
        connector.transaction_id = None
        connector.id_tag = None
        await self.send_status(connector_id, ChargePointStatus.available)

    async def run_session(self, connector_id: int, id_tag: str, seconds: float) -> None:
        """Authorize, charge for `seconds` with periodic meter values, stop."""
        if await self.authorize(id_tag) != "Accepted":
            return
        await self.start_transaction(connector_id, id_tag)
        elapsed = 0.0
        while elapsed < seconds:
            step = min(self.config.meter_interval, seconds - elapsed)
            await asyncio.sleep(step)
            elapsed += step
            await self.send_meter_values(connector_id, step)
        await self.stop_transaction(connector_id)

    # Central-system-initiated --------------------------------------------------

    def _later(self, coroutine: Any) -> None:
        # Follow-up messages go after our answer, as a real charger sends them.
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @on(Action.remote_start_transaction)
    async def on_remote_start_transaction(
        self, id_tag: str, connector_id: int | None = None, **_: Any
    ) -> call_result.RemoteStartTransaction:
        number = connector_id or next(
            (n for n, c in self.connectors.items() if c.transaction_id is None), None
        )
        if (
            number is None
            or number not in self.connectors
            or self.connectors[number].transaction_id
        ):
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        self._later(self.start_transaction(number, id_tag))
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)

    @on(Action.remote_stop_transaction)
    async def on_remote_stop_transaction(
        self, transaction_id: int
    ) -> call_result.RemoteStopTransaction:
        for number, connector in self.connectors.items():
            if connector.transaction_id == transaction_id:
                self._later(self.stop_transaction(number, reason="Remote"))
                return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.accepted)
        return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.rejected)

    @on(Action.reset)
    async def on_reset(self, type: str) -> call_result.Reset:
        return call_result.Reset(status=ResetStatus.accepted)

    @on(Action.change_availability)
    async def on_change_availability(
        self, connector_id: int, type: str
    ) -> call_result.ChangeAvailability:
        busy = any(c.transaction_id for n, c in self.connectors.items() if connector_id in (0, n))
        status = AvailabilityStatus.scheduled if busy else AvailabilityStatus.accepted
        return call_result.ChangeAvailability(status=status)

    @on(Action.get_configuration)
    async def on_get_configuration(
        self, key: list[str] | None = None
    ) -> call_result.GetConfiguration:
        wanted = key or list(self.configuration)
        known = [
            {"key": name, "readonly": False, "value": self.configuration[name]}
            for name in wanted
            if name in self.configuration
        ]
        unknown = [name for name in wanted if name not in self.configuration]
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    async def on_change_configuration(
        self, key: str, value: str
    ) -> call_result.ChangeConfiguration:
        if key not in self.configuration:
            return call_result.ChangeConfiguration(status=ConfigurationStatus.not_supported)
        self.configuration[key] = value
        return call_result.ChangeConfiguration(status=ConfigurationStatus.accepted)

    @on(Action.trigger_message)
    async def on_trigger_message(
        self, requested_message: str, connector_id: int | None = None
    ) -> call_result.TriggerMessage:
        if requested_message == "Heartbeat":
            self._later(self.heartbeat())
        elif requested_message == "StatusNotification":
            for number, connector in self.connectors.items():
                if connector_id in (None, number):
                    self._later(self.send_status(number, connector.status))
        elif requested_message == "BootNotification":
            self._later(self.boot())
        else:
            return call_result.TriggerMessage(status=TriggerMessageStatus.not_implemented)
        return call_result.TriggerMessage(status=TriggerMessageStatus.accepted)

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, connector_id: int) -> call_result.UnlockConnector:
        if connector_id not in self.connectors:
            return call_result.UnlockConnector(status=UnlockStatus.not_supported)
        return call_result.UnlockConnector(status=UnlockStatus.unlocked)

    @on(Action.data_transfer)
    async def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)


@dataclass
class DemoPlan:
    """How a simulated charger behaves when left to itself."""

    id_tags: list[str] = field(default_factory=lambda: ["DEMO0101", "DEMO0102", "DEMO0103"])
    session_seconds: tuple[float, float] = (30.0, 90.0)
    idle_seconds: tuple[float, float] = (5.0, 30.0)


async def run_simulated_charger(
    url: str,
    charger_id: str,
    config: SimulatedChargerConfig | None = None,
    plan: DemoPlan | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> None:
    """Connect, boot and keep charging cars until `stop` is set; reconnect if dropped."""
    config = config or SimulatedChargerConfig()
    plan = plan or DemoPlan()
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            address = f"{url}/{charger_id}"
            async with connect(address, subprotocols=[Subprotocol("ocpp1.6")]) as connection:
                charger = SimulatedCharger(charger_id, connection, config)
                listener = asyncio.create_task(charger.start())
                try:
                    await _live(charger, plan, stop)
                finally:
                    listener.cancel()
        except (TimeoutError, OSError) as error:
            log.info("%s: cannot reach the central system (%s); retrying", charger_id, error)
        except Exception as error:
            log.warning("%s: %s; reconnecting", charger_id, error)
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2.0)


async def _live(charger: SimulatedCharger, plan: DemoPlan, stop: asyncio.Event) -> None:
    boot = await charger.boot()
    while boot.status != "Accepted":
        await asyncio.sleep(boot.interval)
        boot = await charger.boot()
    await charger.send_status(0, ChargePointStatus.available)
    for number in charger.connectors:
        await charger.send_status(number, ChargePointStatus.available)
    loops = [asyncio.create_task(_heartbeats(charger))] + [
        asyncio.create_task(_charge_cars(charger, number, plan)) for number in charger.connectors
    ]
    try:
        closed = asyncio.create_task(charger._connection.wait_closed())
        waiting = asyncio.create_task(stop.wait())
        await asyncio.wait([closed, waiting], return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        waiting.cancel()
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)


async def _heartbeats(charger: SimulatedCharger) -> None:
    while True:
        await asyncio.sleep(charger.heartbeat_interval)
        await charger.heartbeat()


async def _charge_cars(charger: SimulatedCharger, connector_id: int, plan: DemoPlan) -> None:
    while True:
        await asyncio.sleep(random.uniform(*plan.idle_seconds))
        in_use = {connector.id_tag for connector in charger.connectors.values()}
        free_cards = [card for card in plan.id_tags if card not in in_use]
        if charger.connectors[connector_id].transaction_id is None and free_cards:
            id_tag = random.choice(free_cards)
            await charger.run_session(connector_id, id_tag, random.uniform(*plan.session_seconds))
