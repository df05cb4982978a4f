"""Smart charging decisions as plain functions: a site's power shared among its
transactions, and the checks a charging profile must pass before it is sent."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

# A transaction's share of the site limit is sent as this profile id (one per connector).
SITE_LIMIT_PROFILE_ID_BASE = 100_000


def fair_shares(
    limit_w: float, wanted_w: Mapping[tuple[str, int], float]
) -> dict[tuple[str, int], float]:
    """Split `limit_w` among connectors as evenly as possible (max-min fairness).

    `wanted_w` is each active connector's own maximum; one that can take less than an
    equal share gets its maximum, and what it leaves is shared by the others. Shares
    are rounded down to 0.1 W (OCPP's precision) so their sum never exceeds the limit.
    """
    shares: dict[tuple[str, int], float] = {}
    remaining = dict(wanted_w)
    budget = limit_w
    while remaining:
        equal = budget / len(remaining)
        capped = {key: wanted for key, wanted in remaining.items() if wanted <= equal}
        if not capped:
            for key in remaining:
                shares[key] = math.floor(equal * 10) / 10
            break
        for key, wanted in capped.items():
            shares[key] = math.floor(wanted * 10) / 10
            budget -= wanted
            del remaining[key]
    return shares


def site_limit_profile(
    connector_id: int, transaction_id: int, limit_w: float, stack_level: int
) -> dict[str, Any]:
    """The TxProfile (OCPP wire form) that holds a transaction to its share."""
    return {
        "chargingProfileId": SITE_LIMIT_PROFILE_ID_BASE + connector_id,
        "transactionId": transaction_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": {
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_w}],
        },
    }


def profile_problems(connector_id: int, profile: Mapping[str, Any]) -> list[str]:
    """What OCPP 1.6 (section 3.13) forbids in a SetChargingProfile that the schema allows."""
    problems = []
    purpose = profile.get("chargingProfilePurpose")
    kind = profile.get("chargingProfileKind")
    schedule = profile.get("chargingSchedule", {})
    periods: Sequence[Mapping[str, Any]] = schedule.get("chargingSchedulePeriod", [])
    if purpose == "ChargePointMaxProfile" and connector_id != 0:
        problems.append("a ChargePointMaxProfile goes to connector 0")
    if purpose == "TxProfile":
        if connector_id == 0:
            problems.append("a TxProfile goes to the connector of its transaction, not 0")
        if profile.get("transactionId") is None:
            problems.append("a TxProfile names its transactionId")
    if purpose != "TxProfile" and profile.get("transactionId") is not None:
        problems.append("only a TxProfile names a transactionId")
    if kind == "Recurring" and not profile.get("recurrencyKind"):
        problems.append("a Recurring profile needs recurrencyKind")
    starts = [int(period.get("startPeriod", 0)) for period in periods]
    if not starts or starts[0] != 0:
        problems.append("the first chargingSchedulePeriod starts at startPeriod 0")
    if any(later <= earlier for earlier, later in itertools.pairwise(starts)):
        problems.append("startPeriod values must increase")
    if any(period.get("limit", 0) < 0 for period in periods):
        problems.append("a limit cannot be negative")
    return problems
