"""USB keyboard-wedge card readers through evdev: the reader "types" the UID and Enter.
The device is taken for the edge alone (grabbed) so the digits reach no console, and
key presses are decoded from key codes, so the host's keyboard layout and Num Lock do
not matter. evdev is Linux-only: it is imported only when a device is opened.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Protocol

from edge.readers.taps import OPENED, RawUid, ReaderError, ReaderOpened
from edge.settings import KeyboardReaderSettings

if TYPE_CHECKING:
    from evdev import InputEvent

log = logging.getLogger(__name__)

# Far longer than any UID a reader types: a run this long is someone at a keyboard.
LONGEST_TEXT = 64
KEY_DOWN = 1  # evdev key values: 0 up, 1 down, 2 auto-repeat


class InputDevice(Protocol):
    """What the reader needs of an `evdev.InputDevice`."""

    @property
    def path(self) -> str | bytes: ...

    @property
    def name(self) -> str: ...

    def grab(self) -> None: ...

    def ungrab(self) -> None: ...

    def close(self) -> None: ...

    def async_read_loop(self) -> AsyncIterator[InputEvent]: ...


OpenDevice = Callable[[str], InputDevice]


@dataclass(frozen=True)
class _KeyMap:
    key_event_type: int
    plain: dict[int, str]
    shifted: dict[int, str]
    shift_keys: frozenset[int]
    enter_keys: frozenset[int]


@cache
def _key_map() -> _KeyMap:
    from evdev import ecodes

    codes = ecodes.ecodes
    plain: dict[int, str] = {}
    shifted: dict[int, str] = {}
    for digit in "0123456789":
        # A reader set up for a French (AZERTY) host sends Shift with the top-row
        # digits, since that layout needs it for them: still the digit.
        for name in (f"KEY_{digit}", f"KEY_KP{digit}"):
            plain[codes[name]] = shifted[codes[name]] = digit
    for letter in "ABCDEF":  # hex readers
        plain[codes[f"KEY_{letter}"]] = letter.lower()
        shifted[codes[f"KEY_{letter}"]] = letter
    return _KeyMap(
        key_event_type=ecodes.EV_KEY,
        plain=plain,
        shifted=shifted,
        shift_keys=frozenset((ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTSHIFT)),
        enter_keys=frozenset((ecodes.KEY_ENTER, ecodes.KEY_KPENTER)),
    )


class KeyDecoder:
    """Turns key events into the text typed before each Enter: digits (top row and
    keypad) and the letters A-F; every other key is ignored."""

    def __init__(self, longest: int = LONGEST_TEXT) -> None:
        self.longest = longest
        self._keys = _key_map()
        self._text: list[str] = []
        self._shifts_held: set[int] = set()
        self._too_long = False

    def feed(self, event: InputEvent) -> str | None:
        """The text typed so far when `event` is Enter going down, else None."""
        keys = self._keys
        if event.type != keys.key_event_type:
            return None
        if event.code in keys.shift_keys:
            if event.value == 0:
                self._shifts_held.discard(event.code)
            else:
                self._shifts_held.add(event.code)
            return None
        if event.value != KEY_DOWN:
            return None
        if event.code in keys.enter_keys:
            return self._finish()
        table = keys.shifted if self._shifts_held else keys.plain
        character = table.get(event.code)
        if character is None or self._too_long:
            return None
        if len(self._text) == self.longest:
            log.warning("keyboard input dropped: %d keys without Enter", self.longest)
            self._text.clear()
            self._too_long = True  # until the next Enter
            return None
        self._text.append(character)
        return None

    def _finish(self) -> str | None:
        text = "".join(self._text)
        self._text.clear()
        if self._too_long:
            self._too_long = False
            return None
        return text or None


def open_input_device(path: str) -> InputDevice:
    """The evdev device at `path` (the default way KeyboardReader opens one)."""
    try:
        import evdev
    except ImportError as error:
        raise ReaderError("keyboard readers need the evdev package, on Linux") from error
    return evdev.InputDevice(path)


def open_failure(path: str, error: OSError) -> ReaderError:
    """What an installer should do when the input device at `path` cannot be opened."""
    if error.errno == errno.ENOENT:
        return ReaderError(
            f"input device {path} does not exist: check that the reader is plugged in and "
            "the device path (ls /dev/input/by-id/)"
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        return ReaderError(
            f"no permission to read input device {path}: add the edge's user to the input "
            "group (sudo usermod -aG input USER) and restart the edge"
        )
    return ReaderError(f"cannot open input device {path}: {error}")


class KeyboardReader:
    """A keyboard-wedge reader: each line typed (ended by Enter) is one UID, as text."""

    def __init__(
        self, settings: KeyboardReaderSettings, open_device: OpenDevice = open_input_device
    ) -> None:
        self.settings = settings
        self.open_device = open_device
        self._device_name: str | None = None

    def describe(self) -> str:
        name = f" ({self._device_name})" if self._device_name else ""
        return f"keyboard {self.settings.device}{name}"

    async def read(self) -> AsyncIterator[RawUid | ReaderOpened]:
        path = self.settings.device
        try:
            device = self.open_device(path)
        except OSError as error:
            raise open_failure(path, error) from error
        grabbed = False
        try:
            self._device_name = device.name
            if self.settings.grab:
                try:
                    device.grab()
                except OSError as error:
                    if error.errno == errno.EBUSY:
                        # A grabbed device sends its keys to the grabber alone.
                        raise ReaderError(
                            f"input device {path} is held by another program: stop it"
                        ) from error
                    raise ReaderError(f"cannot take input device {path}: {error}") from error
                grabbed = True
            yield OPENED
            decoder = KeyDecoder()
            try:
                async for event in device.async_read_loop():
                    text = decoder.feed(event)
                    if text is not None:
                        yield text
            except OSError as error:
                if error.errno == errno.ENODEV:
                    raise ReaderError(f"input device {path} went away (unplugged?)") from error
                raise ReaderError(f"input device {path} stopped answering: {error}") from error
        finally:
            if grabbed:
                # A device that is gone took its grab with it.
                with contextlib.suppress(OSError):
                    device.ungrab()
            device.close()
