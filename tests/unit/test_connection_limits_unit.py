"""Each charger id's allowance is kept across connections, for a bounded number of ids."""

from __future__ import annotations

from edge.ocpp.limits import Allowances
from edge.settings import ChargerLimitsSettings


def test_an_id_keeps_its_allowance_and_only_the_most_recent_ids_are_kept() -> None:
    limits = ChargerLimitsSettings()
    allowances = Allowances(most=3)
    first = allowances.of("CP1", limits)
    assert allowances.of("CP1", limits) is first
    for charger_id in ("CP2", "CP3", "CP4"):
        allowances.of(charger_id, limits)
    assert len(allowances) == 3
    assert allowances.of("CP1", limits) is not first  # the oldest went first


def test_the_log_share_takes_only_what_it_holds() -> None:
    limits = ChargerLimitsSettings(
        message_log_bytes_per_second=1024, message_log_burst_bytes=262_144
    )
    share = Allowances().of("CP1", limits).logged_bytes
    assert share.take_if_available(200_000)
    assert not share.take_if_available(100_000)  # 62,144 left, and nothing owed
    assert share.take_if_available(60_000)
