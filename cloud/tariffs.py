"""What a charging session costs: a price per kWh, optionally another in time bands
(weekdays and hours, in the tariff's time zone), applied to the session's energy curve.

Plain functions on plain data, no I/O. Prices are integers in millionths of the
currency's major unit per kWh (0.2734 EUR/kWh is 273_400); costs are integers in the
currency's minor unit (cents for EUR), rounded half up once, after the exact sum.

The energy of a session is spread over time as its curve says: the energy meter
reported at its start (0 Wh), at each meter sample the edge sent (about once a
minute), and at its stop; between two points the energy is taken as delivered at an
even rate. A band edge between two points splits their energy by the time on each
side. Energy that goes down between points (a meter that reset) counts as none, and the
curve never rises above the session's total: the cost is always of exactly the energy
the session reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import cached_property
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Prices are kept in millionths of the major unit per kWh.
PRICE_DIGITS = 6
PRICE_SCALE: int = 10**PRICE_DIGITS
# Minor units per major unit, by the currency's number of minor-unit digits (0 to 4).
MINOR_UNITS = (1, 10, 100, 1000, 10_000)
# Two curve points further apart than this are not split at band edges (a session of
# more than a year is a clock that jumped): their energy is priced at the later point.
MAX_SPLIT_SPAN = timedelta(days=400)


class TariffError(ValueError):
    """A tariff that cannot be used as given; the message says why."""


@dataclass(frozen=True)
class Band:
    """A price for part of the week: from `start_minute` to `end_minute` (minutes of the
    local day) on each day in `days` (0 Monday ... 6 Sunday). An end at or before the
    start runs over midnight into the next day; 1440 is midnight at the day's end."""

    days: frozenset[int]
    start_minute: int
    end_minute: int
    price: int  # millionths of the major unit per kWh

    def minutes_of_week(self) -> Iterable[int]:
        """Every minute of the week (0: Monday 00:00, local) the band covers."""
        length = (self.end_minute - self.start_minute) % MINUTES_PER_DAY or MINUTES_PER_DAY
        for day in sorted(self.days):
            first = day * MINUTES_PER_DAY + self.start_minute
            for minute in range(first, first + length):
                yield minute % MINUTES_PER_WEEK


@dataclass(frozen=True)
class Tariff:
    """`price` outside every band; `bands` never overlap (check with `week_prices`)."""

    price: int
    bands: tuple[Band, ...] = ()
    time_zone: str = "UTC"
    minor_unit_digits: int = 2  # 2: cents; 0 for a currency without a minor unit
    currency: str = "EUR"
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", zone_named(self.time_zone))
        if self.price < 0 or any(band.price < 0 for band in self.bands):
            raise TariffError("a price cannot be negative")
        if not 0 <= self.minor_unit_digits <= 4:
            raise TariffError("minor_unit_digits is 0 to 4")

    @cached_property
    def week(self) -> tuple[int, ...]:
        return week_prices(self.price, self.bands)

    @cached_property
    def edge_minutes(self) -> tuple[int, ...]:
        """The minutes of the day at which a price may change (midnight too: the day's
        bands differ)."""
        edges = {0}
        for band in self.bands:
            edges.add(band.start_minute % MINUTES_PER_DAY)
            edges.add(band.end_minute % MINUTES_PER_DAY)
        return tuple(sorted(edges))

    def price_at(self, moment: datetime) -> int:
        if not self.bands:
            return self.price
        try:
            local = moment.astimezone(self.zone)
        except (OverflowError, ValueError):  # a time at the calendar's very end
            return self.price
        minute = local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute
        return self.week[minute]


def zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise TariffError(f"{name!r} is not a time zone (e.g. Europe/Berlin, UTC)") from error


def week_prices(price: int, bands: Sequence[Band]) -> tuple[int, ...]:
    """The price of every minute of the week; TariffError when bands overlap."""
    week = [price] * MINUTES_PER_WEEK
    owner: list[int | None] = [None] * MINUTES_PER_WEEK
    for index, band in enumerate(bands):
        if not band.days or not band.days <= set(range(7)):
            raise TariffError(f"band {index + 1}: days are 0 (Monday) to 6 (Sunday), at least one")
        if not (0 <= band.start_minute < MINUTES_PER_DAY and 0 < band.end_minute <= 1440):
            raise TariffError(f"band {index + 1}: start is 00:00 to 23:59, end 00:01 to 24:00")
        if band.start_minute == band.end_minute:
            raise TariffError(f"band {index + 1}: start and end are the same time")
        for minute in band.minutes_of_week():
            if owner[minute] is not None:
                raise TariffError(
                    f"bands {owner[minute]} and {index + 1} overlap on "
                    f"{DAY_NAMES[minute // MINUTES_PER_DAY]} at {_clock(minute % 1440)}"
                )
            owner[minute] = index + 1
            week[minute] = band.price
    return tuple(week)


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def parse_clock(text: str) -> int:
    """ "HH:MM" (00:00 to 24:00) as minutes of the day."""
    hours, colon, minutes = text.partition(":")
    if not (colon and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise TariffError(f"{text!r} is not a time of day: HH:MM, e.g. 22:00")
    minute = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or minute > MINUTES_PER_DAY:
        raise TariffError(f"{text!r} is not a time of day: 00:00 to 24:00")
    return minute


def format_clock(minute: int) -> str:
    return _clock(minute)


def price_from_decimal(value: Decimal) -> int:
    """A price per kWh in the major unit (0.2734) as the integer kept (273_400)."""
    scaled = value * PRICE_SCALE
    if value < 0 or scaled != scaled.to_integral_value():
        raise TariffError(f"{value} per kWh: at most {PRICE_DIGITS} decimals, not negative")
    return int(scaled)


def price_text(price: int) -> str:
    """The integer kept (273_400) as the price per kWh in the major unit ("0.2734")."""
    whole, part = divmod(price, PRICE_SCALE)
    return f"{whole}.{part:0{PRICE_DIGITS}d}".rstrip("0").rstrip(".")


def format_cost(cost_minor: int, minor_unit_digits: int) -> str:
    """1234 cents as "12.34"."""
    if minor_unit_digits == 0:
        return str(cost_minor)
    sign = "-" if cost_minor < 0 else ""
    whole, part = divmod(abs(cost_minor), 10**minor_unit_digits)
    return f"{sign}{whole}.{part:0{minor_unit_digits}d}"


# -- the energy curve and its cost ---------------------------------------------------


@dataclass(frozen=True)
class CurvePoint:
    at: datetime
    energy_wh: int  # delivered since the session started


def session_curve(
    started_at: datetime | None,
    stopped_at: datetime | None,
    energy_wh: int,
    samples: Iterable[CurvePoint],
) -> list[CurvePoint]:
    """The session's energy over time, from 0 at its start to `energy_wh` at its stop:
    the samples in time order (clamped into the session), rising only, never above the
    total. A start the cloud never heard of is taken as the first point known."""
    total = max(energy_wh, 0)
    points = sorted(samples, key=lambda point: point.at)
    if started_at is not None:
        points = [point for point in points if point.at >= started_at]
    if stopped_at is not None:
        points = [point for point in points if point.at <= stopped_at]
    first = started_at or (points[0].at if points else stopped_at)
    if first is None:
        return []
    curve = [CurvePoint(first, 0)]
    highest = 0
    for point in points:
        highest = min(max(highest, point.energy_wh), total)
        curve.append(CurvePoint(point.at, highest))
    curve.append(CurvePoint(stopped_at or curve[-1].at, total))
    return curve


def session_cost(tariff: Tariff, curve: Sequence[CurvePoint]) -> int:
    """The cost of the energy along `curve` (from session_curve), in minor units."""
    # Whole products are summed as integers (most stretches lie in one band), split ones
    # as exact fractions: rounding happens once, at the end.
    whole_sum, split_sum = 0, Fraction(0)
    edges: list[datetime] = []
    if tariff.bands and len(curve) > 1 and curve[-1].at - curve[0].at <= MAX_SPLIT_SPAN:
        edges = _price_edges(tariff, curve[0].at, curve[-1].at)
    next_edge = 0
    for before, after in pairwise(curve):
        while next_edge < len(edges) and edges[next_edge] <= before.at:
            next_edge += 1
        delivered = after.energy_wh - before.energy_wh
        if delivered <= 0:
            continue
        if not tariff.bands:
            whole_sum += delivered * tariff.price
            continue
        if after.at <= before.at or after.at - before.at > MAX_SPLIT_SPAN:
            whole_sum += delivered * tariff.price_at(after.at)
            continue
        cuts = [before.at]
        index = next_edge
        while index < len(edges) and edges[index] < after.at:
            cuts.append(edges[index])
            index += 1
        cuts.append(after.at)
        if len(cuts) == 2:
            whole_sum += delivered * tariff.price_at(before.at + (after.at - before.at) / 2)
        else:
            split_sum += _priced(tariff, cuts, delivered)
    # Wh x millionths of the major unit per kWh -> minor units, half up (never negative).
    divisor, minor_units = 1000 * PRICE_SCALE, MINOR_UNITS[tariff.minor_unit_digits]
    if not split_sum:  # integers only: most sessions
        return (2 * whole_sum * minor_units + divisor) // (2 * divisor)
    minor = (whole_sum + split_sum) * minor_units / divisor
    return int(minor + Fraction(1, 2))


def _priced(tariff: Tariff, cuts: Sequence[datetime], delivered: int) -> Fraction:
    """`delivered` Wh at an even rate from the first cut to the last, times the price of
    each stretch between cuts (Wh x millionths per kWh)."""
    whole = _microseconds(cuts[-1] - cuts[0])
    total = Fraction(0)
    for first, last in pairwise(cuts):
        middle = first + (last - first) / 2
        total += Fraction(delivered * _microseconds(last - first), whole) * tariff.price_at(middle)
    return total


def _price_edges(tariff: Tariff, start: datetime, end: datetime) -> list[datetime]:
    """The instants strictly between `start` and `end` where the price may change: each
    band edge of each local day, as UTC (a day of a clock change has its own offsets)."""
    zone = tariff.zone
    try:
        first_day = start.astimezone(zone).date() - timedelta(days=1)
        last_day = end.astimezone(zone).date() + timedelta(days=1)
    except (OverflowError, ValueError):
        return []
    edges: set[datetime] = set()
    day: date = first_day
    while day <= last_day:
        for minute in tariff.edge_minutes:
            local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
            moment = local.astimezone(UTC)
            if start < moment < end:
                edges.add(moment)
        day += timedelta(days=1)
    return sorted(edges)


def _microseconds(span: timedelta) -> int:
    return span // timedelta(microseconds=1)
