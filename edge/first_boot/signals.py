"""A failed first boot shown where someone at the site looks: every reader's lights,
buzzer and display play the error pattern, with a few words on the display."""

from __future__ import annotations

import time
from typing import Any

from edge.feedback import Signal
from edge.feedback.build import build_feedback, has_gpio_parts
from edge.feedback.display import OpenBus
from edge.feedback.gpio import PATTERNS, pattern_seconds
from edge.settings import Settings

# The display shows "Error" above it; 16 columns.
FAILURE_DETAIL = "See SD card"
FAILURE_REPEATS = 3


def show_failure(
    settings: Settings,
    *,
    repeats: int = FAILURE_REPEATS,
    pin_factory: Any = None,
    open_bus: OpenBus | None = None,
) -> int:
    """Play the error pattern `repeats` times at every reader with something wired;
    returns how many readers showed it. A part that fails is logged by the feedback
    itself and never stops the run."""
    parts = [
        build_feedback(reader.feedback, reader.id, pin_factory=pin_factory, open_bus=open_bus)
        for reader in settings.readers
        if has_gpio_parts(reader.feedback) or reader.feedback.lcd_i2c_bus is not None
    ]
    if not parts:
        return 0
    try:
        for _ in range(repeats):
            for feedback in parts:
                feedback.signal(Signal.ERROR, FAILURE_DETAIL)
            # The pattern plays in gpiozero's threads: let it play before the next one.
            time.sleep(pattern_seconds(PATTERNS[Signal.ERROR]))
    finally:
        for feedback in parts:
            feedback.close()
    return len(parts)
