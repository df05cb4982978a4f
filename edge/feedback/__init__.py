"""What a driver at a reader sees and hears: lights, a buzzer, a relay and a small
character display, each optional. The tap flow speaks only this interface."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class Signal(StrEnum):
    """Moments the driver is told about, each with its own pattern."""

    ACCEPTED = "accepted"  # card OK: plug in (or charging is starting)
    REJECTED = "rejected"  # card refused; the detail says why
    CHARGING_STARTED = "charging_started"
    CHARGING_STOPPED = "charging_stopped"
    ERROR = "error"  # the edge or the charger failed; the detail says what
    READER_OFFLINE = "reader_offline"
    READER_ONLINE = "reader_online"


class Feedback(Protocol):
    """One reader's lights, buzzer, relay and display. Calls return at once; patterns
    play in the background (gpiozero's own threads)."""

    def signal(self, signal: Signal, detail: str = "") -> None:
        """Play the pattern for `signal`; `detail` is a few words for the display."""
        ...

    def show_charging(self, power_w: float, energy_wh: int) -> None:
        """While charging: the present power and the energy so far, for the display."""
        ...

    def close(self) -> None:
        """Turn everything off and release the pins."""
        ...


class NoFeedback:
    """For a reader with nothing wired, or a machine without GPIO."""

    def signal(self, signal: Signal, detail: str = "") -> None:
        pass

    def show_charging(self, power_w: float, energy_wh: int) -> None:
        pass

    def close(self) -> None:
        pass
