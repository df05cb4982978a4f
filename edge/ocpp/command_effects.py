"""What a central system remembers from the commands it sends.

Each action with state registers its effects here, the way the `ocpp` library routes
handlers with `@on(Action)`: `@prepares(action)` fills in what the edge allocates
(reservation ids, local list versions and entries), `@on_request(action)` records what
was asked, `@on_answer(action)` records what the charger said. A new command is one
place to edit. Requests and answers use OCPP's own camelCase keys, as on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from sqlite_utils import Database

from edge.clock import normalize_timestamp, utc_now_text
from edge.ocpp.local_list_limits import LARGEST_NUMBER, ListLimits
from edge.ocpp.local_list_plan import (
    ListPush,
    catalogue_from,
    differential_push,
    full_push,
)
from edge.smart_charging import SITE_LIMIT_PROFILE_ID_BASE
from edge.store import (
    certificates,
    charger_configuration,
    charging_profiles,
    local_lists,
    reservations,
)
from edge.store.local_lists import AcceptedPart

# (db, charger_id, arguments) -> arguments with the edge's allocations
Prepare = Callable[[Database, str, dict[str, Any]], dict[str, Any]]
# (db, charger_id, request, now)
OnRequest = Callable[[Database, str, dict[str, Any], str], None]
# (db, charger_id, request, answer, now)
OnAnswer = Callable[[Database, str, dict[str, Any], dict[str, Any], str], None]

_PREPARES: dict[str, Prepare] = {}
_REQUESTS: dict[str, OnRequest] = {}
_ANSWERS: dict[str, OnAnswer] = {}

Hook = TypeVar("Hook", Prepare, OnRequest, OnAnswer)


def _register(registry: dict[str, Hook], action: str) -> Callable[[Hook], Hook]:
    def register(hook: Hook) -> Hook:
        if action in registry:
            raise ValueError(f"{action} has two {hook.__name__} effects")
        registry[action] = hook
        return hook

    return register


def prepares(action: str) -> Callable[[Prepare], Prepare]:
    return _register(_PREPARES, action)


def on_request(action: str) -> Callable[[OnRequest], OnRequest]:
    return _register(_REQUESTS, action)


def on_answer(action: str) -> Callable[[OnAnswer], OnAnswer]:
    return _register(_ANSWERS, action)


def prepare_arguments(
    db: Database, charger_id: str, action: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """Arguments (snake_case) with the edge's own allocations filled in."""
    prepare = _PREPARES.get(action)
    return arguments if prepare is None else prepare(db, charger_id, arguments)


def apply_request(db: Database, charger_id: str, action: str, request: dict[str, Any]) -> None:
    record = _REQUESTS.get(action)
    if record is not None:
        record(db, charger_id, request, utc_now_text())


def apply_answer(
    db: Database,
    charger_id: str,
    action: str,
    request: dict[str, Any],
    answer: dict[str, Any],
) -> None:
    record = _ANSWERS.get(action)
    if record is not None:
        record(db, charger_id, request, answer, utc_now_text())


# -- Core: configuration, availability ------------------------------------------


@on_answer("GetConfiguration")
def _configuration_reported(
    db: Database, charger_id: str, request: dict[str, Any], answer: dict[str, Any], now: str
) -> None:
    for entry in answer.get("configurationKey", []):
        charger_configuration.record_reported_key(
            db, charger_id, entry["key"], entry.get("value"), entry["readonly"], now
        )
    # Keys asked for that the charger does not know: what was kept of them is stale.
    charger_configuration.forget_keys(db, charger_id, answer.get("unknownKey") or [])


@on_answer("ChangeConfiguration")
def _configuration_changed(
    db: Database, charger_id: str, request: dict[str, Any], answer: dict[str, Any], now: str
) -> None:
    status = answer.get("status")
    if status in ("Accepted", "RebootRequired"):
        charger_configuration.record_changed_key(
            db, charger_id, request["key"], request["value"], status, now
        )


@on_request("ChangeAvailability")
def _availability_requested(
    db: Database, charger_id: str, request: dict[str, Any], now: str
) -> None:
    charger_configuration.record_availability_request(
        db, charger_id, request["connectorId"], request["type"], now
    )


@on_answer("ChangeAvailability")
def _availability_answered(
    db: Database, charger_id: str, request: dict[str, Any], answer: dict[str, Any], now: str
) -> None:
    charger_configuration.record_availability_answer(
        db, charger_id, request["connectorId"], answer.get("status")
    )


# -- Reservation ------------------------------------------------------------------


@prepares("ReserveNow")
def _allocate_reservation(
    db: Database, charger_id: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    if arguments.get("reservation_id") is not None:
        return arguments
    reservation_id = reservations.add_reservation(
        db,
        charger_id,
        arguments.get("connector_id", 0),
        arguments.get("id_tag", ""),
        arguments.get("parent_id_tag"),
        _store_time(arguments.get("expiry_date", "")),
        utc_now_text(),
    )
    return {**arguments, "reservation_id": reservation_id}


@on_answer("ReserveNow")
def _reservation_answered(
    db: Database, charger_id: str, request: dict[str, Any], answer: dict[str, Any], now: str
) -> None:
    reservations.record_reservation_answer(db, request["reservationId"], answer["status"], now)


@on_answer("CancelReservation")
def _reservation_cancelled(
    db: Database, charger_id: str, request: dict[str, Any], answer: dict[str, Any], now: str
) -> None:
    if answer.get("status") == "Accepted":
        reservations.cancel_reservation(db, request["reservationId"], now)


def _store_time(text: str) -> str:
    try:
        return normalize_timestamp(text)
    except ValueError:
        return text  # refused by schema validation right after, and rolled back


# -- Local authorization list -------------------------------------------------------


@prepares("SendLocalList")
def _fill_local_list(db: Database, charger_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    if "local_authorization_list" in arguments:
        return arguments
    return {**arguments, **local_list_update(db, charger_id, arguments.get("update_type"))}


# An operator's SendLocalList filled by the edge goes as one message: refused when longer
# than the charger said it takes (edge/ocpp/commands.py); the edge's own pushes go in
# parts that fit (edge/ocpp/local_list.py).
_ONE_MESSAGE = ListLimits(True, True, max_length=LARGEST_NUMBER, send_max_length=LARGEST_NUMBER)


def _operator_push(db: Database, charger_id: str, update_type: str | None) -> ListPush:
    catalogue = catalogue_from(db)
    state = local_lists.list_state(db, charger_id)
    if update_type is None:
        update_type = "Differential" if state.complete else "Full"
    if update_type == "Differential":
        return differential_push(catalogue, charger_id, _ONE_MESSAGE, state.version)
    return full_push(catalogue, charger_id, _ONE_MESSAGE)


def local_list_update(db: Database, charger_id: str, update_type: str | None) -> dict[str, Any]:
    """A SendLocalList from the card table in one message: Differential from the version
    the charger holds when it holds all of it (and none was asked for explicitly), else
    Full."""
    push = _operator_push(db, charger_id, update_type)
    wire = json.loads(push.text(1))
    return {
        "list_version": wire["listVersion"],
        "update_type": wire["updateType"],
        "local_authorization_list": wire["localAuthorizationList"],
    }


@on_answer("SendLocalList")
def _local_list_sent(
    db: Database, charger_id: str, request: dict[str, Any], answer: dict[str, Any], now: str
) -> None:
    if answer.get("status") != "Accepted":
        return
    push = _operator_push(db, charger_id, request.get("updateType"))
    if json.loads(push.text(1)) == request:
        # The card table's list, as the edge made it for this charger.
        accepted = AcceptedPart(
            card_version=push.card_version,
            push_type=push.push_type,
            digest=push.digest,
            part=1,
            parts=1,
            list_version=push.last_version,
            held=push.held,
            cards=push.cards,
            max_length=push.max_length,
        )
        local_lists.record_part_accepted(db, charger_id, accepted, now)
    else:
        local_lists.record_other_list(db, charger_id, request["listVersion"], now)


@on_answer("GetLocalListVersion")
def _local_list_reported(
    db: Database, charger_id: str, request: dict[str, Any], answer: dict[str, Any], now: str
) -> None:
    local_lists.record_reported_version(db, charger_id, answer["listVersion"], now)


# -- Smart charging ------------------------------------------------------------------


@on_request("SetChargingProfile")
def _profile_sent(db: Database, charger_id: str, request: dict[str, Any], now: str) -> None:
    profile = request["csChargingProfiles"]
    source = _profile_source(profile["chargingProfileId"])
    charging_profiles.record_profile_sent(
        db, charger_id, request["connectorId"], profile, source, now
    )


@on_answer("SetChargingProfile")
def _profile_answered(
    db: Database, charger_id: str, request: dict[str, Any], answer: dict[str, Any], now: str
) -> None:
    profile_id = request["csChargingProfiles"]["chargingProfileId"]
    if answer.get("status") == "Accepted":
        charging_profiles.accept_profile(db, charger_id, profile_id, now)
    else:
        charging_profiles.delete_profile(db, charger_id, profile_id)


@on_answer("ClearChargingProfile")
def _profiles_cleared(
    db: Database, charger_id: str, request: dict[str, Any], answer: dict[str, Any], now: str
) -> None:
    if answer.get("status") == "Accepted":
        charging_profiles.delete_matching_profiles(
            db,
            charger_id,
            profile_id=request.get("id"),
            connector_id=request.get("connectorId"),
            purpose=request.get("chargingProfilePurpose"),
            stack_level=request.get("stackLevel"),
        )


def _profile_source(profile_id: int) -> str:
    return "site_limit" if profile_id >= SITE_LIMIT_PROFILE_ID_BASE else "operator"


# -- Security: installed certificates ------------------------------------------------


@on_answer("GetInstalledCertificateIds")
def _certificates_reported(
    db: Database, charger_id: str, request: dict[str, Any], answer: dict[str, Any], now: str
) -> None:
    hashes = answer.get("certificateHashData") or []
    certificates.replace_installed_certificates(
        db, charger_id, request["certificateType"], hashes, now
    )


@on_answer("DeleteCertificate")
def _certificate_deleted(
    db: Database, charger_id: str, request: dict[str, Any], answer: dict[str, Any], now: str
) -> None:
    if answer.get("status") == "Accepted":
        serial_number = request["certificateHashData"]["serialNumber"]
        certificates.delete_installed_certificate(db, charger_id, serial_number)
