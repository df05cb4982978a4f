"""Building one reader's feedback from its settings: the GPIO part where pins are set,
the display where an I2C bus is set, nothing where nothing is wired. A machine without
GPIO is said once per process, not once per reader."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

from gpiozero.exc import BadPinFactory, GPIOZeroError, PinFactoryFallback

from edge.feedback import Feedback, NoFeedback, Signal
from edge.feedback.display import DisplayFeedback, OpenBus
from edge.feedback.gpio import GpioFeedback
from edge.settings import FeedbackSettings

log = logging.getLogger(__name__)

# Learned once per process: gpiozero found no way to drive pins on this machine.
_no_gpio: BadPinFactory | OSError | None = None


class CombinedFeedback:
    """Several parts (lights, display) as one. A part that fails is logged and the
    others still play: feedback never stops a tap from being handled."""

    def __init__(self, parts: Sequence[Feedback], reader_id: str) -> None:
        self.parts = tuple(parts)
        self.reader_id = reader_id

    def signal(self, signal: Signal, detail: str = "") -> None:
        for part in self.parts:
            try:
                part.signal(signal, detail)
            except Exception:
                log.exception(
                    "reader %s: %s failed to show %s", self.reader_id, _name(part), signal
                )

    def show_charging(self, power_w: float, energy_wh: int) -> None:
        for part in self.parts:
            try:
                part.show_charging(power_w, energy_wh)
            except Exception:
                log.exception("reader %s: %s failed to show charging", self.reader_id, _name(part))

    def close(self) -> None:
        for part in self.parts:
            try:
                part.close()
            except Exception:
                log.exception("reader %s: %s failed to close", self.reader_id, _name(part))


def has_gpio_parts(settings: FeedbackSettings) -> bool:
    pins = (settings.green_led, settings.red_led, settings.rgb_led, settings.buzzer)
    return any(pin is not None for pin in (*pins, settings.relay))


def build_feedback(
    settings: FeedbackSettings,
    reader_id: str,
    *,
    pin_factory: Any = None,
    open_bus: OpenBus | None = None,
) -> Feedback:
    """Everything wired to reader `reader_id`, as one Feedback. `pin_factory`: gpiozero's
    (None: the machine's own); `open_bus(bus_number)`: an I2C bus (None: smbus2)."""
    parts: list[Feedback] = []
    if has_gpio_parts(settings):
        gpio = _gpio_feedback(settings, reader_id, pin_factory)
        if gpio is not None:
            parts.append(gpio)
    if settings.lcd_i2c_bus is not None:
        parts.append(
            DisplayFeedback(
                settings.lcd_i2c_bus,
                settings.lcd_address,
                settings.lcd_columns,
                settings.lcd_rows,
                open_bus=open_bus,
                name=reader_id,
            )
        )
    if not parts:
        return NoFeedback()
    return CombinedFeedback(parts, reader_id)


def _gpio_feedback(
    settings: FeedbackSettings, reader_id: str, pin_factory: Any
) -> GpioFeedback | None:
    global _no_gpio
    if pin_factory is None and _no_gpio is not None:
        return None  # already said
    try:
        with warnings.catch_warnings():
            # gpiozero warns for each pin library it tries; the outcome is said below.
            warnings.simplefilter("ignore", PinFactoryFallback)
            return GpioFeedback(settings, pin_factory=pin_factory, name=reader_id)
    except (BadPinFactory, OSError) as error:
        if pin_factory is None:
            _no_gpio = error
        log.warning(
            "no GPIO on this machine: readers run without lights, buzzer and relay (%s)",
            error,
        )
        return None
    except GPIOZeroError as error:
        log.error(
            "reader %s: its lights, buzzer and relay are not used: %s: "
            "check the pins of its feedback settings",
            reader_id,
            error,
        )
        return None


def _name(part: Feedback) -> str:
    return type(part).__name__
