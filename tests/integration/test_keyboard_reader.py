"""The keyboard-wedge reader driver on a fake evdev device: what the reader types
becomes taps; the device is grabbed while read and let go after."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from edge.readers.keyboard import KeyboardReader
from edge.readers.supervisor import UidRules, supervise_reader
from edge.readers.taps import OPENED, CardTap, ReaderError
from edge.settings import KeyboardReaderSettings
from tests.doubles.input_device import FakeInputDevice, FakeInputDevices
from tests.reading import next_item, reading

PATH = "/dev/input/by-id/usb-RFID_Reader-event-kbd"


def settings(**values: Any) -> KeyboardReaderSettings:
    return KeyboardReaderSettings(kind="keyboard", id="gate-2", device=PATH, **values)


@pytest.fixture
def devices() -> FakeInputDevices:
    return FakeInputDevices()


async def test_the_device_is_grabbed_and_typed_uids_are_read(devices: FakeInputDevices) -> None:
    device = devices.plug(FakeInputDevice(PATH))
    reader = KeyboardReader(settings(), open_device=devices.open)
    async with reading(reader) as items:
        assert await next_item(items) is OPENED
        assert device.calls == ["grab"]
        assert reader.describe() == f"keyboard {PATH} (RFID Reader)"
        device.type_text("0011189196")
        device.type_text("04A2b3C4", keypad=True)
        assert await next_item(items) == "0011189196"
        assert await next_item(items) == "04A2b3C4"
    assert device.calls == ["grab", "ungrab", "close"]


async def test_without_grab_the_device_is_shared(devices: FakeInputDevices) -> None:
    device = devices.plug(FakeInputDevice(PATH))
    reader = KeyboardReader(settings(grab=False), open_device=devices.open)
    async with reading(reader) as items:
        assert await next_item(items) is OPENED
        device.type_text("42")
        assert await next_item(items) == "42"
    assert device.calls == ["close"]


async def test_unplugging_is_a_reader_error_and_the_device_is_closed(
    devices: FakeInputDevices,
) -> None:
    device = devices.plug(FakeInputDevice(PATH))
    reader = KeyboardReader(settings(), open_device=devices.open)
    async with reading(reader) as items:
        assert await next_item(items) is OPENED
        devices.unplug(PATH)
        error = await next_item(items)
    assert isinstance(error, ReaderError)
    assert str(error) == f"input device {PATH} went away (unplugged?)"
    assert device.calls == ["grab", "close"]  # the grab went with the device


async def test_a_device_held_by_another_program(devices: FakeInputDevices) -> None:
    device = devices.plug(FakeInputDevice(PATH))
    device.grab()  # as another program would
    reader = KeyboardReader(settings(), open_device=devices.open)
    async with reading(reader) as items:
        error = await next_item(items)
    assert isinstance(error, ReaderError)
    assert "held by another program" in str(error)
    assert device.calls == ["grab", "close"]


async def test_permission_denied_names_the_input_group(devices: FakeInputDevices) -> None:
    devices.plug(FakeInputDevice(PATH))
    devices.forbidden.add(PATH)
    reader = KeyboardReader(settings(), open_device=devices.open)
    with pytest.raises(ReaderError, match="add the edge's user to the input group"):
        async for _ in reader.read():
            pass


async def test_a_missing_device_through_evdev_is_a_reader_error() -> None:
    reader = KeyboardReader(settings())  # the real evdev.InputDevice
    with pytest.raises(ReaderError) as raised:
        async for _ in reader.read():
            pass
    assert str(raised.value) == (
        f"input device {PATH} does not exist: check that the reader is plugged in and "
        "the device path (ls /dev/input/by-id/)"
    )


async def test_typed_uids_become_taps_and_an_unplugged_reader_is_reported(
    devices: FakeInputDevices,
) -> None:
    device = devices.plug(FakeInputDevice(PATH))
    reader = KeyboardReader(settings(uid_format="decimal"), open_device=devices.open)
    taps: asyncio.Queue[CardTap] = asyncio.Queue()
    statuses: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()

    async def on_tap(tap: CardTap) -> None:
        taps.put_nowait(tap)

    task = asyncio.create_task(
        supervise_reader(
            "gate-2",
            reader,
            on_tap,
            rules=UidRules(uid_format="decimal"),
            on_status=lambda _, online, reason: statuses.put_nowait((online, reason)),
            first_retry=0.05,
        )
    )
    try:
        async with asyncio.timeout(5):
            assert await statuses.get() == (True, "open")
            device.type_text("0011189196")
            tap = await taps.get()
            assert (tap.reader_id, tap.uid) == ("gate-2", "00AABBCC")
            devices.unplug(PATH)
            online, reason = await statuses.get()
            assert not online
            assert "went away (unplugged?)" in reason
            assert device.calls == ["grab", "close"]
            # Plugged back in: the supervisor opens it again.
            again = devices.plug(FakeInputDevice(PATH))
            assert await statuses.get() == (True, "open")
            again.type_text("0007840243", keypad=True)
            assert (await taps.get()).uid == "0077A1F3"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert again.calls == ["grab", "ungrab", "close"]
