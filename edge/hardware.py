"""The device boundary: how the edge reaches pins, buses and input devices. The
daemon uses the machine's own; tests, benchmarks and demos on a machine without the
hardware give fakes here and nowhere else."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from edge.feedback.display import OpenBus
from edge.readers.keyboard import OpenDevice
from edge.readers.rc522 import OpenSpi


class NoPinFactory(Exception):
    """gpiozero found no way to drive this machine's pins; the message is why, when it said."""


@dataclass(frozen=True)
class Hardware:
    # gpiozero's pin factory (LEDs, buzzer, relay, the RC522's reset pin).
    pin_factory: Any = None
    # An I2C bus by number (the readers' displays).
    open_bus: OpenBus | None = None
    # An SPI device by (bus, device, speed) (RC522 readers).
    open_spi: OpenSpi | None = None
    # An evdev input device by path (keyboard-wedge readers).
    open_input_device: OpenDevice | None = None

    def pin_factory_in_use(self) -> Any:
        """The pin factory the pins are driven with: the one given, else gpiozero's own
        choice for this machine; NoPinFactory when there is none."""
        if self.pin_factory is not None:
            return self.pin_factory
        from gpiozero import BadPinFactory, Device

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # gpiozero warns at each fallback it tries
                Device.ensure_pin_factory()
        except BadPinFactory:
            raise NoPinFactory("") from None
        except Exception as error:  # gpiozero raises many kinds; each means "no GPIO"
            raise NoPinFactory(f"{type(error).__name__}: {error}") from error
        return Device.pin_factory
