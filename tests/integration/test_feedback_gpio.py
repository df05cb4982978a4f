"""The lights, buzzer and relay on gpiozero's MockFactory pins: each signal's pattern at
its real timings, going back to rest, replacing a pattern, RGB and active-low wiring."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from edge.feedback import Signal
from edge.feedback.gpio import GpioFeedback
from edge.settings import FeedbackSettings

GREEN, RED, BUZZER, RELAY = 17, 27, 22, 23
WIRED = FeedbackSettings(green_led=GREEN, red_led=RED, buzzer=BUZZER, relay=RELAY)
Timeline = list[tuple[float, bool]]


def until(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Wait for gpiozero's threads (no event to await across that boundary)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


# A thread that wakes late makes an interval longer, never shorter: the bound below is
# tight (a pattern played too fast fails) and the bound above leaves room for a busy
# machine's scheduling (gpiozero's own check, 50 ms either way, fails under load).
EARLY_BY_AT_MOST = 0.02
LATE_BY_AT_MOST = 0.25


def assert_timeline(pin: MockPin, expected: Timeline) -> None:
    """Every change, each the expected time after the previous one."""
    actual = [(round(at, 3), state) for at, state in pin.states]
    assert [state for _, state in actual] == [state for _, state in expected], actual
    for (took, _), (planned, _) in zip(actual, expected, strict=True):
        assert planned - EARLY_BY_AT_MOST <= took <= planned + LATE_BY_AT_MOST, (actual, expected)


def pins(factory: MockFactory) -> tuple[MockPin, MockPin, MockPin, MockPin]:
    return factory.pin(GREEN), factory.pin(RED), factory.pin(BUZZER), factory.pin(RELAY)


def clear(factory: MockFactory) -> None:
    for pin in pins(factory):
        pin.clear_states()


# Each signal at its real timings, all played at once so the whole table takes ~2 s.
OFF: Timeline = [(0.0, False)]
PLAYED_AFTER = {Signal.CHARGING_STOPPED: Signal.CHARGING_STARTED}


@pytest.fixture(scope="module")
def played() -> Iterator[dict[Signal, MockFactory]]:
    factories: dict[Signal, MockFactory] = {}
    feedbacks = []
    for signal in Signal:
        factory = factories[signal] = MockFactory()
        feedback = GpioFeedback(WIRED, pin_factory=factory)
        feedbacks.append(feedback)
        if signal in PLAYED_AFTER:
            feedback.signal(PLAYED_AFTER[signal])
        clear(factory)
        feedback.signal(signal)
    time.sleep(2.5)  # the longest patterns take 2 s; READER_OFFLINE has then blinked twice
    yield factories
    for feedback in feedbacks:
        feedback.close()


def test_accepted_blinks_green_twice_and_beeps_once(played: dict[Signal, MockFactory]) -> None:
    green, red, buzzer, relay = pins(played[Signal.ACCEPTED])
    assert_timeline(green, [(0, False), (0, True), (0.15, False), (0.15, True), (0.15, False)])
    assert_timeline(buzzer, [(0, False), (0, True), (0.1, False)])
    assert_timeline(red, OFF)
    assert_timeline(relay, OFF)


def test_rejected_lights_red_two_seconds_and_beeps_three_times(
    played: dict[Signal, MockFactory],
) -> None:
    green, red, buzzer, relay = pins(played[Signal.REJECTED])
    assert_timeline(red, [(0, False), (0, True), (2.0, False)])
    beeps: Timeline = [(0, False), (0, True)]
    for _ in range(2):
        beeps += [(0.1, False), (0.1, True)]
    assert_timeline(buzzer, [*beeps, (0.1, False)])
    assert_timeline(green, OFF)
    assert_timeline(relay, OFF)


def test_charging_started_lights_green_and_closes_the_relay(
    played: dict[Signal, MockFactory],
) -> None:
    green, red, buzzer, relay = pins(played[Signal.CHARGING_STARTED])
    assert_timeline(green, [(0, False), (0, True)])
    assert_timeline(relay, [(0, False), (0, True)])
    assert_timeline(red, OFF)
    assert_timeline(buzzer, OFF)


def test_charging_stopped_turns_green_off_beeps_twice_and_opens_the_relay(
    played: dict[Signal, MockFactory],
) -> None:
    green, red, buzzer, relay = pins(played[Signal.CHARGING_STOPPED])
    assert_timeline(green, [(0, True), (0, False)])
    assert_timeline(relay, [(0, True), (0, False)])
    assert_timeline(buzzer, [(0, False), (0, True), (0.1, False), (0.1, True), (0.1, False)])
    assert_timeline(red, OFF)


def test_error_blinks_red_fast_and_beeps_long(played: dict[Signal, MockFactory]) -> None:
    green, red, buzzer, relay = pins(played[Signal.ERROR])
    blinks: Timeline = [(0, False), (0, True)]
    for _ in range(9):
        blinks += [(0.1, False), (0.1, True)]
    assert_timeline(red, [*blinks, (0.1, False)])
    assert_timeline(buzzer, [(0, False), (0, True), (1.0, False)])
    assert_timeline(green, OFF)
    assert_timeline(relay, OFF)


def test_reader_offline_blinks_red_slowly_until_online(played: dict[Signal, MockFactory]) -> None:
    factory = played[Signal.READER_OFFLINE]
    green, red, buzzer, _ = pins(factory)
    assert_timeline(red, [(0, False), (0, True), (1.0, False), (1.0, True)])
    assert_timeline(green, OFF)
    assert_timeline(buzzer, OFF)


def test_reader_online_leaves_everything_dark(played: dict[Signal, MockFactory]) -> None:
    for pin in pins(played[Signal.READER_ONLINE]):
        assert_timeline(pin, OFF)


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory()


def test_a_moment_while_charging_goes_back_to_green(factory: MockFactory) -> None:
    feedback = GpioFeedback(WIRED, pin_factory=factory, time_scale=0.1)
    green, red, _, relay = pins(factory)
    feedback.signal(Signal.CHARGING_STARTED)
    clear(factory)
    feedback.signal(Signal.REJECTED)  # someone else's card while this car charges
    until(lambda: len(green.states) == 3)
    assert_timeline(green, [(0, True), (0, False), (0.2, True)])
    assert_timeline(red, [(0, False), (0, True), (0.2, False)])
    assert_timeline(relay, [(0, True)])  # charging goes on
    feedback.close()


def test_offline_outlasts_a_moment_and_charging(factory: MockFactory) -> None:
    feedback = GpioFeedback(WIRED, pin_factory=factory, time_scale=0.1)
    green, red, _, relay = pins(factory)
    feedback.signal(Signal.CHARGING_STARTED)
    feedback.signal(Signal.READER_OFFLINE)
    assert not green.state  # out of order shows, even while the car charges
    feedback.signal(Signal.CHARGING_STOPPED)
    assert not relay.state
    clear(factory)
    until(lambda: len(red.states) >= 3)  # the slow red blink is back after the beeps
    assert [state for _, state in red.states[:3]] == [False, True, False]
    feedback.signal(Signal.READER_ONLINE)
    assert not red.state and not green.state
    feedback.close()


def test_a_new_signal_replaces_the_pattern_playing(factory: MockFactory) -> None:
    feedback = GpioFeedback(WIRED, pin_factory=factory, time_scale=0.1)
    green, red, _, _ = pins(factory)
    feedback.signal(Signal.ERROR)  # red blinks for 0.2 s, one beep for 0.1 s
    until(lambda: len(red.states) >= 3)
    green.clear_states()
    feedback.signal(Signal.ACCEPTED)
    assert not red.state
    red.clear_states()
    time.sleep(0.3)  # the rest of the error pattern would have played by now
    assert_timeline(red, OFF)
    assert [state for _, state in green.states] == [False, True, False, True, False]
    feedback.close()


def test_one_rgb_led_shows_the_same_patterns_in_green_and_red(factory: MockFactory) -> None:
    settings = FeedbackSettings(rgb_led=(5, 6, 13), relay=RELAY)
    feedback = GpioFeedback(settings, pin_factory=factory, time_scale=0.1)
    red, green, blue = factory.pin(5), factory.pin(6), factory.pin(13)
    feedback.signal(Signal.ACCEPTED)
    until(lambda: len(green.states) == 5)
    assert_timeline(green, [(0, False), (0, True), (0.015, False), (0.015, True), (0.015, False)])
    feedback.signal(Signal.CHARGING_STARTED)
    assert (red.state, green.state, blue.state) == (False, True, False)
    assert factory.pin(RELAY).state
    feedback.signal(Signal.REJECTED)
    until(lambda: red.state)
    assert (green.state, blue.state) == (False, False)
    until(lambda: green.state)  # back to green: still charging
    assert not red.state
    assert_timeline(blue, OFF)
    feedback.close()


def test_active_low_parts_are_driven_low(factory: MockFactory) -> None:
    settings = FeedbackSettings(green_led=GREEN, red_led=RED, relay=RELAY, active_high=False)
    feedback = GpioFeedback(settings, pin_factory=factory)
    green, red, _, relay = pins(factory)
    assert green.state and red.state and relay.state  # all off: pins high
    feedback.signal(Signal.CHARGING_STARTED)
    assert not green.state and not relay.state
    assert red.state
    feedback.close()


def test_close_turns_everything_off_and_releases_the_pins(factory: MockFactory) -> None:
    feedback = GpioFeedback(WIRED, pin_factory=factory)
    feedback.signal(Signal.CHARGING_STARTED)
    feedback.signal(Signal.ERROR)
    feedback.close()
    assert not any(pin.state for pin in pins(factory))
    assert all(pin.function == "input" for pin in pins(factory))
    feedback.signal(Signal.ACCEPTED)  # a late signal after close is ignored
    again = GpioFeedback(WIRED, pin_factory=factory)  # the pins are free again
    again.close()


def test_only_the_wired_parts_are_used(factory: MockFactory) -> None:
    feedback = GpioFeedback(FeedbackSettings(buzzer=BUZZER), pin_factory=factory, time_scale=0.1)
    feedback.signal(Signal.REJECTED)
    buzzer = factory.pin(BUZZER)
    until(lambda: len(buzzer.states) == 7)
    assert len(factory.pins) == 1
    feedback.close()
