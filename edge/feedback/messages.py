"""What a reader's display says for each signal and while charging: two short lines,
written to fit a 16-column display (longer details are cut by the display)."""

from __future__ import annotations

import math

from edge.feedback import Signal

# First line, and the second line shown when the signal comes without a detail.
_LINES: dict[Signal, tuple[str, str]] = {
    Signal.ACCEPTED: ("Card OK", "Plug in the car"),
    Signal.REJECTED: ("Card refused", ""),
    Signal.CHARGING_STARTED: ("Charging", ""),
    Signal.CHARGING_STOPPED: ("Charging stopped", ""),
    Signal.ERROR: ("Error", "Please try again"),
    Signal.READER_OFFLINE: ("Out of order", "Reader offline"),
    Signal.READER_ONLINE: ("Tap card", "to charge"),
}


def display_lines(signal: Signal, detail: str = "") -> tuple[str, str]:
    """The two lines for `signal`; a detail ("Card blocked", "12.4 kWh") replaces the
    second line's default."""
    first, default = _LINES[signal]
    detail = " ".join(detail.split())  # one line: no newlines or runs of spaces
    return first, detail or default


def power_text(power_w: float) -> str:
    """'7.2 kW'; whole kilowatts from 100 kW so that the line stays short."""
    kilowatts = power_w / 1000
    return f"{kilowatts:.0f} kW" if kilowatts >= 99.95 else f"{kilowatts:.1f} kW"


def energy_text(energy_wh: int) -> str:
    """'12.4 kWh'; whole kilowatt-hours from 1000 kWh."""
    kilowatt_hours = energy_wh / 1000
    if kilowatt_hours >= 999.95:
        return f"{kilowatt_hours:.0f} kWh"
    return f"{kilowatt_hours:.1f} kWh"


def charging_lines(power_w: float, energy_wh: int) -> tuple[str, str]:
    """('Charging 7.2 kW', '3.1 kWh'). A value a meter cannot have (negative, not a
    number) is left out rather than shown."""
    first = "Charging"
    if math.isfinite(power_w) and power_w >= 0:
        first = f"Charging {power_text(power_w)}"
    second = energy_text(energy_wh) if energy_wh >= 0 else ""
    return first, second
