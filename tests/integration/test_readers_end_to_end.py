"""A tap on each kind of reader, through its real driver inside the running daemon,
makes the project's simulated charger start a transaction over real websockets, and a
second tap stops it. Only the device is a double: nfcpy's udp driver with an emulated
card, a pty for the serial reader, a fake SPI chip for the RC522, a fake input device
for the keyboard-wedge reader, gpiozero's MockFactory and a fake I2C display."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gpiozero.pins.mock import MockFactory
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from edge.hardware import Hardware
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import RunningEdge, StartEdge
from tests.doubles.i2c_lcd import FakeI2cLcd
from tests.doubles.input_device import FakeInputDevice, FakeInputDevices
from tests.doubles.mfrc522 import FakeMfrc522
from tests.doubles.nfc_tags import emulated_tag
from tests.doubles.serial_pty import rdm6300_frame, serial_pty
from tests.waiting import eventually

CARD = bytes.fromhex("04A2B3C4D5E6F7")
EM_CARD = bytes.fromhex("00AABBCC")  # printed on the card as 0011189196


@asynccontextmanager
async def site(
    start_edge: StartEdge, reader: dict[str, Any], card: str, hardware: Hardware | None = None
) -> AsyncIterator[tuple[RunningEdge, SimulatedCharger]]:
    reader = {"id": "bay-1", "charger": "SIM1", "connector": 1, **reader}
    edge = await start_edge(sections={"readers": [reader]}, hardware=hardware)
    await edge.execute(
        "INSERT INTO id_tags (id_tag, status, created_at, updated_at) VALUES (?, 'Accepted', 'x', 'x')",
        (card,),
    )
    async with connect(f"{edge.url}/SIM1", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        charger = SimulatedCharger("SIM1", connection, SimulatedChargerConfig(connectors=1))
        listener = asyncio.create_task(charger.start())
        await charger.boot()
        await charger.send_status(1, "Available")
        # Bytes sent before the driver opened its device would be lost, as on a real line.
        taps = edge.site.taps
        assert taps is not None
        await eventually(lambda: taps.reader_states.get("bay-1", None) is not None, within=10)
        assert taps.reader_states["bay-1"].online, taps.reader_states["bay-1"]
        yield edge, charger
        listener.cancel()


def open_transactions(edge: RunningEdge) -> list[tuple[Any, ...]]:
    rows = edge.query("SELECT connector_id, id_tag FROM transactions WHERE stopped_at IS NULL")
    return [tuple(row) for row in rows]


async def test_nfc_reader(start_edge: StartEdge) -> None:
    with emulated_tag("type2", CARD, present=False) as tag:
        # nfcpy itself waits for the card to leave the reader: no debounce window needed.
        reader = {
            "kind": "nfc",
            "device": tag.device_path,
            "targets": ["106A"],
            "debounce_seconds": 0,
        }
        async with site(start_edge, reader, CARD.hex().upper()) as (edge, charger):
            tag.present()
            await asyncio.wait_for(charger.started_transactions.get(), timeout=10)
            assert open_transactions(edge) == [(1, CARD.hex().upper())]
            # Still on the reader: one tap. Taken away and laid down again: the second tap.
            await asyncio.to_thread(tag.wait_until, lambda t: t.presence_checks >= 2)
            assert (
                edge.query("SELECT count(*) FROM card_decisions WHERE source = 'reader'")[0][0] == 1
            )
            tag.remove()
            await asyncio.sleep(0.3)
            tag.present()
            await eventually(lambda: open_transactions(edge) == [], within=10)
            actions = [
                row[0]
                for row in edge.query(
                    "SELECT action FROM card_decisions WHERE source = 'reader' ORDER BY id"
                )
            ]
            assert actions == ["start", "stop"]


async def test_serial_rdm6300_reader(start_edge: StartEdge) -> None:
    with serial_pty() as line:
        reader = {
            "kind": "serial",
            "port": line.path,
            "protocol": "rdm6300",
            "debounce_seconds": 0.5,
        }
        async with site(start_edge, reader, EM_CARD.hex().upper()) as (edge, charger):
            # The module repeats the frame while the card is in the field: one tap.
            line.send(rdm6300_frame(EM_CARD) * 3)
            await asyncio.wait_for(charger.started_transactions.get(), timeout=10)
            assert open_transactions(edge) == [(1, "00AABBCC")]
            await asyncio.sleep(0.6)
            line.send(rdm6300_frame(EM_CARD))
            await eventually(lambda: open_transactions(edge) == [], within=10)
            actions = [
                row[0]
                for row in edge.query(
                    "SELECT action FROM card_decisions WHERE source = 'reader' ORDER BY id"
                )
            ]
            assert actions == ["start", "stop"]


async def test_rc522_reader(start_edge: StartEdge) -> None:
    chip = FakeMfrc522()
    hardware = Hardware(open_spi=lambda bus, device, speed: chip)
    reader = {"kind": "rc522", "reset_pin": None, "poll_interval": 0.01, "debounce_seconds": 0}
    async with site(start_edge, reader, CARD.hex().upper(), hardware) as (edge, charger):
        chip.place(CARD)
        await asyncio.wait_for(charger.started_transactions.get(), timeout=10)
        assert open_transactions(edge) == [(1, CARD.hex().upper())]
        chip.remove()
        await asyncio.sleep(0.05)
        chip.place(CARD)
        await eventually(lambda: open_transactions(edge) == [], within=10)
        actions = [
            row[0]
            for row in edge.query(
                "SELECT action FROM card_decisions WHERE source = 'reader' ORDER BY id"
            )
        ]
        assert actions == ["start", "stop"]


async def test_keyboard_wedge_reader_with_lights_buzzer_relay_and_display(
    start_edge: StartEdge,
) -> None:
    devices = FakeInputDevices()
    keyboard = devices.plug(FakeInputDevice("/dev/input/by-id/usb-RFID-event-kbd"))
    pins, display = MockFactory(), FakeI2cLcd(0x27, real_time=True)
    hardware = Hardware(
        pin_factory=pins, open_bus=lambda bus: display, open_input_device=devices.open
    )
    reader = {
        "kind": "keyboard",
        "device": keyboard.path,
        "uid_format": "decimal",  # the reader types the number printed on the card
        "debounce_seconds": 0,
        "feedback": {"green_led": 17, "red_led": 27, "buzzer": 22, "relay": 23, "lcd_i2c_bus": 1},
    }
    async with site(start_edge, reader, "00AABBCC", hardware) as (edge, charger):
        green, relay = pins.pin(17), pins.pin(23)
        await asyncio.to_thread(display.wait_for_text, "Tap card", "to charge")
        keyboard.type_text("0011189196")
        await asyncio.wait_for(charger.started_transactions.get(), timeout=10)
        await eventually(lambda: bool(green.state and relay.state))
        await charger.send_meter_values(1, 3600)  # an hour at the simulator's 7.2 kW
        await asyncio.to_thread(display.wait_for_text, "Charging 7.2 kW", "7.2 kWh")
        keyboard.type_text("0011189196")
        await eventually(lambda: open_transactions(edge) == [], within=10)
        await eventually(lambda: not relay.state and not green.state)
        await asyncio.to_thread(display.wait_for_text, "Charging stopped", "7.2 kWh")

        # A card the site does not know: red light, and the display says why.
        red = pins.pin(27)
        keyboard.type_text("0000000042")
        await eventually(lambda: bool(red.state))
        await asyncio.to_thread(display.wait_for_text, "Card refused", "Unknown card")
        # Unplugged: the reader is reported offline, and back when plugged in again.
        taps = edge.site.taps
        assert taps is not None
        devices.unplug(keyboard.path)
        await eventually(lambda: not taps.reader_states["bay-1"].online)
        await asyncio.to_thread(display.wait_for_text, "Out of order", "Reader offline")
        devices.plug(FakeInputDevice(keyboard.path))
        await eventually(lambda: taps.reader_states["bay-1"].online, within=10)
    assert display.errors == []
