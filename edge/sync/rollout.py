"""Firmware commands from the cloud: a `firmware_rollout`, or an `ocpp` command carrying
UpdateFirmware or SignedUpdateFirmware, points a charger only at an image this edge
verified against its signed manifest, at the URL of the edge's own file server (built
here: a command naming a location is refused); only a charger among the manifest's
targets; and never a version older than the charger runs unless the operator forced it
(`"force": true`, recorded). A refusal is reported as a `firmware.install` event and as
the command's `rejected` result, both with the reason; an install sent moves on with the
charger's own reports (edge.store.firmware.install_status_reported).

Operators at the site (local API, CLI) are not held to this: their UpdateFirmware goes
as they wrote it (docs/security.md, "Firmware")."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlite_utils import Database

from contract import protocol as wire
from contract.firmware import target_text
from edge.clock import utc_now_text
from edge.files.locations import resolve_file_locations
from edge.files.store import FileNameError
from edge.ocpp.commands import CommandError, send_command
from edge.ocpp.payloads import snake_case
from edge.settings import FilesSettings
from edge.store import firmware as firmware_store
from edge.sync.manifest import is_older, is_target, printable
from edge.sync.outbox import Outbox

if TYPE_CHECKING:
    from edge.site import SiteContext

log = logging.getLogger(__name__)

FIRMWARE_ACTIONS = ("UpdateFirmware", "SignedUpdateFirmware")


class InstallRefused(Exception):
    """A firmware command the edge will not send; the message is the reason."""


@dataclass(frozen=True)
class FirmwareCommand:
    """What a cloud command asks of a charger's firmware: the OCPP action, the image
    the edge holds, the other OCPP arguments (snake_case, no location), and `force`."""

    action: str
    image: str
    arguments: dict[str, Any]
    force: bool


def ocpp_action(command: wire.OperatorCommand) -> str:
    """The OCPP action an operator command carries, read as edge.sync.commands reads it
    (keys in any case, the last of equal ones winning), so that no spelling of a firmware
    command escapes the checks here."""
    if command.action == "firmware_rollout":
        return "UpdateFirmware"
    if command.action != "ocpp":
        return ""
    outer = {snake_case(key): value for key, value in command.arguments.items()}
    return str(outer.get("action", ""))


def is_firmware_command(command: wire.OperatorCommand) -> bool:
    """Whether `command` would point a charger at a firmware image."""
    return ocpp_action(command) in FIRMWARE_ACTIONS


def firmware_command(command: wire.OperatorCommand, now: str) -> FirmwareCommand:
    """What a firmware command asks; InstallRefused when it names a location of its own,
    no image, or a `force` that is not true or false."""
    action = ocpp_action(command)
    outer = {snake_case(key): value for key, value in command.arguments.items()}
    force = outer.pop("force", False)
    if command.action == "firmware_rollout":
        arguments = outer
        # Install at once unless the operator set a time.
        arguments.setdefault("retrieve_date", now)
    else:
        inner = outer.get("arguments") or {}
        if not isinstance(inner, dict):
            raise InstallRefused(f"{action}: the arguments are not an object")
        arguments = {snake_case(key): value for key, value in inner.items()}
        force = arguments.pop("force", force)
    if not isinstance(force, bool):
        raise InstallRefused(f"force is true or false, not {force!r}")
    firmware = arguments.get("firmware")
    named_inside = isinstance(firmware, dict) and any(
        snake_case(str(key)) == "location" for key in firmware
    )
    if "location" in arguments or named_inside:
        raise InstallRefused(
            "a command from the cloud may not name a location: chargers are only sent to "
            "images this edge verified, at its own file server; name the image instead "
            '({"image": "<name>"})'
        )
    image = arguments.pop("image", None)
    if not isinstance(image, str) or not image:
        raise InstallRefused(f'{action} from the cloud names the image to install ("image")')
    return FirmwareCommand(action, image, arguments, force)


@dataclass(frozen=True)
class _Planned:
    install_id: int | None
    install: firmware_store.Install
    arguments: dict[str, Any]


def plan_install(
    db: Database,
    charger_id: str,
    firmware: FirmwareCommand,
    files: FilesSettings,
) -> tuple[firmware_store.Install, dict[str, Any]]:
    """The install and the OCPP arguments (with the edge's URL), or InstallRefused."""
    found = firmware_store.verified_image(db, firmware.image)
    if isinstance(found, str):
        raise InstallRefused(found)
    manifest = found.manifest
    charger = firmware_store.charger_firmware(db, charger_id)
    if charger is None:
        raise InstallRefused(f"no charger {charger_id} at this site")
    if charger.registration != "accepted":
        raise InstallRefused(f"charger {charger_id} is not accepted at this site")
    if not is_target(manifest.targets, charger.vendor, charger.model):
        said = (
            f"{printable(charger.vendor)} {printable(charger.model)}"
            if charger.vendor and charger.model
            else "a vendor and model it has not given in a BootNotification"
        )
        targets = ", ".join(target_text(target) for target in manifest.targets)
        raise InstallRefused(
            f"charger {charger_id} ({said}) is not among the targets of {firmware.image} "
            f"({targets})"
        )
    if not firmware.force:
        for version, source in charger.versions():
            if is_older(manifest.version, version):
                raise InstallRefused(
                    f"{firmware.image} is version {manifest.version}, older than the "
                    f"{printable(version)} {source} on {charger_id}; send it with force=true "
                    "to go back"
                )
    try:
        arguments = resolve_file_locations(
            firmware.action, {**firmware.arguments, "image": firmware.image}, files
        )
    except (CommandError, FileNameError) as error:
        raise InstallRefused(str(error)) from None
    install = firmware_store.Install(
        charger_id, firmware.image, manifest.version, firmware.force, None
    )
    return install, arguments


async def run_firmware_command(
    site: SiteContext,
    command: wire.OperatorCommand,
    files: FilesSettings,
    outbox: Outbox,
    clock: Callable[[], str] = utc_now_text,
) -> wire.CommandResult:
    """Check, send and follow a firmware command from the cloud; its result."""
    store = site.store
    charger_id = command.charger_id
    try:
        firmware: FirmwareCommand | None = firmware_command(command, clock())
        refusal = ""
    except InstallRefused as error:
        firmware, refusal = None, str(error)

    def plan(db: Database) -> _Planned | str:
        now = clock()
        image = firmware.image if firmware else ""
        force = firmware.force if firmware else False
        try:
            if firmware is None:
                raise InstallRefused(refusal)
            install, arguments = plan_install(db, charger_id, firmware, files)
        except InstallRefused as error:
            reason = str(error)
            version = (firmware_store.held_version(db, image) or "") if image else ""
            refused = firmware_store.Install(charger_id, image, version, force, command.id)
            firmware_store.record_install(db, refused, "refused", reason, now)
            outbox.append(db, refused.event("refused", reason), now)
            return reason
        install = dataclasses.replace(install, cloud_command_id=command.id)
        install_id = firmware_store.record_install(db, install, "installing", "sent", now)
        return _Planned(install_id, install, arguments)

    planned = await store.run(plan)
    if isinstance(planned, str) or firmware is None:
        reason = planned if isinstance(planned, str) else refusal
        log.warning("cloud command %s refused: %s", command.id, reason)
        return wire.CommandResult(command_id=command.id, status="rejected", detail=reason)
    command_id: int | None = None
    failure: str | None = None
    response: dict[str, Any] | None = None
    try:
        answer = await send_command(site, charger_id, firmware.action, planned.arguments)
    except CommandError as error:
        command_id, failure = error.command_id, str(error)
    except Exception as error:  # the charger's session failed: so did the install
        log.exception("firmware command %s to %s failed", command.id, charger_id)
        failure = f"{firmware.action} could not be sent: {error}"
    else:
        command_id, response = answer.command_id, answer.response
        status = response.get("status")
        if status not in (None, "Accepted"):
            failure = f"{firmware.action}: the charger answered {status}"
    install = planned.install
    detail = failure or f"{firmware.action}: {install.image} version {install.version} sent"
    if install.forced:
        detail += " (forced past the version check)"

    def record(db: Database) -> None:
        if planned.install_id is None:
            return
        now = clock()
        event = firmware_store.command_answered(
            db, planned.install_id, command_id, failure, detail, now
        )
        if event is not None:
            outbox.append(db, event, now)

    await store.run(record)
    if failure is None:
        outcome: Literal["done", "failed", "rejected"] = "done"
    else:
        outcome = "rejected" if response is not None else "failed"
    return wire.CommandResult(
        command_id=command.id, status=outcome, detail=detail, response=response
    )
