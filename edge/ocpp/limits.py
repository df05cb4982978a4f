"""What one charger's connection may use: the pure parts (a frame budget, a count of
sampled values, a log line that does not flood). The settings are `[ocpp.limits]`;
docs/security.md gives each default and why."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocpp.exceptions import OccurenceConstraintViolationError

from edge.settings import ChargerLimitsSettings

# The actions whose payload carries sampled values, and the field holding them.
SAMPLED_VALUE_FIELDS = {"MeterValues": "meterValue", "StopTransaction": "transactionData"}

# A repeated warning about one connection is logged at most this often.
NOTE_EVERY_SECONDS = 60.0


class FrameBudget:
    """A token bucket: `burst` frames at once, then `rate` per second.

    `delay()` takes one frame's token and says how long to wait before handling it.
    The session waits instead of refusing: OCPP-J 1.6 has no error code for "too
    fast", a refused StatusNotification would be lost for good, and a charger that is
    read more slowly is held back by TCP, so nothing piles up in the edge.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def delay(self, cost: float = 1.0) -> float:
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate) - cost
        self._tokens, self._updated = tokens, now
        # A negative balance is the time the next frame must wait; it never goes below
        # one frame's worth, because the caller waits before reading another.
        return 0.0 if tokens >= 0.0 else -tokens / self.rate

    def take_if_available(self, cost: float) -> bool:
        """Take `cost` tokens if the bucket holds them (nothing is owed otherwise)."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if tokens < cost:
            self._tokens = tokens
            return False
        self._tokens = tokens - cost
        return True


@dataclass
class ChargerAllowance:
    """What one charger id may still use, kept across its connections: reconnecting
    does not refill its frame budget or the message log's share."""

    frames: FrameBudget
    logged_bytes: FrameBudget


class Allowances:
    """Each charger id's allowance, the most recently used `most` of them (a device
    cycling through ids cannot grow this without bound; an evicted id starts full)."""

    def __init__(self, most: int = 10_000) -> None:
        self.most = most
        self._by_charger: OrderedDict[str, ChargerAllowance] = OrderedDict()

    def of(self, charger_id: str, limits: ChargerLimitsSettings) -> ChargerAllowance:
        allowance = self._by_charger.get(charger_id)
        if allowance is None:
            allowance = ChargerAllowance(
                FrameBudget(limits.frames_per_second, limits.frame_burst),
                FrameBudget(limits.message_log_bytes_per_second, limits.message_log_burst_bytes),
            )
            self._by_charger[charger_id] = allowance
            while len(self._by_charger) > self.most:
                self._by_charger.popitem(last=False)
        else:
            self._by_charger.move_to_end(charger_id)
        return allowance

    def __len__(self) -> int:
        return len(self._by_charger)


def check_sampled_values(action: str, payload: dict[str, Any], limit: int) -> None:
    """Refuse a MeterValues/StopTransaction carrying more than `limit` sampled values,
    before the frame is validated or stored (counted defensively: not yet validated)."""
    readings = payload.get(SAMPLED_VALUE_FIELDS[action])
    if not isinstance(readings, list):
        return
    count = 0
    for reading in readings:
        sampled = reading.get("sampledValue") if isinstance(reading, dict) else None
        count += len(sampled) if isinstance(sampled, list) else 0
    if count > limit:
        raise OccurenceConstraintViolationError(
            description=f"{action} carries {count} sampled values; this central system takes "
            f"at most {limit} in one message: send them in several",
            details={"limit": limit, "count": count},
        )


class Note:
    """A warning about one connection that may repeat without end (a flood): logged
    the first time, then at most once per `every` seconds with the count since."""

    def __init__(self, logger: logging.Logger, every: float = NOTE_EVERY_SECONDS) -> None:
        self.logger = logger
        self.every = every
        self.count = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def __call__(self, message: str, *arguments: object) -> None:
        self.count += 1
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < self.every:
            self._unlogged += 1
            return
        if self._unlogged:
            message += f" ({self._unlogged} more like it since the last report)"
        self.logger.warning(message, *arguments)
        self._logged_at, self._unlogged = now, 0
