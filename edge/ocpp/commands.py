"""Calls from the edge to a charger: the 26 CSMS-initiated actions of OCPP 1.6 and its
security whitepaper, each awaited with a timeout and its outcome stored.

`send_command` is the one way in, used by the local API, the CLI and the edge's own
features (site power limit, local list pushes). The request is validated, then
recorded before it goes on the wire (a request that breaks its schema is refused
and never stored, whether the charger is connected or not); the answer, the
charger's CALLERROR, a timeout or "offline" is recorded after. Whatever the charger
answers ends as one of those outcomes: nothing it sends can raise anything but a
`CommandError` here. What a central system must remember from an answer (configuration,
availability, reservations, list versions, profiles, certificates) is applied by
`edge.ocpp.command_effects` in the same transaction as the outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from sqlite_utils import Database

from edge.clock import utc_now_text
from edge.ocpp.command_effects import apply_answer, apply_request, prepare_arguments
from edge.ocpp.frames import bounded
from edge.ocpp.local_list_limits import reported_send_max_length
from edge.ocpp.payloads import to_wire
from edge.ocpp.schemas import validate_request
from edge.ocpp.session import CallFailed, ConnectionLost
from edge.smart_charging import profile_problems
from edge.store import chargers, commands, local_lists
from edge.store.commands import CommandOutcome
from edge.store.database import savepoint

if TYPE_CHECKING:
    from edge.site import SiteContext

log = logging.getLogger(__name__)

CSMS_INITIATED = (
    # Core, firmware management, local auth list, reservation, smart charging, remote trigger
    "CancelReservation",
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "ClearChargingProfile",
    "DataTransfer",
    "GetCompositeSchedule",
    "GetConfiguration",
    "GetDiagnostics",
    "GetLocalListVersion",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "ReserveNow",
    "Reset",
    "SendLocalList",
    "SetChargingProfile",
    "TriggerMessage",
    "UnlockConnector",
    "UpdateFirmware",
    # Security whitepaper
    "CertificateSigned",
    "DeleteCertificate",
    "ExtendedTriggerMessage",
    "GetInstalledCertificateIds",
    "GetLog",
    "InstallCertificate",
    "SignedUpdateFirmware",
)

DEFAULT_TIMEOUT = 30.0


class CommandError(Exception):
    """A command did not get an answer; `kind` says why (for HTTP status mapping)."""

    kind = "failed"

    def __init__(self, message: str, command_id: int | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


class UnknownCharger(CommandError):
    kind = "unknown_charger"


class ChargerOffline(CommandError):
    kind = "offline"


class InvalidArguments(CommandError):
    kind = "invalid"


class ChargerTimeout(CommandError):
    kind = "timeout"


class ChargerRefused(CommandError):
    """The charger answered with a CALLERROR, or with an answer that breaks OCPP-J or the
    response schema (`code` then names the fault, the description says so)."""

    kind = "callerror"

    def __init__(self, message: str, command_id: int, code: str) -> None:
        super().__init__(message, command_id)
        self.code = code


@dataclass(frozen=True)
class CommandResult:
    command_id: int
    charger_id: str
    action: str
    response: dict[str, Any]


def build_payload(action: str, arguments: dict[str, Any]) -> Any:
    """The library's request dataclass for `action`, from snake_case arguments.

    Validated against the official schema here, so a bad request is the caller's
    error (422) and never reaches the charger.
    """
    if action not in CSMS_INITIATED:
        raise InvalidArguments(
            f"{action} is not a command a central system sends; one of: {', '.join(CSMS_INITIATED)}"
        )
    try:
        payload = getattr(call, action)(**arguments)
    except TypeError as error:
        raise InvalidArguments(f"{action}: {error}") from error
    wire = to_wire(payload)
    try:
        validate_request(action, wire)
    except OCPPError as error:
        raise InvalidArguments(error.description) from error
    problems = []
    if action == "SetChargingProfile":
        problems = profile_problems(wire["connectorId"], wire["csChargingProfiles"])
    purpose = wire.get("chargingProfile", {}).get("chargingProfilePurpose", "TxProfile")
    if action == "RemoteStartTransaction" and purpose != "TxProfile":
        problems = ["RemoteStartTransaction takes a TxProfile"]
    if problems:
        raise InvalidArguments(f"{action}: " + "; ".join(problems))
    return payload


def wire_request(
    db: Database, charger_id: str, action: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """The request as it goes on the wire, with the edge's allocations, checked against
    its schema and against what the charger said it takes."""
    payload = build_payload(action, prepare_arguments(db, charger_id, action, arguments))
    request: dict[str, Any] = to_wire(payload)
    if action == "SendLocalList":
        _check_list_fits(db, charger_id, request)
    return request


def _check_list_fits(db: Database, charger_id: str, request: dict[str, Any]) -> None:
    """Refuse an operator's SendLocalList longer than the charger said it takes: it
    would answer Failed, or drop the connection on the oversized frame."""
    most = reported_send_max_length(local_lists.list_keys(db, charger_id))
    entries = len(request.get("localAuthorizationList") or [])
    if most is not None and entries > most:
        raise InvalidArguments(
            f"{charger_id} takes at most {most} entries in one SendLocalList (its "
            f"SendLocalListMaxLength), this one has {entries}: send fewer at a time "
            "(updateType Differential), or leave the card table's list to the edge, which "
            "sends it in parts ([ocpp] push_local_list)"
        )


async def send_command(
    site: SiteContext,
    charger_id: str,
    action: str,
    arguments: dict[str, Any],
    *,
    answer_within: float = DEFAULT_TIMEOUT,
) -> CommandResult:
    """Send `action` to `charger_id` and return its answer; raise CommandError otherwise."""
    store = site.store
    connected = site.chargers.is_connected(charger_id)
    requested_at = utc_now_text()

    def record_request(db: Database) -> tuple[int, dict[str, Any]]:
        if chargers.get_charger(db, charger_id) is None:
            raise UnknownCharger(f"no charger {charger_id} at this site")
        if not connected:
            # Checked as if it were sent (422 for a bad one), allocations undone.
            with savepoint(db, "offline_check", keep=False):
                wire_request(db, charger_id, action, arguments)
            request: dict[str, Any] = {"arguments": arguments}
            outcome: CommandOutcome = "offline"
        else:
            # Allocations (reservation id, list version) roll back if validation fails.
            request, outcome = wire_request(db, charger_id, action, arguments), "sent"
        finished_at = requested_at if not connected else None
        command_id = commands.add_command(
            db, charger_id, action, request, outcome, requested_at, finished_at
        )
        if connected:
            apply_request(db, charger_id, action, request)
        return command_id, request

    if action not in CSMS_INITIATED:
        raise InvalidArguments(
            f"{action} is not a command a central system sends; one of: {', '.join(CSMS_INITIATED)}"
        )
    command_id, request = await store.run(record_request)
    if not connected:
        raise ChargerOffline(f"charger {charger_id} is not connected", command_id)

    def effects(db: Database, response: dict[str, Any]) -> None:
        apply_answer(db, charger_id, action, request, response)

    return await _exchange(
        site, charger_id, action, command_id, request, None, effects, answer_within
    )


@dataclass(frozen=True)
class PreparedCall:
    """A request the edge made and checked against its schema once, to send as it is to
    any number of chargers (the parts of local lists): `text` is its JSON payload,
    `fields` the few of its fields read after the answer."""

    action: str
    text: str
    fields: dict[str, Any]


async def send_prepared(
    site: SiteContext,
    charger_id: str,
    prepared: PreparedCall,
    on_answer: Callable[[Database, dict[str, Any]], None],
    *,
    answer_within: float = DEFAULT_TIMEOUT,
) -> CommandResult:
    """`send_command` for a `PreparedCall`: stored and sent without building or checking
    it again, `on_answer(db, response)` applied in the same transaction as the answer
    (instead of the action's registered effects)."""
    action = prepared.action
    if action not in CSMS_INITIATED:
        raise InvalidArguments(f"{action} is not a command a central system sends")
    connected = site.chargers.is_connected(charger_id)
    requested_at = utc_now_text()

    def record_request(db: Database) -> int:
        if chargers.get_charger(db, charger_id) is None:
            raise UnknownCharger(f"no charger {charger_id} at this site")
        outcome: CommandOutcome = "sent" if connected else "offline"
        return commands.add_command_text(
            db,
            charger_id,
            action,
            prepared.text,
            outcome,
            requested_at,
            None if connected else requested_at,
        )

    command_id = await site.store.run(record_request)
    if not connected:
        raise ChargerOffline(f"charger {charger_id} is not connected", command_id)
    return await _exchange(
        site,
        charger_id,
        action,
        command_id,
        prepared.fields,
        prepared.text,
        on_answer,
        answer_within,
    )


async def _exchange(
    site: SiteContext,
    charger_id: str,
    action: str,
    command_id: int,
    request: dict[str, Any],
    text: str | None,
    effects: Callable[[Database, dict[str, Any]], None],
    answer_within: float,
) -> CommandResult:
    """Send a recorded command, await its answer, record the outcome with its effects."""
    store = site.store
    try:
        async with asyncio.timeout(answer_within):
            response = await site.chargers.send(charger_id, action, request, text=text)
    except TimeoutError:
        await _finish(site, command_id, "timeout", None, None, None)
        raise ChargerTimeout(
            f"charger {charger_id} did not answer {action} within {answer_within:g} s", command_id
        ) from None
    except ConnectionLost as error:
        await _finish(site, command_id, "offline", None, None, error.description)
        raise ChargerOffline(f"charger {charger_id}: {error.description}", command_id) from error
    except CallFailed as error:
        code = error.code or "GenericError"
        await _finish(site, command_id, "callerror", None, code, error.description)
        raise ChargerRefused(
            f"charger {charger_id} answered {action} with {code}: {error.description}",
            command_id,
            code,
        ) from error

    def record_answer(db: Database) -> None:
        commands.finish_command(db, command_id, "answered", response, None, None, utc_now_text())
        effects(db, response)

    try:
        await store.run(record_answer)
    except Exception as error:  # a valid answer the store cannot take: recorded as such
        log.exception("%s: the answer to %s could not be stored", charger_id, action)
        description = f"the charger's answer could not be stored: {error}"
        await _finish(site, command_id, "callerror", response, "InternalError", description)
        raise ChargerRefused(description, command_id, "InternalError") from error
    log.info("%s answered %s: %s", charger_id, action, bounded(str(response), 500))
    return CommandResult(command_id, charger_id, action, response)


async def _finish(
    site: SiteContext,
    command_id: int,
    outcome: CommandOutcome,
    response: dict[str, Any] | None,
    code: str | None,
    description: str | None,
) -> None:
    await site.store.run(
        lambda db: commands.finish_command(
            db, command_id, outcome, response, code, description, utc_now_text()
        )
    )
