"""An HD44780 character display behind a PCF8574 I2C backpack, written in 4-bit mode:
initialisation by instruction (datasheet figure 24), clear, home, cursor position, and
text converted to the characters the display's ROM has."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import Protocol


class I2cBus(Protocol):
    """All the display needs of an I2C bus (smbus2.SMBus has it)."""

    def write_byte(self, address: int, value: int) -> None: ...


# The PCF8574's port on the usual backpack: P0=RS, P1=RW, P2=E, P3=backlight, P4-P7=D4-D7.
REGISTER_SELECT = 0x01  # high: data, low: instruction
READ_WRITE = 0x02  # always low: the display is only written
ENABLE = 0x04  # the HD44780 latches D4-D7 when this falls
BACKLIGHT = 0x08

# HD44780 instructions and their option bits.
CLEAR = 0x01
HOME = 0x02
ENTRY_MODE = 0x04
ENTRY_INCREMENT = 0x02
DISPLAY_CONTROL = 0x08
DISPLAY_ON = 0x04
FUNCTION_SET = 0x20
EIGHT_BIT = 0x10
TWO_LINES = 0x08
SET_DDRAM_ADDRESS = 0x80

# Waits from the datasheet, rounded up. Other instructions take 37 us, less than the
# I2C bus needs to send the next nibble (PCF8574: 100 kHz, ~0.1 ms a byte).
POWER_ON_SECONDS = 0.05  # > 40 ms after Vcc reaches 2.7 V
FIRST_FUNCTION_SET_SECONDS = 0.005  # > 4.1 ms
SECOND_FUNCTION_SET_SECONDS = 0.0002  # > 100 us
CLEAR_SECONDS = 0.002  # clear and home: 1.52 ms

# The A00 ROM (the common one) has a yen sign at backslash's code and arrows at ~ and DEL.
_ROM_PRINTABLE = frozenset(range(0x20, 0x7E)) - {0x5C}


def rom_text(text: str) -> bytes:
    """`text` in the display's character codes: ASCII as it is, accents dropped
    ("Café" -> "Cafe"), anything the ROM lacks as '?'."""
    plain = unicodedata.normalize("NFKD", text)
    codes = bytearray()
    for character in plain:
        if unicodedata.combining(character):
            continue
        code = ord(character)
        codes.append(code if code in _ROM_PRINTABLE else ord("?"))
    return bytes(codes)


def fit_line(text: str, columns: int) -> bytes:
    """One display line: cut or padded with spaces to exactly `columns` characters."""
    return rom_text(text)[:columns].ljust(columns, b" ")


class CharacterDisplay:
    """A `columns` x `rows` HD44780 at `address` on `bus`. Every call writes the bus at
    once and raises OSError when the display does not answer."""

    def __init__(
        self,
        bus: I2cBus,
        address: int,
        columns: int = 16,
        rows: int = 2,
        *,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self.bus = bus
        self.address = address
        self.columns = columns
        self.rows = rows
        self.pause = pause
        self.backlight = True
        # DDRAM addresses where rows start; rows 3 and 4 continue rows 1 and 2.
        self.row_addresses = (0x00, 0x40, columns, 0x40 + columns)[:rows]
        self._shown: list[bytes | None] = [None] * rows

    def initialize(self) -> None:
        """Put the display in 4-bit mode from whatever state it is in (just powered, or
        left half-way through a byte by a previous run), clear it and turn it on."""
        self._shown = [None] * self.rows
        self.pause(POWER_ON_SECONDS)
        # Three 8-bit function sets, one nibble each: a known 8-bit state whichever
        # nibble the display was waiting for.
        self._write_nibble(0x3, data=False)
        self.pause(FIRST_FUNCTION_SET_SECONDS)
        self._write_nibble(0x3, data=False)
        self.pause(SECOND_FUNCTION_SET_SECONDS)
        self._write_nibble(0x3, data=False)
        self._write_nibble(0x2, data=False)  # from here on, two nibbles a byte
        self._instruction(FUNCTION_SET | (TWO_LINES if self.rows > 1 else 0))
        self._instruction(DISPLAY_CONTROL)  # off while it is cleared
        self.clear()
        self._instruction(ENTRY_MODE | ENTRY_INCREMENT)
        self._instruction(DISPLAY_CONTROL | DISPLAY_ON)  # no cursor, no blinking

    def clear(self) -> None:
        self._instruction(CLEAR)
        self.pause(CLEAR_SECONDS)
        self._shown = [b" " * self.columns] * self.rows

    def home(self) -> None:
        self._instruction(HOME)
        self.pause(CLEAR_SECONDS)

    def set_cursor(self, column: int, row: int) -> None:
        if not (0 <= row < self.rows and 0 <= column < self.columns):
            raise ValueError(f"no position column {column} row {row} on this display")
        self._instruction(SET_DDRAM_ADDRESS | (self.row_addresses[row] + column))

    def write(self, text: str) -> None:
        """`text` from the cursor on; the caller keeps it within the line."""
        for code in rom_text(text):
            self._write_byte(code, data=True)

    def show(self, lines: Sequence[str]) -> None:
        """Every row: its line cut or padded to the width (rows without a line blank).
        Rows already showing their text are not written again."""
        for row in range(self.rows):
            line = fit_line(lines[row] if row < len(lines) else "", self.columns)
            if self._shown[row] == line:
                continue
            self._shown[row] = None  # unknown until the whole row is written
            self._instruction(SET_DDRAM_ADDRESS | self.row_addresses[row])
            for code in line:
                self._write_byte(code, data=True)
            self._shown[row] = line

    def set_backlight(self, on: bool) -> None:
        self.backlight = on
        self._port(0)

    def _instruction(self, instruction: int) -> None:
        self._write_byte(instruction, data=False)

    def _write_byte(self, value: int, *, data: bool) -> None:
        self._write_nibble(value >> 4, data=data)
        self._write_nibble(value & 0x0F, data=data)

    def _write_nibble(self, nibble: int, *, data: bool) -> None:
        # RS and data settle before E rises and stay while it falls (setup and hold).
        bits = (nibble << 4) | (REGISTER_SELECT if data else 0)
        self._port(bits)
        self._port(bits | ENABLE)
        self._port(bits)

    def _port(self, bits: int) -> None:
        self.bus.write_byte(self.address, bits | (BACKLIGHT if self.backlight else 0))
