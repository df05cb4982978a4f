"""`ocpp-edge readers --watch`: the real drivers, a serial reader on a pty and a
keyboard-wedge reader through the hardware boundary; each tap printed with its reader and
charger, readers coming and going with the reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from edge.cli import main
from edge.cli.reader_watch import show_readers
from edge.hardware import Hardware
from edge.settings import Settings
from tests.conftest import StartEdge
from tests.doubles.input_device import FakeInputDevice, FakeInputDevices
from tests.doubles.serial_pty import rdm6300_frame, serial_pty


class Printed:
    """What the command printed, in order; a test waits for a line, whenever it came."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._new_line = asyncio.Event()

    def write(self, text: str) -> None:
        self.lines.append(text)
        self._new_line.set()

    async def line_starting(self, start: str, within: float = 5.0) -> str:
        """The first line printed that starts with `start`, waiting for it if need be."""
        async with asyncio.timeout(within):
            while (line := self._first(start)) is None:
                self._new_line.clear()
                await self._new_line.wait()
        return line

    def _first(self, start: str) -> str | None:
        return next((line for line in self.lines if line.startswith(start)), None)


@asynccontextmanager
async def watching(settings: Settings, hardware: Hardware) -> AsyncIterator[Printed]:
    """The command watching, what it prints collected; stopped as Ctrl-C would."""
    printed = Printed()
    stop = asyncio.Event()
    command = asyncio.create_task(
        show_readers(settings, watch_seconds=0, write=printed.write, hardware=hardware, stop=stop)
    )
    try:
        yield printed
    finally:
        stop.set()
        await asyncio.wait_for(command, timeout=10)


async def test_each_tap_names_its_reader_and_charger(tmp_path: Path) -> None:
    devices = FakeInputDevices()
    keyboard = devices.plug(FakeInputDevice())
    missing = tmp_path / "ttyUSB7"
    with serial_pty() as line:
        settings = Settings(
            store={"path": tmp_path / "edge.db"},
            readers=[
                {
                    "id": "bay-1",
                    "kind": "serial",
                    "port": line.path,
                    "charger": "CP-1",
                    "connector": 1,
                },
                {
                    "id": "desk",
                    "kind": "keyboard",
                    "device": keyboard.path,
                    "charger": "CP-2",
                    "uid_format": "decimal",
                },
                {
                    "id": "gate",
                    "kind": "serial",
                    "port": str(missing),
                    "charger": "CP-3",
                    "connector": 2,
                },
                {"id": "demo", "kind": "simulated"},
            ],
        )
        async with watching(settings, Hardware(open_input_device=devices.open)) as printed:
            await printed.line_starting("\nWatching")
            assert printed.lines[0] == "Devices on this machine:"
            configured = printed.lines[printed.lines.index("\nConfigured readers:") + 1]
            assert [row.split() for row in configured.split("\n")] == [
                ["READER", "DEVICE", "STARTS"],
                ["bay-1", "serial", line.path, "charger", "CP-1", "connector", "1"],
                [
                    "desk",
                    "keyboard",
                    keyboard.path,
                    "charger",
                    "CP-2,",
                    "first",
                    "free",
                    "connector",
                ],
                ["gate", "serial", str(missing), "charger", "CP-3", "connector", "2"],
                ["demo", "simulated", "no", "charger", "(its", "taps", "are", "refused)"],
            ]
            watching_from = printed.lines.index(
                "\nWatching 3 readers: tap a card on each (Ctrl-C to stop)."
            )
            assert printed.lines[watching_from - 1] == (
                "reader demo (simulated): its taps go to the daemon's tap socket"
            )
            assert await printed.line_starting("reader gate") == (
                f"reader gate (serial {missing}) offline: serial port {missing} does not exist: "
                "check that the reader is plugged in and the port name (ls /dev/serial/by-id/)"
            )
            await printed.line_starting(f"reader bay-1 (serial {line.path}) online")
            await printed.line_starting(f"reader desk (keyboard {keyboard.path}) online")

            line.send(rdm6300_frame(bytes.fromhex("04A2B3C4")))
            assert await printed.line_starting(f"reader bay-1 (serial {line.path}) ->") == (
                f"reader bay-1 (serial {line.path}) -> charger CP-1 connector 1: card 04A2B3C4"
            )
            keyboard.type_text("0011189196")
            assert await printed.line_starting(f"reader desk (keyboard {keyboard.path}) ->") == (
                f"reader desk (keyboard {keyboard.path}) -> charger CP-2, first free "
                "connector: card 00AABBCC"
            )

            devices.unplug(keyboard.path)
            assert await printed.line_starting(
                f"reader desk (keyboard {keyboard.path}) offline"
            ) == (
                f"reader desk (keyboard {keyboard.path}) offline: input device "
                f"{keyboard.path} went away (unplugged?)"
            )
            line.close()
            assert (
                await printed.line_starting(f"reader bay-1 (serial {line.path}) offline")
            ).startswith(
                f"reader bay-1 (serial {line.path}) offline: serial port {line.path} "
                "stopped answering (unplugged?)"
            )
            # Each tap once, each change once: nothing printed twice.
            assert len(printed.lines) == len(set(printed.lines))


async def test_the_running_daemon_is_named(start_edge: StartEdge) -> None:
    edge = await start_edge(with_api=True)
    lines: list[str] = []
    await show_readers(edge.settings, watch_seconds=None, write=lines.append)
    warning = lines[-1]
    assert warning.startswith(
        f"\nThe ocpp-edge daemon is running (its local API answers on 127.0.0.1:{edge.api_port})."
    )
    assert "Stop it to watch: sudo systemctl stop ocpp-edge" in warning


def test_without_watch_it_lists_and_returns(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "edge.db"}"\n[api]\nport = 0\n[ocpp]\nport = 1\n'
        '[[readers]]\nid = "bay-1"\nkind = "nfc"\ndevice = "usb:072f:2200"\ncharger = "CP-1"\n'
    )
    assert main(["readers", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Devices on this machine:" in out
    assert "bay-1   nfc usb:072f:2200  charger CP-1, first free connector" in out
    assert "daemon is running" not in out
