"""A reader's character display as feedback: which lines it shows for each signal and
for how long, written by one thread of its own so that callers never wait on the I2C
bus; a display that does not answer is reported once and skipped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from edge.feedback import Signal
from edge.feedback.lcd import CharacterDisplay, I2cBus
from edge.feedback.messages import charging_lines, display_lines
from edge.feedback.resting import MOMENTS, RestingState, RestTimer

log = logging.getLogger(__name__)

# How long a moment's message stays before the display goes back to what the reader
# rests in. "Card OK / Plug in the car" stays while the driver walks to the car.
HOLD_SECONDS: Mapping[Signal, float] = MappingProxyType(
    {
        Signal.ACCEPTED: 30.0,
        Signal.REJECTED: 5.0,
        Signal.CHARGING_STOPPED: 10.0,
        Signal.ERROR: 10.0,
    }
)

Lines = tuple[str, ...]
OpenBus = Callable[[int], I2cBus]


def open_smbus(bus_number: int) -> I2cBus:
    from smbus2 import SMBus  # only where a display is configured

    bus: I2cBus = SMBus(bus_number)
    return bus


class DisplayFeedback:
    """The display wired to one reader (HD44780 on a PCF8574 at `address` on I2C bus
    `bus_number`). `open_bus` opens the bus (default smbus2.SMBus); `pause` is the
    display's waits (tests pass their fake's clock); `time_scale` shortens HOLD_SECONDS."""

    def __init__(
        self,
        bus_number: int,
        address: int,
        columns: int = 16,
        rows: int = 2,
        *,
        open_bus: OpenBus | None = None,
        pause: Callable[[float], None] = time.sleep,
        time_scale: float = 1.0,
        name: str = "display",
    ) -> None:
        self.bus_number = bus_number
        self.address = address
        self.columns = columns
        self.rows = rows
        self.name = name
        self.time_scale = time_scale
        self._open_bus = open_bus or open_smbus
        self._pause = pause
        self._state = RestingState()
        self._details: dict[Signal, str] = {}  # the detail each resting signal came with
        self._charging: Lines | None = None  # the latest power and energy
        self._holding = False  # a moment's message is on the display
        self._rest = RestTimer(self._back_to_rest, name=f"display-{name}-rest")
        self._closed = False
        # Handed to the writer thread: the lines to show next (only the latest counts).
        self._changed = threading.Condition()
        self._wanted: Lines | None = display_lines(Signal.READER_ONLINE)
        self._closing = False
        self._failure_reported = False
        self._writer = threading.Thread(target=self._write_lines, name=f"display-{name}")
        self._writer.daemon = True
        self._writer.start()

    def describe(self) -> str:
        return f"I2C bus {self.bus_number} address 0x{self.address:02x}"

    def signal(self, signal: Signal, detail: str = "") -> None:
        with self._rest.lock:
            if self._closed:
                return
            self._state.note(signal)
            if signal is Signal.CHARGING_STARTED:
                self._charging = None
            if signal in MOMENTS:
                self._holding = True
                self._want(display_lines(signal, detail))
                self._rest.restart(HOLD_SECONDS[signal] * self.time_scale)
            else:
                self._details[signal] = detail
                self._holding = False
                self._rest.restart(None)
                self._want(self._resting_lines())

    def show_charging(self, power_w: float, energy_wh: int) -> None:
        """Shown while the reader rests in charging; ignored when no car charges (a
        meter value that arrives after the stop)."""
        with self._rest.lock:
            if self._closed or not self._state.charging:
                return
            self._charging = charging_lines(power_w, energy_wh)
            if not self._holding and self._state.signal is Signal.CHARGING_STARTED:
                self._want(self._charging)

    def close(self) -> None:
        """Clear the display, turn its backlight off and close the bus."""
        self._rest.cancel()
        with self._rest.lock:
            self._closed = True
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._writer.join(timeout=5.0)

    def _resting_lines(self) -> Lines:
        resting = self._state.signal
        if resting is Signal.CHARGING_STARTED and self._charging is not None:
            return self._charging
        return display_lines(resting, self._details.get(resting, ""))

    def _back_to_rest(self) -> None:
        if not self._closed:
            self._holding = False
            self._want(self._resting_lines())

    def _want(self, lines: Lines) -> None:
        with self._changed:
            self._wanted = lines
            self._changed.notify()

    def _write_lines(self) -> None:
        bus: I2cBus | None = None
        display: CharacterDisplay | None = None
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._wanted is not None or self._closing)
                if self._closing:
                    break
                lines, self._wanted = self._wanted, None
            assert lines is not None
            try:
                if bus is None:
                    bus = self._opened_bus()
                if display is None:
                    display = CharacterDisplay(
                        bus, self.address, self.columns, self.rows, pause=self._pause
                    )
                    display.set_backlight(True)  # fails at once when nothing answers
                    display.initialize()
                    if self._failure_reported:
                        log.info(
                            "reader %s: display at %s answers again", self.name, self.describe()
                        )
                        self._failure_reported = False
                display.show(lines)
            except OSError as error:
                # Tried again with the next lines: a display plugged in later is used.
                display = None
                if not self._failure_reported:
                    self._failure_reported = True
                    log.warning(
                        "reader %s: no display at %s: check wiring, or `i2cdetect -y %d` "
                        "(the reader goes on without it; %s)",
                        self.name,
                        self.describe(),
                        self.bus_number,
                        error,
                    )
            except Exception:
                # Not the bus: a fault here must not end the thread (and the display).
                log.exception("reader %s: display at %s failed", self.name, self.describe())
                display = None
        if display is not None:
            try:
                display.clear()
                display.set_backlight(False)
            except OSError:
                pass  # gone while closing: nothing left to turn off
        _close_bus(bus)

    def _opened_bus(self) -> I2cBus:
        try:
            return self._open_bus(self.bus_number)
        except FileNotFoundError as error:
            raise OSError(
                error.errno,
                f"/dev/i2c-{self.bus_number} does not exist: enable I2C (raspi-config) "
                "or correct lcd_i2c_bus",
            ) from error
        except PermissionError as error:
            raise OSError(
                error.errno,
                f"no permission to open /dev/i2c-{self.bus_number}: "
                "add the service's user to the i2c group",
            ) from error


def _close_bus(bus: I2cBus | None) -> None:
    close = getattr(bus, "close", None)
    if callable(close):
        close()
