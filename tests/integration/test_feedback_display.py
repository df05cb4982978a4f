"""The character display through a fake I2C bus that decodes what an HD44780 on a PCF8574
receives: initialisation, text per signal, charging figures, and a display that is
missing or comes and goes."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator

import pytest

from edge.feedback import Signal
from edge.feedback.display import DisplayFeedback
from edge.feedback.lcd import CharacterDisplay, I2cBus
from tests.doubles.i2c_lcd import FakeI2cLcd

ADDRESS = 0x27


def display_on(lcd: FakeI2cLcd, *, time_scale: float = 1.0, name: str = "r1") -> DisplayFeedback:
    def open_bus(bus_number: int) -> I2cBus:
        assert bus_number == 1
        return lcd

    return DisplayFeedback(
        1, ADDRESS, lcd.columns, lcd.rows, open_bus=open_bus, pause=lcd.sleep,
        time_scale=time_scale, name=name,
    )  # fmt: skip


@pytest.fixture
def lcd() -> FakeI2cLcd:
    return FakeI2cLcd(ADDRESS)


@pytest.fixture
def display(lcd: FakeI2cLcd) -> Iterator[DisplayFeedback]:
    feedback = display_on(lcd)
    lcd.wait_for_text("Tap card", "to charge")
    yield feedback
    feedback.close()
    assert lcd.errors == []


def test_initialises_by_instruction_then_shows_idle(lcd: FakeI2cLcd) -> None:
    display = CharacterDisplay(lcd, ADDRESS, pause=lcd.sleep)
    display.set_backlight(True)
    display.initialize()
    # Three 8-bit function sets, 4-bit, 2 lines, display off, clear, entry mode, display on.
    assert lcd.instructions == [0x30, 0x30, 0x30, 0x20, 0x28, 0x08, 0x01, 0x06, 0x0C]
    display.show(["Tap card", "to charge"])
    assert lcd.text == ("Tap card", "to charge")
    assert lcd.backlight
    assert lcd.errors == []


def test_initialises_a_display_left_in_four_bit_mode() -> None:
    lcd = FakeI2cLcd(ADDRESS, four_bit=True)  # a previous run stopped half-way a byte
    display = CharacterDisplay(lcd, ADDRESS, pause=lcd.sleep)
    display.initialize()
    display.show(["Out of order"])
    assert lcd.text == ("Out of order", "")
    assert lcd.errors == []


def test_the_fake_catches_a_driver_that_does_not_wait(lcd: FakeI2cLcd) -> None:
    # Guards the timing checks that the tests above rely on.
    display = CharacterDisplay(lcd, ADDRESS, pause=lambda seconds: None)
    display.initialize()
    assert any("while busy" in error for error in lcd.errors)


def test_lines_are_cut_or_padded_and_unknown_characters_replaced() -> None:
    lcd = FakeI2cLcd(ADDRESS, columns=20, rows=4)
    display = CharacterDisplay(lcd, ADDRESS, columns=20, rows=4, pause=lcd.sleep)
    display.initialize()
    display.show(["Café ünd Straße: 22 kW and more", "a\\b~c", "third", "fourth"])
    assert lcd.lines == (
        "Cafe und Stra?e: 22 ",
        "a?b?c               ",
        "third".ljust(20),
        "fourth".ljust(20),
    )
    display.set_cursor(3, 1)
    display.write("X")
    display.home()
    display.write("Y")
    assert lcd.text == ("Yafe und Stra?e: 22", "a?bXc", "third", "fourth")
    assert lcd.errors == []


@pytest.mark.parametrize(
    ("signal", "detail", "shown"),
    [
        (Signal.ACCEPTED, "", ("Card OK", "Plug in the car")),
        (Signal.REJECTED, "Card blocked", ("Card refused", "Card blocked")),
        (Signal.CHARGING_STARTED, "", ("Charging", "")),
        (Signal.CHARGING_STOPPED, "12.4 kWh", ("Charging stopped", "12.4 kWh")),
        (Signal.ERROR, "Charger offline", ("Error", "Charger offline")),
        (Signal.READER_OFFLINE, "", ("Out of order", "Reader offline")),
    ],
)
def test_each_signal_shows_its_lines(
    display: DisplayFeedback, lcd: FakeI2cLcd, signal: Signal, detail: str, shown: tuple[str, str]
) -> None:
    display.signal(signal, detail)
    lcd.wait_for_text(*shown)


def test_charging_figures_replace_charging(display: DisplayFeedback, lcd: FakeI2cLcd) -> None:
    display.show_charging(7200, 3100)  # no car charges yet: a stray meter value
    display.signal(Signal.CHARGING_STARTED)
    lcd.wait_for_text("Charging", "")
    display.show_charging(7200, 3100)
    lcd.wait_for_text("Charging 7.2 kW", "3.1 kWh")
    display.show_charging(11040, 12449)
    lcd.wait_for_text("Charging 11.0 kW", "12.4 kWh")


def test_a_moment_shows_for_its_time_then_the_resting_lines(lcd: FakeI2cLcd) -> None:
    display = display_on(lcd, time_scale=0.01)  # REJECTED holds 5 s: 50 ms here
    display.signal(Signal.CHARGING_STARTED)
    display.show_charging(7200, 3100)
    lcd.wait_for_text("Charging 7.2 kW", "3.1 kWh")
    display.signal(Signal.REJECTED, "Card unknown")
    lcd.wait_for_text("Card refused", "Card unknown")
    display.show_charging(7400, 3200)  # kept for when the message has had its time
    lcd.wait_for_text("Charging 7.4 kW", "3.2 kWh")
    display.signal(Signal.CHARGING_STOPPED, "3.2 kWh")
    lcd.wait_for_text("Charging stopped", "3.2 kWh")
    lcd.wait_for_text("Tap card", "to charge", within=1.0)
    display.close()
    assert lcd.errors == []


def test_close_clears_the_display_and_turns_the_backlight_off(
    display: DisplayFeedback, lcd: FakeI2cLcd
) -> None:
    display.signal(Signal.ACCEPTED)
    lcd.wait_for_text("Card OK", "Plug in the car")
    display.close()
    assert lcd.text == ("", "")
    assert not lcd.backlight
    assert lcd.closed
    display.signal(Signal.REJECTED)  # after close: nothing, and no error


def test_no_display_at_the_address_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    lcd = FakeI2cLcd(ADDRESS, answering=False)
    display = display_on(lcd, name="r7")
    assert lcd.wait_until(lambda lcd: lcd.refused == 1)  # the idle lines at start
    display.signal(Signal.ACCEPTED)
    assert lcd.wait_until(lambda lcd: lcd.refused == 2)
    display.signal(Signal.CHARGING_STARTED)
    assert lcd.wait_until(lambda lcd: lcd.refused == 3)
    display.close()
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert message.startswith("reader r7: no display at I2C bus 1 address 0x27: check wiring")
    assert "or `i2cdetect -y 1`" in message


def test_a_display_plugged_in_later_is_used(caplog: pytest.LogCaptureFixture) -> None:
    lcd = FakeI2cLcd(ADDRESS, answering=False)
    with caplog.at_level(logging.INFO):
        display = display_on(lcd)
        assert lcd.wait_until(lambda lcd: lcd.refused == 1)
        lcd.answering = True
        display.signal(Signal.ACCEPTED)
        lcd.wait_for_text("Card OK", "Plug in the car")
        display.close()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "no display" in messages[0]
    assert "answers again" in messages[1]


def test_a_missing_bus_says_how_to_enable_it(caplog: pytest.LogCaptureFixture) -> None:
    def no_bus(bus_number: int) -> I2cBus:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", f"/dev/i2c-{bus_number}")

    display = DisplayFeedback(3, ADDRESS, open_bus=no_bus, name="r2")
    display.signal(Signal.ACCEPTED)
    display.close()
    [record] = caplog.records
    assert "/dev/i2c-3 does not exist: enable I2C (raspi-config)" in record.getMessage()
