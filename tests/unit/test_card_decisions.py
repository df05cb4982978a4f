"""The pure decisions behind a tap: UID normalisation, repeats of a held card, what a
card may do, and what a tap should do on the reader's connectors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edge.authorization import (
    CachedDecision,
    CardFacts,
    IdTagRecord,
    authorize_card,
    same_account,
)
from edge.feedback import Signal
from edge.readers.supervisor import Debouncer
from edge.readers.uid import UidError, normalize_uid
from edge.tap_decision import (
    ConnectorView,
    InProgress,
    Refuse,
    RunningTransaction,
    StartCharging,
    StopCharging,
    plan_tap,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "options", "canonical"),
    [
        (b"\x04\xa2\xb3\xc4", {}, "04A2B3C4"),
        (bytes(range(1, 8)), {}, "01020304050607"),
        (bytes(range(1, 11)), {}, "0102030405060708090A"),
        ("04:a2:b3:c4", {}, "04A2B3C4"),
        ("04-A2 B3.C4", {}, "04A2B3C4"),
        ("4a2b3c4", {}, "04A2B3C4"),
        (b"\x04\xa2\xb3\xc4", {"byte_order": "reversed"}, "C4B3A204"),
        ("C4B3A204", {"byte_order": "reversed"}, "04A2B3C4"),
        # The 10-digit number printed on many 125 kHz cards is the 4 UID bytes in decimal.
        ("0011189196", {"uid_format": "decimal"}, "00AABBCC"),
        ("3300106756", {"uid_format": "decimal", "byte_order": "reversed"}, "04A2B3C4"),
        ("12", {"uid_format": "decimal", "decimal_bytes": 7}, "0000000000000C"),
    ],
)
def test_uids_become_one_canonical_form(
    raw: bytes | str, options: dict[str, str], canonical: str
) -> None:
    assert normalize_uid(raw, **options) == canonical  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "options", "complaint"),
    [
        ("", {}, "empty"),
        ("04G2", {}, "not hexadecimal"),
        ("12AB", {"uid_format": "decimal"}, "not a decimal"),
        (bytes(11), {}, "longer than any card UID"),
    ],
)
def test_what_is_not_a_uid_is_refused(
    raw: bytes | str, options: dict[str, str], complaint: str
) -> None:
    with pytest.raises(UidError, match=complaint):
        normalize_uid(raw, **options)  # type: ignore[arg-type]


def test_a_card_held_on_the_reader_counts_once() -> None:
    now = [0.0]
    debouncer = Debouncer(2.0, clock=lambda: now[0])
    reads = []
    for moment in (0.0, 0.5, 1.0, 2.5, 4.0, 7.0):  # held until 4.0, then again at 7.0
        now[0] = moment
        reads.append(debouncer.is_new_tap("04A2B3C4"))
    assert reads == [True, False, False, False, False, True]
    assert debouncer.is_new_tap("04FFFFFF")  # another card is another tap


ACCEPTED = IdTagRecord("CARD", "Accepted", parent_id_tag="FLAT12")


def test_card_limits_and_unknown_cards() -> None:
    limited = CardFacts(ACCEPTED, allowed_chargers=frozenset({"CP1"}))
    assert authorize_card(limited, "CP1", NOW).status == "Accepted"
    refused = authorize_card(limited, "CP2", NOW)
    assert (refused.status, refused.reason) == ("Invalid", "card not allowed at charger CP2")
    unknown = CardFacts(None)
    assert authorize_card(unknown, "CP1", NOW).status == "Invalid"
    accepted = authorize_card(unknown, "CP1", NOW, unknown_cards="accept")
    assert accepted.status == "Accepted" and accepted.remember_unknown
    busy = CardFacts(None, charging_elsewhere=True)
    assert authorize_card(busy, "CP1", NOW, unknown_cards="accept").status == "ConcurrentTx"


def test_a_cloud_decision_is_reused_offline_until_it_is_too_old() -> None:
    decided = (NOW - timedelta(days=3)).isoformat()
    facts = CardFacts(None, cached=CachedDecision("Accepted", decided, "cloud"))
    assert authorize_card(facts, "CP1", NOW, cache_days=30).status == "Accepted"
    assert authorize_card(facts, "CP1", NOW, cache_days=2).status == "Invalid"
    # What the setting decided earlier is not a decision to reuse: the setting decides again.
    by_setting = CardFacts(None, cached=CachedDecision("Accepted", decided, "setting"))
    assert authorize_card(by_setting, "CP1", NOW, unknown_cards="reject").status == "Invalid"


def test_accounts() -> None:
    assert same_account("A", None, "a", None)
    assert same_account("A", "FLAT", "B", "flat")
    assert same_account("A", "FLEET", "FLEET", None)
    assert not same_account("A", None, "B", None)
    assert not same_account("A", "FLAT1", "B", "FLAT2")


def views(*connectors: ConnectorView) -> list[ConnectorView]:
    return list(connectors)


GOOD = authorize_card(CardFacts(ACCEPTED), "CP1", NOW)
THEIRS = RunningTransaction(7, "OTHER", None)
MINE = RunningTransaction(8, "CARD", "FLAT12")


@pytest.mark.parametrize(
    ("connectors", "online", "plan"),
    [
        ([ConnectorView(1, "Available")], True, StartCharging(1)),
        ([ConnectorView(1, None)], True, StartCharging(1)),
        ([ConnectorView(1, "Available")], False, Refuse("charger offline", Signal.ERROR)),
        ([ConnectorView(1, "Charging", MINE)], True, StopCharging(1, 8)),
        ([ConnectorView(1, "Charging", MINE, stopping=True)], True, InProgress(1, "stopping")),
        ([ConnectorView(1, "Available", starting_for="card")], True, InProgress(1, "starting")),
        (
            [ConnectorView(1, "Charging", THEIRS)],
            True,
            Refuse("connector busy: another card is charging"),
        ),
        ([ConnectorView(1, "Faulted")], True, Refuse("connector faulted", Signal.ERROR)),
        ([ConnectorView(1, "Unavailable")], True, Refuse("connector out of service", Signal.ERROR)),
        ([ConnectorView(1, "Finishing")], True, Refuse("connector busy (Finishing)")),
        (
            [ConnectorView(1, "Reserved", reserved_for=("OTHER", None))],
            True,
            Refuse("connector reserved for another card"),
        ),
        ([ConnectorView(1, "Reserved", reserved_for=("X", "FLAT12"))], True, StartCharging(1)),
        # A whole charger: the plugged-in connector first, then the first Available one.
        ([ConnectorView(1, "Available"), ConnectorView(2, "Preparing")], True, StartCharging(2)),
        (
            [ConnectorView(1, "Charging", THEIRS), ConnectorView(2, "Available")],
            True,
            StartCharging(2),
        ),
        (
            [ConnectorView(1, "Charging", THEIRS), ConnectorView(2, "Charging", MINE)],
            True,
            StopCharging(2, 8),
        ),
        (
            [ConnectorView(1, "Charging", THEIRS), ConnectorView(2, "Faulted")],
            True,
            Refuse("no free connector"),
        ),
        ([], True, Refuse("the charger has not reported its connectors yet", Signal.ERROR)),
    ],
)
def test_plan_tap(connectors: list[ConnectorView], online: bool, plan: object) -> None:
    assert plan_tap("CARD", GOOD, charger_online=online, connectors=connectors) == plan


def test_a_refused_card_may_still_stop_its_own_transaction() -> None:
    blocked = authorize_card(CardFacts(IdTagRecord("CARD", "Blocked")), "CP1", NOW)
    running = [ConnectorView(1, "Charging", MINE)]
    assert plan_tap("CARD", blocked, charger_online=True, connectors=running) == StopCharging(1, 8)
    idle = [ConnectorView(1, "Available")]
    assert plan_tap("CARD", blocked, charger_online=True, connectors=idle) == Refuse("card blocked")
