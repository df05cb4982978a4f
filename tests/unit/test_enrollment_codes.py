"""Enrollment codes as people type them, durations as operators write them, and the
window that throttles wrong codes per address."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from cloud.enrollment import FailedAttempts, code_digest, new_code, normalize_code, parse_duration


def test_a_code_is_120_random_bits_in_six_groups_of_four() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        groups = code.split("-")
        assert [len(group) for group in groups] == [4] * 6
        assert len(base64.b32decode("".join(groups))) * 8 == 120


def test_case_spaces_and_dashes_do_not_matter_and_other_letters_do() -> None:
    code = new_code()
    typed = "  " + code.lower().replace("-", " ") + "\n"
    assert normalize_code(typed) == code.replace("-", "")
    assert code_digest(normalize_code(typed) or "") == code_digest(code.replace("-", ""))
    assert normalize_code(code.replace(code[0], "0", 1)) is None  # 0, 1, 8, 9: not base32
    assert normalize_code(code[:-1]) is None
    assert normalize_code("") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("30m", timedelta(minutes=30)),
        ("7d", timedelta(days=7)),
        ("90s", timedelta(seconds=90)),
        ("3600", timedelta(hours=1)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "h", "-1h", "24 hours"])
def test_what_is_not_a_duration_says_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match=r"write e\.g\. 30m, 24h or 7d"):
        parse_duration(text)


def test_failures_turn_an_address_away_until_the_window_has_passed() -> None:
    now = [1000.0]
    attempts = FailedAttempts(limit=3, window_s=60.0, clock=lambda: now[0])
    for _ in range(2):
        attempts.record("10.0.0.1")
        now[0] += 10
    assert attempts.retry_after("10.0.0.1") == 0.0
    attempts.record("10.0.0.1")  # the third, at 1020
    assert attempts.retry_after("10.0.0.1") == pytest.approx(40.0)  # the first leaves at 1060
    assert attempts.retry_after("10.0.0.2") == 0.0  # another address is not concerned
    now[0] = 1060.0
    assert attempts.retry_after("10.0.0.1") == 0.0  # two left in the window
    attempts.record("10.0.0.1")
    assert attempts.retry_after("10.0.0.1") == pytest.approx(10.0)
    now[0] = 2000.0
    assert attempts.retry_after("10.0.0.1") == 0.0
