"""The device boundary: how the edge reaches pins, buses and input devices. The
daemon uses the machine's own; tests, benchmarks and demos on a machine without the
hardware give fakes here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.feedback.display import OpenBus
from edge.readers.keyboard import OpenDevice
from edge.readers.rc522 import OpenSpi


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
