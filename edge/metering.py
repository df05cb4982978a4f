"""Turning OCPP 1.6 sampled values into numbers in one unit per quantity.

Chargers report energy in Wh or kWh, power in W or kW, temperature in Celsius,
Fahrenheit or K. The store keeps what the charger said and, beside it, the value
in the base unit; energy also as integer Wh, the unit money is computed from.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

# OCPP 1.6 section 7.45 (SampledValue) defaults for absent fields.
DEFAULT_MEASURAND = "Energy.Active.Import.Register"
DEFAULT_CONTEXT = "Sample.Periodic"
DEFAULT_FORMAT = "Raw"
DEFAULT_UNIT = "Wh"

# unit -> (base unit, factor); temperatures are converted separately.
_SCALE = {
    "Wh": ("Wh", 1.0),
    "kWh": ("Wh", 1000.0),
    "varh": ("varh", 1.0),
    "kvarh": ("varh", 1000.0),
    "W": ("W", 1.0),
    "kW": ("W", 1000.0),
    "VA": ("VA", 1.0),
    "kVA": ("VA", 1000.0),
    "var": ("var", 1.0),
    "kvar": ("var", 1000.0),
    "A": ("A", 1.0),
    "V": ("V", 1.0),
    "Percent": ("Percent", 1.0),
    "Celsius": ("Celsius", 1.0),
}


class SampledValue(NamedTuple):
    """One sampled value as stored. A tuple, not a frozen dataclass: two or more are
    made for every MeterValues, and a frozen dataclass takes three times as long to build.
    Its fields are named and ordered as the store's columns (edge/store/meter_values.py)."""

    measurand: str
    phase: str | None
    unit: str
    context: str
    location: str | None
    format: str
    value: str
    normalized: float | None
    wh: int | None

    @property
    def is_energy_register(self) -> bool:
        return self.measurand == "Energy.Active.Import.Register" and self.wh is not None


def to_base_unit(number: float, unit: str) -> float | None:
    if unit == "Fahrenheit":
        return (number - 32.0) * 5.0 / 9.0
    if unit == "K":
        return number - 273.15
    scale = _SCALE.get(unit)
    return number * scale[1] if scale else None


def normalize_sampled_value(sampled: dict[str, Any]) -> SampledValue:
    """A SampledValue object as sent on the wire, with OCPP's defaults filled in."""
    value = str(sampled["value"])
    measurand = sampled.get("measurand") or DEFAULT_MEASURAND
    unit = sampled.get("unit") or DEFAULT_UNIT
    value_format = sampled.get("format") or DEFAULT_FORMAT
    normalized = None
    if value_format == "Raw":
        try:
            normalized = to_base_unit(float(value), unit)
        except ValueError:
            normalized = None
    # "inf", "nan" or 1e400 are not readings; an energy beyond 64 bits cannot be stored.
    if normalized is not None and not (math.isfinite(normalized) and abs(normalized) < 2**62):
        normalized = None
    wh = None
    if normalized is not None and measurand.startswith("Energy.Active") and unit in ("Wh", "kWh"):
        wh = round(normalized)
    # Positional, in field order: keywords would make building it twice as slow.
    return SampledValue(
        measurand,
        sampled.get("phase"),
        unit,
        sampled.get("context") or DEFAULT_CONTEXT,
        sampled.get("location"),
        value_format,
        value,
        normalized,
        wh,
    )


def energy_register_wh(values: list[SampledValue]) -> int | None:
    """The meter's cumulative import register in Wh among `values`, if reported."""
    for sampled in values:
        if sampled.is_energy_register and sampled.phase is None:
            return sampled.wh
    return None


def active_power_w(values: list[SampledValue]) -> float | None:
    """The total active import power in W among `values`, if reported."""
    for sampled in values:
        if sampled.measurand == "Power.Active.Import" and sampled.phase is None:
            return sampled.normalized
    return None
