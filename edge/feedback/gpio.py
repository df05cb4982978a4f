"""A reader's lights, buzzer and relay on GPIO pins, driven with gpiozero: the table of
patterns (one per Signal) and the devices that play them in gpiozero's own threads."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from gpiozero import LED, RGBLED, Buzzer, OutputDevice

from edge.feedback import Signal
from edge.feedback.resting import MOMENTS, RestingState, RestTimer
from edge.settings import FeedbackSettings


class Colour(StrEnum):
    GREEN = "green"
    RED = "red"


@dataclass(frozen=True)
class Pulses:
    """`times` pulses of `on_seconds` each followed by `off_seconds`; `times` None:
    repeat until the next signal."""

    on_seconds: float
    off_seconds: float = 0.0
    times: int | None = 1

    @property
    def seconds(self) -> float:
        if self.times is None or math.isinf(self.on_seconds):
            return math.inf
        return self.times * (self.on_seconds + self.off_seconds)

    def scaled(self, factor: float) -> Pulses:
        return replace(
            self, on_seconds=self.on_seconds * factor, off_seconds=self.off_seconds * factor
        )


STEADY = Pulses(math.inf)  # on until the next signal


@dataclass(frozen=True)
class Pattern:
    """What one signal does: the light's colour (None: dark) and rhythm, the beeps, and
    the relay (True: closed, False: open, None: left as it is)."""

    light: Colour | None = None
    blink: Pulses = STEADY
    beeps: Pulses | None = None
    relay: bool | None = None


# The one table of patterns; docs/readers.md repeats it for installers.
PATTERNS: Mapping[Signal, Pattern] = MappingProxyType(
    {
        Signal.ACCEPTED: Pattern(Colour.GREEN, Pulses(0.15, 0.15, 2), beeps=Pulses(0.1)),
        Signal.REJECTED: Pattern(Colour.RED, Pulses(2.0), beeps=Pulses(0.1, 0.1, 3)),
        Signal.CHARGING_STARTED: Pattern(Colour.GREEN, STEADY, relay=True),
        Signal.CHARGING_STOPPED: Pattern(None, beeps=Pulses(0.1, 0.1, 2), relay=False),
        Signal.ERROR: Pattern(Colour.RED, Pulses(0.1, 0.1, 10), beeps=Pulses(1.0)),
        Signal.READER_OFFLINE: Pattern(Colour.RED, Pulses(1.0, 1.0, None)),
        Signal.READER_ONLINE: Pattern(None),
    }
)

RGB_COLOURS = {Colour.GREEN: (0, 1, 0), Colour.RED: (1, 0, 0)}


def pattern_seconds(pattern: Pattern) -> float:
    """How long a moment's light and beeps take together."""
    light = pattern.blink.seconds if pattern.light is not None else 0.0
    beeps = pattern.beeps.seconds if pattern.beeps is not None else 0.0
    return max(light, beeps)


def _play(device: Any, pulses: Pulses) -> None:
    """Steady on, or pulses in gpiozero's background thread (LED, Buzzer, OutputDevice)."""
    if math.isinf(pulses.on_seconds):
        device.on()
    else:
        device.blink(pulses.on_seconds, pulses.off_seconds, n=pulses.times, background=True)


class _Lights(Protocol):
    def show(self, colour: Colour | None, blink: Pulses) -> None: ...

    def close(self) -> None: ...


class _TwoLeds:
    """A green and a red LED, either of them possibly missing."""

    def __init__(self, green: Any, red: Any) -> None:
        self.leds = {Colour.GREEN: green, Colour.RED: red}

    def show(self, colour: Colour | None, blink: Pulses) -> None:
        for led_colour, led in self.leds.items():
            if led is not None and led_colour != colour:
                led.off()
        led = self.leds.get(colour) if colour is not None else None
        if led is not None:
            _play(led, blink)

    def close(self) -> None:
        for led in self.leds.values():
            if led is not None:
                led.off()
                led.close()


class _RgbLed:
    """One RGB LED showing the same patterns in green or red (blue stays off)."""

    def __init__(self, led: Any) -> None:
        self.led = led

    def show(self, colour: Colour | None, blink: Pulses) -> None:
        if colour is None:
            self.led.off()
        elif math.isinf(blink.on_seconds):
            self.led.value = RGB_COLOURS[colour]
        else:
            self.led.blink(
                blink.on_seconds,
                blink.off_seconds,
                on_color=RGB_COLOURS[colour],
                n=blink.times,
                background=True,
            )

    def close(self) -> None:
        self.led.off()
        self.led.close()


class GpioFeedback:
    """The lights, buzzer and relay wired to one reader.

    A moment's pattern (accepted, refused, stopped, error) plays, then the lights go back
    to what the reader rests in: dark, green while its car charges, red blinking while
    the reader is offline. Each new signal replaces the pattern playing. `time_scale`
    shortens every time in the table (tests); `pin_factory` is gpiozero's (tests pass a
    MockFactory; None: the machine's own).
    """

    def __init__(
        self,
        settings: FeedbackSettings,
        *,
        pin_factory: Any = None,
        time_scale: float = 1.0,
        name: str = "feedback",
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self._state = RestingState()
        self._rest = RestTimer(self._back_to_rest, name=f"feedback-{name}")
        self._closed = False
        created: list[Any] = []

        def make(kind: Any, *pins: object, **options: Any) -> Any:
            device = kind(*pins, active_high=settings.active_high, **options)
            created.append(device)
            return device

        try:
            if settings.rgb_led is not None:
                rgb = make(RGBLED, *settings.rgb_led, pwm=False, pin_factory=pin_factory)
                self._lights: _Lights = _RgbLed(rgb)
            else:
                green = red = None
                if settings.green_led is not None:
                    green = make(LED, settings.green_led, pin_factory=pin_factory)
                if settings.red_led is not None:
                    red = make(LED, settings.red_led, pin_factory=pin_factory)
                self._lights = _TwoLeds(green, red)
            self._buzzer = None
            if settings.buzzer is not None:
                self._buzzer = make(Buzzer, settings.buzzer, pin_factory=pin_factory)
            self._relay = None
            if settings.relay is not None:
                self._relay = make(
                    OutputDevice, settings.relay, initial_value=False, pin_factory=pin_factory
                )
        except BaseException:
            # Release what was claimed so another attempt (or reader) can have the pins.
            for device in created:
                device.close()
            raise

    def signal(self, signal: Signal, detail: str = "") -> None:
        pattern = PATTERNS[signal]
        with self._rest.lock:
            if self._closed:
                return
            self._state.note(signal)
            if pattern.relay is not None and self._relay is not None:
                self._relay.value = pattern.relay
            if signal in MOMENTS:
                self._show(pattern)
                self._rest.restart(pattern_seconds(pattern) * self.time_scale)
            else:
                self._rest.restart(None)
                self._show(PATTERNS[self._state.signal])

    def show_charging(self, power_w: float, energy_wh: int) -> None:
        pass  # lights do not show numbers; green stays lit while charging

    def close(self) -> None:
        self._rest.cancel()
        with self._rest.lock:
            if self._closed:
                return
            self._closed = True
            self._lights.close()
            for device in (self._buzzer, self._relay):
                if device is not None:
                    device.off()
                    device.close()

    def _show(self, pattern: Pattern) -> None:
        self._lights.show(pattern.light, pattern.blink.scaled(self.time_scale))
        if self._buzzer is None:
            return
        if pattern.beeps is None:
            self._buzzer.off()
        else:
            _play(self._buzzer, pattern.beeps.scaled(self.time_scale))

    def _back_to_rest(self) -> None:
        if not self._closed:
            resting = PATTERNS[self._state.signal]
            self._lights.show(resting.light, resting.blink.scaled(self.time_scale))
