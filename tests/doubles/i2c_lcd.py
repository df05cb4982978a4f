"""A fake I2C bus with an HD44780 character display behind a PCF8574 backpack: it decodes
the port bytes as the chip does and shows the screen as text."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable

# PCF8574 port bits on the usual backpack.
RS, RW, E, BACKLIGHT = 0x01, 0x02, 0x04, 0x08

# An I2C byte at the PCF8574's 100 kHz: start, address, data, acknowledges, stop.
SECONDS_PER_BYTE = 0.0002

# The A00 ROM's characters where they differ from ASCII.
_ROM_CHARACTERS = {0x5C: "¥", 0x7E: "→", 0x7F: "←"}


class FakeI2cLcd:
    """What an HD44780 does with the bytes written to its PCF8574 at `address`.

    Writes go through `write_byte(address, value)`, like smbus2.SMBus. The controller
    latches D4-D7 and RS when E falls; it powers up in 8-bit mode (or, with
    `four_bit=True`, as a previous run left it: 4-bit, waiting for a low nibble).
    `answering=False` (settable at any time): nothing answers at the address and
    write_byte raises OSError as smbus2 does (errno 121, Remote I/O error).

    Timing is checked on a clock that counts SECONDS_PER_BYTE per write plus whatever
    the driver `sleep`s (or, with `real_time=True`, for a driver that really sleeps,
    the time that really passed): an instruction that arrives while the controller is
    busy, or bytes that do not respect E's setup and hold, are listed in `errors`.
    """

    def __init__(
        self,
        address: int = 0x27,
        columns: int = 16,
        rows: int = 2,
        *,
        answering: bool = True,
        four_bit: bool = False,
        real_time: bool = False,
    ) -> None:
        self.address = address
        self.real_time = real_time
        self._last_write = time.monotonic()
        self.columns = columns
        self.rows = rows
        self.answering = answering
        self.errors: list[str] = []
        self.refused = 0  # writes that nothing answered
        self.closed = False
        self.clock = 0.0
        self.port = 0xFF  # a PCF8574 powers up with every output high
        self.ddram = bytearray(b" " * 0x80)
        self.address_counter = 0
        self.increment = True
        self.display_on = False
        self.cursor_on = False
        self.blink_on = False
        self.two_lines = False
        self.eight_bit = not four_bit
        self.high_nibble: int | None = 0x0 if four_bit else None
        self.function_sets_in_eight_bit = 0
        self.busy_until = 0.0 if four_bit else 0.040  # power-on: 40 ms before any instruction
        self.instructions: list[int] = []  # every instruction executed, in order
        self._changed = threading.Condition()

    # The bus side.

    def write_byte(self, address: int, value: int) -> None:
        with self._changed:
            if self.closed:
                raise ValueError("write to a closed bus")
            self.clock += SECONDS_PER_BYTE
            if self.real_time:
                # The time the driver really waited since its previous byte.
                now = time.monotonic()
                self.clock += now - self._last_write
                self._last_write = now
            if address != self.address or not self.answering:
                self.refused += 1
                self._changed.notify_all()
                raise OSError(errno.EREMOTEIO, "Remote I/O error")
            if not 0 <= value <= 0xFF:
                raise ValueError(f"not a byte: {value}")
            previous, self.port = self.port, value
            if value & RW:
                self.errors.append(f"RW set in {value:#04x}: the display would drive the bus")
            rising = not previous & E and value & E
            falling = previous & E and not value & E
            if rising and (previous ^ value) & ~(E | BACKLIGHT) & 0xFF:
                self.errors.append(
                    f"RS/data changed with E rising ({previous:#04x} -> {value:#04x})"
                )
            if falling and not previous & RW:  # a read (only at power-up here) changes nothing
                if (previous ^ value) & ~(E | BACKLIGHT) & 0xFF:
                    self.errors.append(
                        f"RS/data changed with E falling ({previous:#04x} -> {value:#04x})"
                    )
                self._latch(previous >> 4, register_select=bool(previous & RS))
            self._changed.notify_all()

    def sleep(self, seconds: float) -> None:
        """The driver's pause: the fake's clock moves on, no real time passes."""
        with self._changed:
            self.clock += seconds

    def close(self) -> None:
        self.closed = True

    # What a test looks at.

    @property
    def backlight(self) -> bool:
        return bool(self.port & BACKLIGHT)

    @property
    def lines(self) -> tuple[str, ...]:
        """The visible rows, each `columns` characters wide (blank while the display is off)."""
        if not self.display_on:
            return tuple(" " * self.columns for _ in range(self.rows))
        starts = (0x00, 0x40, self.columns, 0x40 + self.columns)
        return tuple(
            "".join(_character(code) for code in self.ddram[start : start + self.columns])
            for start in starts[: self.rows]
        )

    @property
    def text(self) -> tuple[str, ...]:
        """The visible rows without trailing spaces."""
        return tuple(line.rstrip() for line in self.lines)

    def wait_until(self, condition: Callable[[FakeI2cLcd], bool], within: float = 2.0) -> bool:
        """Wait (for the driver's thread) until `condition(self)` holds after a write."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(self), timeout=within)

    def wait_for_text(self, *rows: str, within: float = 2.0) -> None:
        if not self.wait_until(lambda lcd: lcd.text == rows, within):
            raise AssertionError(f"display shows {self.text}, not {rows}")

    # The controller.

    def _latch(self, nibble: int, *, register_select: bool) -> None:
        if self.eight_bit:
            # D0-D3 are not wired on a backpack: 8-bit mode sees only D4-D7.
            self._execute(nibble << 4, register_select=register_select)
            return
        if self.high_nibble is None:
            self.high_nibble = nibble
            return
        value = (self.high_nibble << 4) | nibble
        self.high_nibble = None
        self._execute(value, register_select=register_select)

    def _execute(self, value: int, *, register_select: bool) -> None:
        if self.clock < self.busy_until:
            self.errors.append(
                f"{'data' if register_select else 'instruction'} {value:#04x} while busy "
                f"({(self.busy_until - self.clock) * 1e6:.0f} us early)"
            )
        takes = 37e-6
        if register_select:
            self._write_ddram(value)
            takes = 41e-6
        elif value & 0x80:
            self.address_counter = value & 0x7F
        elif value & 0x40:
            self.errors.append(f"CGRAM address {value:#04x}: not emulated")
        elif value & 0x20:
            takes = self._function_set(value)
        elif value & 0x10:
            self.errors.append(f"cursor/display shift {value:#04x}: not emulated")
        elif value & 0x08:
            self.display_on = bool(value & 0x04)
            self.cursor_on = bool(value & 0x02)
            self.blink_on = bool(value & 0x01)
        elif value & 0x04:
            self.increment = bool(value & 0x02)
            if value & 0x01:
                self.errors.append("entry mode with display shift: not emulated")
        elif value & 0x02:
            self.address_counter = 0
            takes = 1.52e-3
        elif value & 0x01:
            self.ddram[:] = b" " * len(self.ddram)
            self.address_counter = 0
            self.increment = True
            takes = 1.52e-3
        if not register_select:
            self.instructions.append(value)
        self.busy_until = self.clock + takes

    def _function_set(self, value: int) -> float:
        if self.eight_bit and value & 0x10:
            # Initialising by instruction: 4.1 ms after the first, 100 us after the second.
            self.function_sets_in_eight_bit += 1
            return {1: 4.1e-3, 2: 100e-6}.get(self.function_sets_in_eight_bit, 37e-6)
        if self.eight_bit:
            self.eight_bit = False  # 4-bit from the next nibble on
            self.high_nibble = None
            return 37e-6
        if value & 0x10:
            self.eight_bit = True
            return 37e-6
        self.two_lines = bool(value & 0x08)
        return 37e-6

    def _write_ddram(self, code: int) -> None:
        self.ddram[self.address_counter] = code
        step = 1 if self.increment else -1
        if self.two_lines:
            # Two lines: 0x00-0x27 and 0x40-0x67, the counter wraps from one to the other.
            following = (self.address_counter + step) & 0x7F
            if following == 0x28:
                following = 0x40
            elif following == 0x68:
                following = 0x00
            self.address_counter = following
        else:
            self.address_counter = (self.address_counter + step) % 0x50


def _character(code: int) -> str:
    if code in _ROM_CHARACTERS:
        return _ROM_CHARACTERS[code]
    return chr(code) if 0x20 <= code < 0x80 else "?"
