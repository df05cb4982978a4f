"""UTC time in the one text form the store uses: 2026-01-31T12:00:00.000Z."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

# The store's own form; a charger's timestamp already in it is kept as sent.
_STORE_FORM = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")

# (whole second since the epoch, its text up to the seconds): every MeterValues asks
# for now, and formatting a datetime is most of that call's cost.
_current_second: tuple[int, str] = (-1, "")


def format_utc(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def utc_now_text() -> str:
    """Now, as the store writes it (text; the cloud's `utc_now` returns a datetime)."""
    global _current_second
    second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    known_second, text = _current_second
    if second != known_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _current_second = (second, text)
    return f"{text}.{nanoseconds // 1_000_000:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_timestamp(text: str) -> datetime:
    """A charger's timestamp as an aware datetime; one without an offset is taken as UTC.

    Raises ValueError for text that is not ISO-8601.
    """
    moment = datetime.fromisoformat(text.replace("z", "Z"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def normalize_timestamp(text: str) -> str:
    """A charger's timestamp in the store's form (UTC, milliseconds, Z).

    Raises ValueError for text that is not ISO-8601.
    """
    if _STORE_FORM.fullmatch(text):
        datetime.fromisoformat(text)  # the shape is right; are the date and time real?
        return text
    return format_utc(parse_timestamp(text))
