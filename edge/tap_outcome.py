"""What came of a tap, as recorded: a vocabulary whose outcomes only move forward. Pure
(the store and the tap flow both use it)."""

from __future__ import annotations

from enum import StrEnum


class TapResult(StrEnum):
    """What came of a tap. `start accepted` and `stop accepted` wait for the charger;
    the others are where a tap ends."""

    IN_PROGRESS = "in progress"
    REFUSED = "refused"
    START_ACCEPTED = "start accepted"
    STOP_ACCEPTED = "stop accepted"
    STARTED = "started"
    NOT_STARTED_IN_TIME = "not started in time"
    CHARGER_REFUSED = "charger refused"
    FAILED = "failed"


_WAITING = frozenset({TapResult.START_ACCEPTED, TapResult.STOP_ACCEPTED})


def moves_forward(recorded: str | None, result: TapResult) -> bool:
    """Whether `result` may replace the recorded outcome (its text, "failed: why" for a
    failure): an outcome only moves forward, so a charger's StartTransaction that arrives
    before its answer to RemoteStartTransaction still ends the tap as `started`."""
    if recorded is None:
        return True
    waiting = recorded.partition(":")[0] in _WAITING
    return waiting and result not in _WAITING
