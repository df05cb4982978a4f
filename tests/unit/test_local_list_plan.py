"""What a charger's local list can take, which cards it holds, and the parts it gets:
plain functions on plain data."""

from __future__ import annotations

import json

import pytest

from edge.ocpp.local_list_limits import list_summary, read_limits, retry_delay
from edge.ocpp.local_list_plan import (
    Catalogue,
    LocalListCache,
    build_catalogue,
    choose_push,
    differential_push,
    full_push,
)
from edge.ocpp.schemas import validate_request
from edge.settings import LocalListSettings
from edge.store.local_lists import CatalogueCard, ListState

SETTINGS = LocalListSettings()
GOOD = {
    "LocalAuthListEnabled": "true",
    "LocalAuthListMaxLength": "300",
    "SendLocalListMaxLength": "40",
    "SupportedFeatureProfiles": "Core,LocalAuthListManagement,SmartCharging",
}


def card(
    id_tag: str, stamp: int, last_use: int | None = None, status: str = "Accepted"
) -> CatalogueCard:
    return CatalogueCard(id_tag, status, None, None, stamp, last_use)


def test_reported_limits_are_used_as_they_are() -> None:
    limits = read_limits(GOOD, SETTINGS)
    assert (limits.supported, limits.enabled, limits.max_length, limits.send_max_length) == (
        True,
        True,
        300,
        40,
    )
    assert limits.notes == () and limits.skip_reason() is None


@pytest.mark.parametrize(
    "value", ["-5", "0", "lots", "", "1e3", "2.5", "99999999999999999999", "+7", "\u0663"]
)
def test_unusable_numbers_fall_back_to_the_defaults(value: str) -> None:
    limits = read_limits(
        {**GOOD, "SendLocalListMaxLength": value, "LocalAuthListMaxLength": value}, SETTINGS
    )
    assert limits.send_max_length == SETTINGS.default_send_max_length
    assert limits.max_length == SETTINGS.default_max_length
    assert len(limits.notes) == 2 and all("used" in note for note in limits.notes)


def test_missing_keys_fall_back_and_say_so() -> None:
    limits = read_limits({}, SETTINGS)
    assert (limits.supported, limits.enabled) == (True, True)
    assert (limits.max_length, limits.send_max_length) == (100, 50)
    assert len(limits.notes) == 4


def test_a_message_is_never_longer_than_the_setting_allows() -> None:
    limits = read_limits({**GOOD, "SendLocalListMaxLength": " 5000000 "}, SETTINGS)
    assert limits.send_max_length == SETTINGS.max_entries_per_message
    assert "max_entries_per_message" in limits.notes[0]


@pytest.mark.parametrize(
    ("configuration", "reason"),
    [
        ({"SupportedFeatureProfiles": "Core,Reservation"}, "does not name"),
        ({"SupportedFeatureProfiles": "%%%"}, "does not name"),
        ({"LocalAuthListEnabled": " False "}, "LocalAuthListEnabled is false"),
    ],
)
def test_a_charger_without_the_feature_is_skipped(
    configuration: dict[str, str], reason: str
) -> None:
    assert reason in (read_limits({**GOOD, **configuration}, SETTINGS).skip_reason() or "")


def test_unclear_enabled_value_is_taken_as_true() -> None:
    limits = read_limits({**GOOD, "LocalAuthListEnabled": "yes please"}, SETTINGS)
    assert limits.enabled and "taken as true" in limits.notes[0]


def test_the_wait_doubles_up_to_its_longest() -> None:
    settings = LocalListSettings(retry_seconds=60, retry_max_seconds=3600)
    assert [retry_delay(failures, settings) for failures in range(1, 9)] == [
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
        3600,
    ]
    assert retry_delay(10_000, settings) == 3600


def catalogue_of(
    cards: list[CatalogueCard], limits: dict[str, frozenset[str]] | None = None
) -> Catalogue:
    return build_catalogue(max(c.stamp for c in cards), cards, limits or {})


def test_everything_that_fits_goes_in_parts_ending_at_the_table_version() -> None:
    cards = [card(f"C{number:02d}", number + 1) for number in range(25)]
    catalogue = catalogue_of(cards)
    limits = read_limits({**GOOD, "SendLocalListMaxLength": "10"}, SETTINGS)
    push = full_push(catalogue, "CP1", limits)
    assert push.parts == 3 and (push.held, push.cards) == (25, 25)
    assert [push.list_version(part) for part in (1, 2, 3)] == [23, 24, 25]
    assert [push.update_type(part) for part in (1, 2, 3)] == [
        "Full",
        "Differential",
        "Differential",
    ]
    payloads = [json.loads(push.text(part)) for part in (1, 2, 3)]
    for payload in payloads:
        validate_request("SendLocalList", payload)
    assert [len(payload["localAuthorizationList"]) for payload in payloads] == [10, 10, 5]
    listed = [entry["idTag"] for payload in payloads for entry in payload["localAuthorizationList"]]
    assert listed == sorted(c.id_tag for c in cards)


def test_a_small_charger_holds_its_own_cards_then_the_most_recently_used() -> None:
    cards = [card(f"C{number:02d}", number + 1) for number in range(20)]
    cards += [
        card("USED1", 21, last_use=5),
        card("USED2", 22, last_use=9),
        card("BLOCKED", 23, status="Blocked"),
        card("MINE", 24),
        card("THEIRS", 25),
    ]
    catalogue = catalogue_of(cards, {"MINE": frozenset({"CP1"}), "THEIRS": frozenset({"CP2"})})
    limits = read_limits({**GOOD, "LocalAuthListMaxLength": "6"}, SETTINGS)
    push = full_push(catalogue, "CP1", limits)
    assert push.ids == ("MINE", "USED2", "USED1", "C00", "C01", "C02")
    assert (push.held, push.cards) == (6, 24)
    # With room for all but one, the never-used Blocked card is the one left out.
    roomy = read_limits({**GOOD, "LocalAuthListMaxLength": "23"}, SETTINGS)
    assert "BLOCKED" not in full_push(catalogue, "CP1", roomy).ids
    assert "THEIRS" not in full_push(catalogue, "CP1", roomy).ids


def test_a_difference_removes_first_and_never_reuses_a_version() -> None:
    cards = [card(f"C{number:02d}", number + 1) for number in range(10)]
    cards += [card("MOVED", 11), card("CHANGED", 12)]
    catalogue = catalogue_of(cards, {"MOVED": frozenset({"CP2"})})
    limits = read_limits({**GOOD, "SendLocalListMaxLength": "1"}, SETTINGS)
    push = differential_push(catalogue, "CP1", limits, since=10)
    assert push.ids == ("MOVED", "CHANGED") and push.removals == {"MOVED"}
    assert [push.list_version(part) for part in (1, 2)] == [11, 12]
    first = json.loads(push.text(1))
    assert first == {
        "listVersion": 11,
        "updateType": "Differential",
        "localAuthorizationList": [{"idTag": "MOVED"}],
    }


def test_a_card_whose_entry_breaks_the_schema_is_left_out() -> None:
    bad = CatalogueCard("BAD", "Accepted", "not a date", None, 2, None)
    catalogue = build_catalogue(2, [card("GOOD", 1), bad], {})
    assert catalogue.left_out == ("BAD",) and list(catalogue.entries) == ["GOOD"]


def test_chargers_of_the_same_limits_share_one_push() -> None:
    cards = [card(f"C{number:02d}", number + 1) for number in range(30)]
    cards.append(card("MINE", 31))
    catalogue = catalogue_of(cards, {"MINE": frozenset({"CP9"})})
    cache = LocalListCache(pushes_cached=2)
    limits = read_limits(GOOD, SETTINGS)
    first = cache.push(catalogue, "CP1", limits, "Full", 0)
    assert cache.push(catalogue, "CP2", limits, "Full", 0) is first
    assert first.text(1) is cache.push(catalogue, "CP3", limits, "Full", 0).text(1)
    own = cache.push(catalogue, "CP9", limits, "Full", 0)
    assert own is not first and "MINE" in own.ids
    # The cache holds at most `pushes_cached`.
    cache.push(
        catalogue, "CP1", read_limits({**GOOD, "LocalAuthListMaxLength": "7"}, SETTINGS), "Full", 0
    )
    assert len(cache._pushes) == 2


def test_what_the_charger_needs() -> None:
    cards = [card(f"C{number:02d}", number + 1) for number in range(30)]
    catalogue = catalogue_of(cards)
    cache = LocalListCache()
    limits = read_limits({**GOOD, "SendLocalListMaxLength": "10"}, SETTINGS)
    push = full_push(catalogue, "CP1", limits)
    # Nothing known of it: Full from part 1.
    first = choose_push(cache, catalogue, "CP1", limits, ListState(), 0)
    assert first is not None and (first.push.push_type, first.part) == ("Full", 1)
    # It took part 1 (the edge saw it), or part 2 whose answer was lost: go on from there.
    pushing = ListState(
        status="pushing",
        list_version=push.list_version(1),
        push_version=30,
        push_type="Full",
        push_digest=push.digest,
        push_parts=3,
        updated_at="x",
    )
    assert (choose_push(cache, catalogue, "CP1", limits, pushing, 28) or first).part == 2
    assert (choose_push(cache, catalogue, "CP1", limits, pushing, 29) or first).part == 3
    # It reports something else: Full again.
    assert (choose_push(cache, catalogue, "CP1", limits, pushing, 7) or first).part == 1
    # It holds all of version 20: a Differential; all of version 30: nothing.
    held = ListState(version=20, list_version=20, held=20, cards=20, max_length=300, updated_at="x")
    chosen = choose_push(cache, catalogue, "CP1", limits, held, 20)
    assert chosen is not None and chosen.push.push_type == "Differential"
    assert chosen.push.ids == tuple(f"C{number:02d}" for number in range(20, 30))
    # Refused at a later version, it still holds all of version 20: the Differential again.
    refused = ListState(
        version=20,
        status="refused",
        list_version=20,
        held=20,
        cards=20,
        max_length=300,
        updated_at="x",
    )
    again = choose_push(cache, catalogue, "CP1", limits, refused, 20)
    assert again is not None and again.push.push_type == "Differential"
    current = ListState(
        version=30, list_version=30, held=30, cards=30, max_length=300, updated_at="x"
    )
    assert choose_push(cache, catalogue, "CP1", limits, current, 30) is None


def test_the_operator_reads_held_of_cards_and_why() -> None:
    limits = read_limits({**GOOD, "LocalAuthListMaxLength": "oops"}, SETTINGS)
    state = ListState(
        version=9, list_version=9, held=100, cards=250, max_length=100, updated_at="x"
    )
    assert list_summary(state, 12, limits) == (
        "version 9: held 100 of 250 (LocalAuthListMaxLength 100; the edge authorizes the "
        "others; LocalAuthListMaxLength 'oops' is not a whole number from 1 to 999,999,999: "
        "100 used); behind the card table's 12"
    )
