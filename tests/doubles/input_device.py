"""A keyboard-wedge card reader as evdev shows it, without /dev/uinput: a device object
with the methods the edge uses, and a test that types on it or unplugs it."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import AsyncIterator

from evdev import InputEvent, ecodes


def key_event(code: int, value: int) -> InputEvent:
    """One EV_KEY event (value 1 down, 0 up, 2 auto-repeat), stamped now."""
    now = time.time()
    return InputEvent(int(now), int(now % 1 * 1_000_000), ecodes.EV_KEY, code, value)


def sync_event() -> InputEvent:
    return InputEvent(0, 0, ecodes.EV_SYN, ecodes.SYN_REPORT, 0)


def key_presses(text: str, *, keypad: bool = False, enter: bool = True) -> list[InputEvent]:
    """The events a reader sends to type `text` (digits and letters; capitals with Shift),
    then Enter: each key down, a report, up, a report, as a real keyboard does."""
    events: list[InputEvent] = []

    def press(code: int) -> None:
        events.extend([key_event(code, 1), sync_event(), key_event(code, 0), sync_event()])

    for character in text:
        if character.isdigit():
            press(ecodes.ecodes[f"KEY_KP{character}" if keypad else f"KEY_{character}"])
        elif character.isupper():
            events.append(key_event(ecodes.KEY_LEFTSHIFT, 1))
            press(ecodes.ecodes[f"KEY_{character}"])
            events.append(key_event(ecodes.KEY_LEFTSHIFT, 0))
        else:
            press(ecodes.ecodes[f"KEY_{character.upper()}"])
    if enter:
        press(ecodes.KEY_KPENTER if keypad else ecodes.KEY_ENTER)
    return events


class FakeInputDevice:
    """Behaves as an `evdev.InputDevice` does for a reader: grab twice or ungrab when
    not grabbed raises OSError; once unplugged, reading, grab and ungrab raise ENODEV.
    `calls` records what succeeded."""

    def __init__(
        self, path: str = "/dev/input/by-id/usb-RFID_Reader-event-kbd", name: str = "RFID Reader"
    ) -> None:
        self.path = path
        self.name = name
        self.grabbed = False
        self.closed = False
        self.unplugged = False
        # What the edge did to the device, in order: "grab", "ungrab", "close".
        self.calls: list[str] = []
        self._events: asyncio.Queue[InputEvent | OSError] = asyncio.Queue()

    def type_text(self, text: str, *, keypad: bool = False, enter: bool = True) -> None:
        """The reader types `text`, then Enter."""
        self.send(key_presses(text, keypad=keypad, enter=enter))

    def send(self, events: list[InputEvent]) -> None:
        for event in events:
            self._events.put_nowait(event)

    def unplug(self) -> None:
        """The reader is pulled out: the next read fails as the kernel's would."""
        self.unplugged = True
        self._events.put_nowait(OSError(errno.ENODEV, os.strerror(errno.ENODEV)))

    def grab(self) -> None:
        self._fail_if_unplugged()
        if self.grabbed:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        self.grabbed = True
        self.calls.append("grab")

    def ungrab(self) -> None:
        self._fail_if_unplugged()
        if not self.grabbed:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.grabbed = False
        self.calls.append("ungrab")

    def _fail_if_unplugged(self) -> None:
        if self.unplugged:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))

    def close(self) -> None:
        self.closed = True
        self.calls.append("close")

    async def async_read_loop(self) -> AsyncIterator[InputEvent]:
        while True:
            if self.closed:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            item = await self._events.get()
            if isinstance(item, OSError):
                raise item
            yield item


class FakeInputDevices:
    """Stands for /dev/input: the devices present, and those the edge may not open."""

    def __init__(self) -> None:
        self.devices: dict[str, FakeInputDevice] = {}
        self.forbidden: set[str] = set()
        self.opened: list[str] = []

    def plug(self, device: FakeInputDevice) -> FakeInputDevice:
        self.devices[device.path] = device
        return device

    def open(self, path: str) -> FakeInputDevice:
        """In place of `evdev.InputDevice(path)`."""
        if path in self.forbidden:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        if path not in self.devices:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        self.opened.append(path)
        return self.devices[path]

    def unplug(self, path: str) -> None:
        """The reader at `path` is pulled out: reads fail, and it cannot be opened again."""
        self.devices.pop(path).unplug()
