"""The cost of a session: a flat price, time bands crossed at their edges and at
midnight, clock changes, the energy curve from meter samples, rounding once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cloud.tariffs import (
    Band,
    CurvePoint,
    Tariff,
    TariffError,
    format_cost,
    parse_clock,
    price_from_decimal,
    price_text,
    session_cost,
    session_curve,
    week_prices,
)

WEEKDAYS = frozenset(range(5))
EVERY_DAY = frozenset(range(7))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def cost(tariff: Tariff, start: str, stop: str, energy_wh: int, *samples: tuple[str, int]) -> int:
    points = [CurvePoint(at(moment), wh) for moment, wh in samples]
    return session_cost(tariff, session_curve(at(start), at(stop), energy_wh, points))


def test_a_flat_price_is_energy_times_price_rounded_half_up_once() -> None:
    tariff = Tariff(price=price_from_decimal(Decimal("0.2734")))
    # 10 kWh at 0.2734/kWh = 2.734 -> 273 cents
    assert cost(tariff, "2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z", 10_000) == 273
    # 10.5 kWh -> 2.8707 -> 287; 1 Wh -> 0.02734 cents -> 0
    assert cost(tariff, "2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z", 10_500) == 287
    assert cost(tariff, "2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z", 1) == 0
    # Exactly half a cent rounds up: 0.25 EUR/kWh x 18 Wh = 0.45 cents -> 0; x 20 Wh = 0.5 -> 1
    quarter = Tariff(price=250_000)
    assert cost(quarter, "2026-03-02T08:00:00Z", "2026-03-02T08:01:00Z", 20) == 1
    assert cost(quarter, "2026-03-02T08:00:00Z", "2026-03-02T08:01:00Z", 18) == 0
    # A currency without a minor unit
    yen = Tariff(price=price_from_decimal(Decimal("31")), minor_unit_digits=0, currency="JPY")
    assert cost(yen, "2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z", 10_000) == 310


def test_a_session_crossing_a_band_edge_splits_its_energy_by_time() -> None:
    # Weekdays 07:00-22:00 cost 0.40, the rest 0.20 (UTC).
    peak = Band(WEEKDAYS, parse_clock("07:00"), parse_clock("22:00"), 400_000)
    tariff = Tariff(price=200_000, bands=(peak,))
    # Monday 21:00 to 23:00, 20 kWh evenly: 10 kWh at 0.40 + 10 kWh at 0.20 = 6.00
    assert cost(tariff, "2026-03-02T21:00:00Z", "2026-03-02T23:00:00Z", 20_000) == 600
    # The same energy all before the edge (the samples say so): 20 kWh at 0.40 = 8.00
    assert (
        cost(
            tariff,
            "2026-03-02T21:00:00Z",
            "2026-03-02T23:00:00Z",
            20_000,
            ("2026-03-02T21:59:00Z", 20_000),
        )
        == 800
    )


def test_a_session_over_midnight_and_into_the_weekend_takes_each_days_bands() -> None:
    # Night band 22:00-06:00 every day at 0.10; Saturday daytime at 0.30; else 0.25.
    night = Band(EVERY_DAY, parse_clock("22:00"), parse_clock("06:00"), 100_000)
    saturday = Band(frozenset({5}), parse_clock("06:00"), parse_clock("22:00"), 300_000)
    tariff = Tariff(price=250_000, bands=(night, saturday))
    # Friday 2026-03-06 20:00 to Saturday 08:00, 12 kWh evenly (1 kWh an hour):
    # 2 h at 0.25 (Friday day), 8 h at 0.10 (night over midnight), 2 h at 0.30 (Saturday).
    expected = 2 * 25 + 8 * 10 + 2 * 30
    assert cost(tariff, "2026-03-06T20:00:00Z", "2026-03-07T08:00:00Z", 12_000) == expected


def test_bands_follow_the_tariffs_time_zone_across_a_clock_change() -> None:
    night = Band(EVERY_DAY, parse_clock("00:00"), parse_clock("06:00"), 100_000)
    tariff = Tariff(price=300_000, bands=(night,), time_zone="Europe/Berlin")
    # 2026-03-29: Berlin goes from +01:00 to +02:00 at 02:00 local. Local 00:00-06:00 is
    # 2026-03-28T23:00Z to 2026-03-29T04:00Z: 5 hours, not 6.
    # 22:00Z to 06:00Z, 8 kWh evenly: 1 h before (0.30), 5 h night (0.10), 2 h after (0.30).
    assert cost(tariff, "2026-03-28T22:00:00Z", "2026-03-29T06:00:00Z", 8_000) == 30 + 50 + 60


def test_the_curve_rises_only_and_ends_at_the_sessions_total() -> None:
    start, stop = at("2026-03-02T10:00:00Z"), at("2026-03-02T12:00:00Z")
    samples = [
        CurvePoint(at("2026-03-02T11:00:00Z"), 3000),
        CurvePoint(at("2026-03-02T10:30:00Z"), 1000),  # out of order: sorted by time
        CurvePoint(at("2026-03-02T11:30:00Z"), 2000),  # the meter went back: held at 3000
        CurvePoint(at("2026-03-02T13:00:00Z"), 9000),  # after the stop: left out
    ]
    curve = session_curve(start, stop, 5000, samples)
    assert [(point.at.hour, point.at.minute, point.energy_wh) for point in curve] == [
        (10, 0, 0),
        (10, 30, 1000),
        (11, 0, 3000),
        (11, 30, 3000),
        (12, 0, 5000),
    ]
    # A sample above the total is capped: the cost is of exactly the session's energy.
    capped = session_curve(start, stop, 5000, [CurvePoint(at("2026-03-02T11:00:00Z"), 8000)])
    assert [point.energy_wh for point in capped] == [0, 5000, 5000]
    assert session_cost(Tariff(price=1_000_000), capped) == 500  # 5 kWh at 1.00
    # A start never heard of: the curve starts at the first point known.
    no_start = session_curve(None, stop, 5000, [CurvePoint(at("2026-03-02T11:00:00Z"), 1000)])
    assert no_start[0] == CurvePoint(at("2026-03-02T11:00:00Z"), 0)


def test_energy_at_one_instant_is_priced_at_that_instant() -> None:
    peak = Band(WEEKDAYS, parse_clock("07:00"), parse_clock("22:00"), 400_000)
    tariff = Tariff(price=200_000, bands=(peak,))
    # Start and stop at the same time (or a stop before its start: a clock that jumped).
    assert cost(tariff, "2026-03-02T12:00:00Z", "2026-03-02T12:00:00Z", 1000) == 40
    assert cost(tariff, "2026-03-02T12:00:00Z", "2026-03-02T11:00:00Z", 1000) == 40
    # A span of centuries is not cut into days: priced at its end.
    assert cost(tariff, "1970-01-01T00:00:00Z", "2026-03-02T23:00:00Z", 1000) == 20


def test_overlapping_or_malformed_bands_are_refused_with_where() -> None:
    night = Band(EVERY_DAY, parse_clock("22:00"), parse_clock("06:00"), 1)
    morning = Band(frozenset({2}), parse_clock("05:00"), parse_clock("09:00"), 2)
    with pytest.raises(TariffError, match="bands 1 and 2 overlap on wed at 05:00"):
        week_prices(0, [night, morning])
    with pytest.raises(TariffError, match="same time"):
        week_prices(0, [Band(EVERY_DAY, 60, 60, 1)])
    with pytest.raises(TariffError, match="days are 0"):
        week_prices(0, [Band(frozenset({7}), 0, 60, 1)])
    # A band to 24:00 and one from 00:00 the next day touch but do not overlap.
    week_prices(0, [Band(frozenset({0}), 1200, 1440, 1), Band(frozenset({1}), 0, 60, 2)])
    with pytest.raises(TariffError, match="not a time zone"):
        Tariff(price=1, time_zone="Mars/Olympus")
    with pytest.raises(TariffError, match="HH:MM"):
        parse_clock("7pm")
    with pytest.raises(TariffError, match="00:00 to 24:00"):
        parse_clock("24:30")
    with pytest.raises(TariffError, match="at most 6 decimals"):
        price_from_decimal(Decimal("0.1234567"))


def test_costs_and_prices_are_shown_in_the_major_unit() -> None:
    assert format_cost(1234, 2) == "12.34"
    assert format_cost(5, 2) == "0.05"
    assert format_cost(310, 0) == "310"
    assert format_cost(7, 3) == "0.007"
    assert [price_text(price) for price in (273_400, 100_000_000, 5, 0)] == [
        "0.2734",
        "100",
        "0.000005",
        "0",
    ]


def test_a_week_sampled_each_minute_prices_each_minute_by_its_band() -> None:
    night = Band(EVERY_DAY, parse_clock("22:00"), parse_clock("06:00"), 100_000)
    tariff = Tariff(price=300_000, bands=(night,), time_zone="Europe/Berlin")
    start = at("2026-03-02T00:00:00Z")
    samples = [
        CurvePoint(start + timedelta(minutes=minute), minute * 10) for minute in range(10_080)
    ]
    curve = session_curve(start, start + timedelta(days=7), 100_800, samples)
    # Each minute's 10 Wh is priced by the band it lies in: 7 x 8 h of night.
    night_wh = 7 * 8 * 60 * 10
    day_wh = 100_800 - night_wh
    assert session_cost(tariff, curve) == round((night_wh * 10 + day_wh * 30) / 1000)
