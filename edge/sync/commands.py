"""Operator commands from the cloud: each id is recorded before it runs, so a repeat
(the cloud sends until it hears the result) is never run twice; an expired command is
not run; the result goes up as a `command.result` event in the same transaction as the
record of it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from edge.clock import parse_timestamp, utc_now
from edge.files.locations import resolve_file_locations
from edge.ocpp.commands import CommandError, send_command
from edge.ocpp.payloads import snake_case
from edge.settings import FilesSettings
from edge.sync import protocol as wire
from edge.sync.outbox import Outbox
from edge.sync.rollout import FIRMWARE_ACTIONS, is_firmware_command, run_firmware_command

if TYPE_CHECKING:
    from edge.ocpp.server import OcppServer

log = logging.getLogger(__name__)

# An operator's action and the OCPP command that carries it out.
OCPP_ACTION = {
    "remote_start": "RemoteStartTransaction",
    "remote_stop": "RemoteStopTransaction",
    "reset": "Reset",
    "change_availability": "ChangeAvailability",
    "unlock": "UnlockConnector",
    "trigger": "TriggerMessage",
}


@dataclass(frozen=True)
class Received:
    """What recording a command found: run it, or why not."""

    run: bool
    reason: str = ""


def record_command(
    db: Database, command: wire.OperatorCommand, outbox: Outbox, now: str
) -> Received:
    """Record `command` by its id; an expired one is answered at once, a repeat ignored."""
    known = db.conn.execute(
        "SELECT status FROM cloud_commands WHERE id = ?", (command.id,)
    ).fetchone()
    if known is not None:
        return Received(False, f"already received ({known[0]})")
    expired = parse_timestamp(command.expires_at) <= parse_timestamp(now)
    db.conn.execute(
        "INSERT INTO cloud_commands (id, action, charger_id, arguments, expires_at, "
        "received_at, status, detail, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            command.id,
            command.action,
            command.charger_id,
            json.dumps(command.arguments),
            command.expires_at,
            now,
            "expired" if expired else "received",
            f"expired at {command.expires_at}" if expired else None,
            now if expired else None,
        ),
    )
    if expired:
        result = wire.CommandResult(
            command_id=command.id, status="expired", detail=f"expired at {command.expires_at}"
        )
        outbox.append(db, result, now)
        return Received(False, "expired")
    return Received(True)


def finish_command(db: Database, result: wire.CommandResult, outbox: Outbox, now: str) -> None:
    db.conn.execute(
        "UPDATE cloud_commands SET status = ?, detail = ?, finished_at = ? WHERE id = ?",
        (result.status, result.detail, now, result.command_id),
    )
    outbox.append(db, result, now)


def ocpp_request(command: wire.OperatorCommand, files: FilesSettings) -> tuple[str, dict[str, Any]]:
    """The OCPP action and its snake_case arguments for an operator command (firmware
    commands excepted: edge.sync.rollout checks and builds those)."""
    arguments = {snake_case(key): value for key, value in command.arguments.items()}
    if command.action == "ocpp":
        action = str(arguments.pop("action", ""))
        inner = arguments.pop("arguments", {})
        arguments = {snake_case(key): value for key, value in dict(inner).items()}
    else:
        action = OCPP_ACTION[command.action]
    if action in FIRMWARE_ACTIONS:  # never here: run_command sends those to rollout
        raise ValueError(f"{action} from the cloud goes through the firmware checks")
    return action, resolve_file_locations(action, arguments, files, command.charger_id)


async def run_command(
    server: OcppServer,
    command: wire.OperatorCommand,
    files: FilesSettings,
    outbox: Outbox,
    clock: Callable[[], str] = utc_now,
) -> wire.CommandResult | None:
    """Run a command the cloud sent, once; None when it was not run (a repeat)."""
    store = server.context.store
    received = await store.run(lambda db: record_command(db, command, outbox, clock()))
    if not received.run:
        log.info("cloud command %s not run: %s", command.id, received.reason)
        return None
    if is_firmware_command(command):
        result = await run_firmware_command(server, command, files, outbox, clock)
        await store.run(lambda db: finish_command(db, result, outbox, clock()))
        log.info("cloud command %s (%s): %s", command.id, command.action, result.status)
        return result
    try:
        action, arguments = ocpp_request(command, files)
        answer = await send_command(server, command.charger_id, action, arguments)
    except (CommandError, KeyError, TypeError, ValueError) as error:
        result = wire.CommandResult(command_id=command.id, status="failed", detail=str(error))
    else:
        status = answer.response.get("status")
        accepted = status in (None, "Accepted", "Unlocked", "Scheduled")
        result = wire.CommandResult(
            command_id=command.id,
            status="done" if accepted else "rejected",
            detail=f"{action}: {status or 'answered'}",
            response=answer.response,
        )
    await store.run(lambda db: finish_command(db, result, outbox, clock()))
    log.info("cloud command %s (%s): %s", command.id, command.action, result.status)
    return result
