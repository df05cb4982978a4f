"""The store's one text form of time, and its shortcuts for the hot path."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from edge.clock import format_utc, normalize_timestamp, parse_timestamp, utc_now_text


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2026-12-04T15:37:34.676Z", "2026-12-04T15:37:34.676Z"),  # the store's form: kept
        ("2026-12-04T15:37:34Z", "2026-12-04T15:37:34.000Z"),
        ("2026-12-04T15:37:34.1234567Z", "2026-12-04T15:37:34.123Z"),
        ("2026-12-04T17:37:34.5+02:00", "2026-12-04T15:37:34.500Z"),
        ("2026-12-04T15:37:34.676z", "2026-12-04T15:37:34.676Z"),
        ("2026-12-04T15:37:34", "2026-12-04T15:37:34.000Z"),  # no offset: UTC
    ],
)
def test_a_chargers_timestamp_is_stored_in_one_form(sent: str, stored: str) -> None:
    assert normalize_timestamp(sent) == stored


@pytest.mark.parametrize(
    "sent",
    [
        "2026-13-04T15:37:34.676Z",  # the store's shape, but no such month
        "2026-02-30T15:37:34.676Z",  # nor such a day
        "2026-12-04T24:00:00.000Z",
        "\u0662\u0660\u0662\u0666-12-04T15:37:34.676Z",  # digits, but not ASCII ones
        "yesterday",
    ],
)
def test_a_timestamp_that_is_no_time_is_refused(sent: str) -> None:
    with pytest.raises(ValueError):
        normalize_timestamp(sent)


def test_now_is_the_store_form_of_the_present_moment() -> None:
    for _ in range(3):  # the first call of a second formats it; the next ones reuse it
        before = datetime.now(UTC) - timedelta(milliseconds=1)
        text = utc_now_text()
        after = datetime.now(UTC)
        assert format_utc(parse_timestamp(text)) == text
        assert before <= parse_timestamp(text) <= after


def test_now_moves_on_to_the_next_second(monkeypatch: pytest.MonkeyPatch) -> None:
    moments = iter([1_780_000_000_999_000_000, 1_780_000_001_002_000_000])
    monkeypatch.setattr(time, "time_ns", lambda: next(moments))
    second = datetime.fromtimestamp(1_780_000_000, UTC)
    assert utc_now_text() == format_utc(second + timedelta(milliseconds=999))
    assert utc_now_text() == format_utc(second + timedelta(seconds=1, milliseconds=2))
