"""Key events from a keyboard-wedge reader decoded into the text typed before Enter."""

from __future__ import annotations

import pytest
from evdev import InputEvent, ecodes

from edge.readers.keyboard import KeyDecoder
from tests.doubles.input_device import key_event, key_presses


def decode(events: list[InputEvent], decoder: KeyDecoder | None = None) -> list[str]:
    decoder = decoder or KeyDecoder()
    return [text for event in events if (text := decoder.feed(event)) is not None]


def test_top_row_digits_then_enter() -> None:
    assert decode(key_presses("0011189196")) == ["0011189196"]


def test_keypad_digits_then_keypad_enter() -> None:
    events = key_presses("0011189196", keypad=True)
    assert ecodes.KEY_KPENTER in {event.code for event in events}
    assert decode(events) == ["0011189196"]


def test_hex_letters_keep_their_case() -> None:
    assert decode(key_presses("04a2B3c4") + key_presses("DEADBEEF")) == ["04a2B3c4", "DEADBEEF"]


def test_right_shift_counts_and_shift_released_ends_capitals() -> None:
    shift = ecodes.KEY_RIGHTSHIFT
    events = [
        key_event(shift, 1),
        key_event(ecodes.KEY_A, 1),
        key_event(shift, 2),  # auto-repeat of the held Shift
        key_event(ecodes.KEY_B, 1),
        key_event(shift, 0),
        key_event(ecodes.KEY_C, 1),
        key_event(ecodes.KEY_ENTER, 1),
    ]
    assert decode(events) == ["ABc"]


def test_shifted_digits_stay_digits() -> None:
    # What a reader set up for an AZERTY host sends.
    shift = ecodes.KEY_LEFTSHIFT
    events = [key_event(shift, 1)]
    for digit in "0042":
        code = ecodes.ecodes[f"KEY_{digit}"]
        events += [key_event(code, 1), key_event(code, 0)]
    events += [key_event(shift, 0), key_event(ecodes.KEY_ENTER, 1)]
    assert decode(events) == ["0042"]


def test_other_keys_are_ignored() -> None:
    events = [
        key_event(code, 1)
        for code in (ecodes.KEY_0, ecodes.KEY_G, ecodes.KEY_MINUS, ecodes.KEY_SPACE, ecodes.KEY_4)
    ]
    assert decode([*events, key_event(ecodes.KEY_ENTER, 1)]) == ["04"]


def test_key_releases_repeats_and_other_events_add_nothing() -> None:
    events = [
        key_event(ecodes.KEY_1, 1),
        key_event(ecodes.KEY_1, 2),
        key_event(ecodes.KEY_1, 0),
        InputEvent(0, 0, ecodes.EV_MSC, ecodes.MSC_SCAN, ecodes.KEY_2),
        InputEvent(0, 0, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
        key_event(ecodes.KEY_ENTER, 0),
        key_event(ecodes.KEY_ENTER, 1),
    ]
    assert decode(events) == ["1"]


def test_enter_alone_gives_nothing() -> None:
    assert decode(key_presses("") + key_presses("12")) == ["12"]


def test_a_long_run_without_enter_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    decoder = KeyDecoder(longest=8)
    assert decode(key_presses("12345678"), decoder) == ["12345678"]
    assert decode(key_presses("123456789") + key_presses("42"), decoder) == ["42"]
    assert "8 keys without Enter" in caplog.text
