"""Pure parts of a reader's feedback: the pattern table, the resting state, the display's
lines and characters."""

from __future__ import annotations

import math

import pytest

from edge.feedback import Signal
from edge.feedback.gpio import PATTERNS, STEADY, Colour, Pattern, Pulses, pattern_seconds
from edge.feedback.lcd import fit_line, rom_text
from edge.feedback.messages import charging_lines, display_lines, energy_text, power_text
from edge.feedback.resting import MOMENTS, RestingState


def test_the_pattern_table_is_the_documented_one() -> None:
    assert dict(PATTERNS) == {
        Signal.ACCEPTED: Pattern(Colour.GREEN, Pulses(0.15, 0.15, 2), beeps=Pulses(0.1)),
        Signal.REJECTED: Pattern(Colour.RED, Pulses(2.0), beeps=Pulses(0.1, 0.1, 3)),
        Signal.CHARGING_STARTED: Pattern(Colour.GREEN, STEADY, relay=True),
        Signal.CHARGING_STOPPED: Pattern(None, beeps=Pulses(0.1, 0.1, 2), relay=False),
        Signal.ERROR: Pattern(Colour.RED, Pulses(0.1, 0.1, 10), beeps=Pulses(1.0)),
        Signal.READER_OFFLINE: Pattern(Colour.RED, Pulses(1.0, 1.0, None)),
        Signal.READER_ONLINE: Pattern(None),
    }


def test_moments_end_and_lit_resting_patterns_do_not() -> None:
    for signal in MOMENTS:
        assert 0 < pattern_seconds(PATTERNS[signal]) < math.inf, signal
    assert pattern_seconds(PATTERNS[Signal.CHARGING_STARTED]) == math.inf
    assert pattern_seconds(PATTERNS[Signal.READER_OFFLINE]) == math.inf
    assert pattern_seconds(PATTERNS[Signal.ACCEPTED]) == pytest.approx(0.6)
    assert pattern_seconds(PATTERNS[Signal.REJECTED]) == pytest.approx(2.0)
    assert pattern_seconds(PATTERNS[Signal.CHARGING_STOPPED]) == pytest.approx(0.4)


def test_resting_state_prefers_out_of_order_to_charging() -> None:
    state = RestingState()
    resting = [state.signal]
    for signal in [
        Signal.CHARGING_STARTED,
        Signal.REJECTED,
        Signal.READER_OFFLINE,
        Signal.READER_ONLINE,
        Signal.CHARGING_STOPPED,
    ]:
        state.note(signal)
        resting.append(state.signal)
    assert resting == [
        Signal.READER_ONLINE,
        Signal.CHARGING_STARTED,
        Signal.CHARGING_STARTED,
        Signal.READER_OFFLINE,
        Signal.CHARGING_STARTED,
        Signal.READER_ONLINE,
    ]


@pytest.mark.parametrize(
    ("signal", "detail", "lines"),
    [
        (Signal.ACCEPTED, "", ("Card OK", "Plug in the car")),
        (Signal.ACCEPTED, "Starting", ("Card OK", "Starting")),
        (Signal.REJECTED, "Card blocked", ("Card refused", "Card blocked")),
        (Signal.REJECTED, "", ("Card refused", "")),
        (Signal.CHARGING_STARTED, "", ("Charging", "")),
        (Signal.CHARGING_STOPPED, "12.4 kWh", ("Charging stopped", "12.4 kWh")),
        (Signal.ERROR, "Charger\n offline", ("Error", "Charger offline")),
        (Signal.ERROR, "", ("Error", "Please try again")),
        (Signal.READER_OFFLINE, "", ("Out of order", "Reader offline")),
        (Signal.READER_ONLINE, "", ("Tap card", "to charge")),
    ],
)
def test_display_lines(signal: Signal, detail: str, lines: tuple[str, str]) -> None:
    assert display_lines(signal, detail) == lines


def test_every_default_line_fits_sixteen_columns() -> None:
    for signal in Signal:
        assert all(len(line) <= 16 for line in display_lines(signal)), signal


def test_charging_lines() -> None:
    assert charging_lines(7200, 3100) == ("Charging 7.2 kW", "3.1 kWh")
    assert charging_lines(22000, 0) == ("Charging 22.0 kW", "0.0 kWh")
    assert charging_lines(150_000, 1_234_567) == ("Charging 150 kW", "1235 kWh")
    assert charging_lines(math.nan, -5) == ("Charging", "")
    assert charging_lines(-1.0, 12_449) == ("Charging", "12.4 kWh")
    assert max(len(line) for line in charging_lines(99_940, 999_940)) <= 16


def test_power_and_energy_texts_round_to_a_tenth() -> None:
    assert power_text(11_040) == "11.0 kW"
    assert power_text(99_960) == "100 kW"
    assert energy_text(12_449) == "12.4 kWh"
    assert energy_text(999_960) == "1000 kWh"


def test_rom_text_keeps_ascii_drops_accents_and_replaces_the_rest() -> None:
    assert rom_text("Tap card") == b"Tap card"
    assert rom_text("Crème brûlée") == b"Creme brulee"
    assert rom_text("a\\b~c€ß\t") == b"a?b?c???"


def test_fit_line_cuts_and_pads() -> None:
    assert fit_line("Charging stopped!", 16) == b"Charging stopped"
    assert fit_line("OK", 4) == b"OK  "
