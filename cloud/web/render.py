"""Templates and the filters they use: times as ISO text in UTC with a relative hint,
durations and sizes in words a person reads at a glance."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.templating import Jinja2Templates

from cloud.tariffs import DAY_NAMES, Band, format_clock, price_text

TEMPLATES = Path(__file__).parent / "templates"
# What an unknown time, duration or size is shown as (an en dash).
UNKNOWN = "\u2013"


def iso(moment: datetime | None) -> str:
    """2026-01-02 03:04:05Z (UTC, to the second); a dash when unknown."""
    if moment is None:
        return UNKNOWN
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(seconds: float | None) -> str:
    """45 s, 12 min, 3 h 5 min, 4 d 2 h."""
    if seconds is None:
        return UNKNOWN
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours, minutes = divmod(int(minutes), 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    delta = (now - moment).total_seconds()
    if -5 < delta < 5:
        return "now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(-delta)}"


def megabytes(value: float | None) -> str:
    if value is None:
        return UNKNOWN
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


def segment(text: str) -> str:
    """Text as one segment of a URL's path: a charger id holding '/' or '?' stays one."""
    return quote(text, safe="")


def price(value: int) -> str:
    """A price kept in millionths of the major unit (273_400) as "0.2734"."""
    return price_text(value)


def band_days(band: Band) -> str:
    """A band's days as "mon-fri", "sat, sun" or "every day"."""
    days = sorted(band.days)
    if len(days) == 7:
        return "every day"
    if len(days) > 2 and days == list(range(days[0], days[-1] + 1)):
        return f"{DAY_NAMES[days[0]]}-{DAY_NAMES[days[-1]]}"
    return ", ".join(DAY_NAMES[day] for day in days)


def make_templates() -> Jinja2Templates:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(iso=iso, duration=duration, megabytes=megabytes, segment=segment)
    environment.globals.update(ago=ago, price=price, band_days=band_days, clock=format_clock)
    return Jinja2Templates(env=environment)
