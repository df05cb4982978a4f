"""What a reader shows between moments (idle, charging, out of order) and the timer that
brings it back there once a moment's pattern or message has had its time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from edge.feedback import Signal

# Signals that last a moment; the others set the state the reader rests in.
MOMENTS = frozenset({Signal.ACCEPTED, Signal.REJECTED, Signal.CHARGING_STOPPED, Signal.ERROR})


@dataclass
class RestingState:
    """Whether this reader's car charges and whether the reader itself is offline."""

    charging: bool = False
    offline: bool = False

    def note(self, signal: Signal) -> None:
        if signal is Signal.CHARGING_STARTED:
            self.charging = True
        elif signal is Signal.CHARGING_STOPPED:
            self.charging = False
        elif signal is Signal.READER_OFFLINE:
            self.offline = True
        elif signal is Signal.READER_ONLINE:
            self.offline = False

    @property
    def signal(self) -> Signal:
        """The signal whose pattern the reader rests in. Out of order wins over charging:
        a driver must not wait at a reader that cannot read."""
        if self.offline:
            return Signal.READER_OFFLINE
        if self.charging:
            return Signal.CHARGING_STARTED
        return Signal.READER_ONLINE


class RestTimer:
    """Calls `back_to_rest` some seconds after a moment, unless a newer signal came first.

    `lock` is held while `back_to_rest` runs; the owner holds it too while it plays a new
    signal, so a late timer never overwrites a newer pattern.
    """

    def __init__(self, back_to_rest: Callable[[], None], name: str) -> None:
        self.lock = threading.RLock()
        self._back_to_rest = back_to_rest
        self._name = name
        self._generation = 0
        self._timer: threading.Timer | None = None

    def restart(self, seconds: float | None) -> None:
        """Forget any pending return; with `seconds`, return to rest after that long.
        Call with `lock` held."""
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if seconds is None:
            return
        self._timer = threading.Timer(seconds, self._fire, (self._generation,))
        self._timer.name = self._name
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        with self.lock:
            self.restart(None)

    def _fire(self, generation: int) -> None:
        with self.lock:
            if generation == self._generation:
                self._timer = None
                self._back_to_rest()
