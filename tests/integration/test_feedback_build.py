"""Building a reader's feedback from its settings: lights and display together, a missing
display, a machine without GPIO (said once per process), nothing wired."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge.feedback import NoFeedback, Signal
from edge.feedback.build import build_feedback
from edge.feedback.lcd import I2cBus
from edge.settings import FeedbackSettings
from tests.doubles.i2c_lcd import FakeI2cLcd

ROOT = Path(__file__).resolve().parents[2]


def test_nothing_wired_is_no_feedback() -> None:
    assert isinstance(build_feedback(FeedbackSettings(), "r1"), NoFeedback)


def test_lights_and_display_play_together() -> None:
    factory = MockFactory()
    lcd = FakeI2cLcd(0x3F)
    settings = FeedbackSettings(green_led=17, relay=23, lcd_i2c_bus=1, lcd_address=0x3F)
    feedback = build_feedback(settings, "r1", pin_factory=factory, open_bus=lambda bus: lcd)
    lcd.wait_for_text("Tap card", "to charge")
    feedback.signal(Signal.CHARGING_STARTED)
    assert factory.pin(17).state and factory.pin(23).state
    lcd.wait_for_text("Charging", "")
    feedback.show_charging(3680, 500)
    lcd.wait_for_text("Charging 3.7 kW", "0.5 kWh")
    feedback.close()
    assert not factory.pin(17).state and not factory.pin(23).state
    assert not lcd.backlight


def test_lights_work_without_the_display(caplog: pytest.LogCaptureFixture) -> None:
    factory = MockFactory()
    lcd = FakeI2cLcd(0x27, answering=False)

    def open_bus(bus_number: int) -> I2cBus:
        return lcd

    settings = FeedbackSettings(green_led=17, red_led=27, lcd_i2c_bus=1)
    feedback = build_feedback(settings, "r1", pin_factory=factory, open_bus=open_bus)
    feedback.signal(Signal.REJECTED)
    assert lcd.wait_until(lambda lcd: lcd.refused == 2)
    feedback.signal(Signal.CHARGING_STARTED)
    assert factory.pin(17).state and not factory.pin(27).state
    feedback.close()
    [warning] = caplog.records
    assert "reader r1: no display at I2C bus 1 address 0x27" in warning.getMessage()


def test_a_pin_that_does_not_exist_is_named(caplog: pytest.LogCaptureFixture) -> None:
    lcd = FakeI2cLcd(0x27)
    settings = FeedbackSettings(green_led="GPIO99", lcd_i2c_bus=1)
    feedback = build_feedback(settings, "r4", pin_factory=MockFactory(), open_bus=lambda bus: lcd)
    feedback.signal(Signal.ACCEPTED)
    lcd.wait_for_text("Card OK", "Plug in the car")  # the display still works
    feedback.close()
    [error] = caplog.records
    assert "reader r4: its lights, buzzer and relay are not used" in error.getMessage()
    assert "GPIO99" in error.getMessage()


def running_on_a_raspberry_pi() -> bool:
    model = Path("/proc/device-tree/model")
    return model.exists() and "Raspberry Pi" in model.read_text(errors="replace")


@pytest.mark.skipif(running_on_a_raspberry_pi(), reason="this machine has GPIO")
def test_no_gpio_is_said_once_per_process() -> None:
    # A process of its own: "once" is per process, and gpiozero's factory is global.
    program = textwrap.dedent(
        """
        import logging
        from edge.feedback import NoFeedback, Signal
        from edge.feedback.build import CombinedFeedback, build_feedback
        from edge.settings import FeedbackSettings
        from tests.doubles.i2c_lcd import FakeI2cLcd

        logging.basicConfig(format="%(levelname)s %(message)s")
        lights = FeedbackSettings(green_led=17, red_led=27, buzzer=22)
        with_display = FeedbackSettings(green_led=5, relay=6, lcd_i2c_bus=1)
        lcd = FakeI2cLcd()
        for reader_id, settings in [("r1", lights), ("r2", lights), ("r3", with_display)]:
            feedback = build_feedback(settings, reader_id, open_bus=lambda bus: lcd)
            for signal in Signal:
                feedback.signal(signal)
            if reader_id == "r3":
                assert isinstance(feedback, CombinedFeedback), feedback
                lcd.wait_for_text("Tap card", "to charge")
            else:
                assert isinstance(feedback, NoFeedback), feedback
            feedback.close()
        """
    )
    environment = {name: value for name, value in os.environ.items() if "GPIOZERO" not in name}
    finished = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    lines = finished.stderr.splitlines()
    assert lines == [
        "WARNING no GPIO on this machine: readers run without lights, buzzer and relay "
        "(Unable to load any default pin factory!)"
    ]


def test_pins_that_cannot_be_opened_mean_no_gpio(caplog: pytest.LogCaptureFixture) -> None:
    # Pin access refused (no permission on /dev/gpiochip0) counts as no GPIO too.
    class NoPins(MockFactory):  # type: ignore[misc]
        def pin(self, name: object, pin_class: object = None, **options: object) -> object:
            raise OSError(13, "Permission denied", "/dev/gpiochip0")

    with caplog.at_level(logging.WARNING):
        feedback = build_feedback(FeedbackSettings(buzzer=22), "r1", pin_factory=NoPins())
    assert isinstance(feedback, NoFeedback)
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert "no GPIO on this machine" in warning.getMessage()
    assert "Permission denied" in warning.getMessage()
