"""UTC time in the one text form the store uses: 2026-01-31T12:00:00.000Z."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def format_utc(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def utc_now_text() -> str:
    """Now, as the store writes it (text; the cloud's `utc_now` returns a datetime)."""
    return format_utc(datetime.now(UTC))


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
    """A charger's timestamp in the store's form (UTC, milliseconds, Z)."""
    return format_utc(parse_timestamp(text))
