"""Operator commands from the cloud: each id is recorded before it runs, so a repeat
(the cloud sends until it hears the result) is never run twice; an expired command is
not run; the result goes up as a `command.result` event in the same transaction as the
record of it.

A command the daemon was running when it stopped (a crash, a power cut) is found still
`received` at the next start: run again when running it twice does no harm
(`RERUNNABLE`), else reported `interrupted`, since whether the charger acted is unknown.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from contract import protocol as wire
from contract.operator_actions import OCPP_ACTION_OF
from contract.runtime import until_stopped
from edge.clock import parse_timestamp, utc_now_text
from edge.files.locations import resolve_file_locations
from edge.ocpp.commands import ChargerOffline, CommandError, send_command
from edge.ocpp.payloads import snake_case
from edge.settings import FilesSettings
from edge.store import cloud_commands
from edge.sync.outbox import Outbox
from edge.sync.rollout import FIRMWARE_ACTIONS, is_firmware_command, run_firmware_command

if TYPE_CHECKING:
    from edge.site import SiteContext

log = logging.getLogger(__name__)

# Commands whose second run leaves the charger as one run would: an availability set
# again, a message triggered again, a configuration or list version read again.
RERUNNABLE_ACTIONS = frozenset(
    {
        "ChangeAvailability",
        "TriggerMessage",
        "GetConfiguration",
        "GetLocalListVersion",
        "GetCompositeSchedule",
    }
)
# After a restart chargers reconnect on their own schedule: a command to run again
# waits this long (seconds, and never past its expiry) for its charger, else it is
# reported interrupted.
RERUN_WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class Received:
    """What recording a command found: run it, or why not."""

    run: bool
    reason: str = ""


def record_command(
    db: Database, command: wire.OperatorCommand, outbox: Outbox, now: str
) -> Received:
    """Record `command` by its id; an expired one is answered at once, a repeat ignored."""
    known = cloud_commands.command_status(db, command.id)
    if known is not None:
        return Received(False, f"already received ({known})")
    expired = parse_timestamp(command.expires_at) <= parse_timestamp(now)
    cloud_commands.add_command(
        db,
        command.id,
        command.action,
        command.charger_id,
        command.arguments,
        command.expires_at,
        now,
        expired=expired,
    )
    if expired:
        result = wire.CommandResult(
            command_id=command.id, status="expired", detail=f"expired at {command.expires_at}"
        )
        outbox.append(db, result, now)
        return Received(False, "expired")
    return Received(True)


def record_unreadable_command(
    db: Database, command_id: str, detail: str, outbox: Outbox, now: str
) -> None:
    """A command message that failed validation: recorded as rejected by its id (a
    repeat is then ignored) and reported once."""
    why = f"not a command this edge can run: {detail}"
    if cloud_commands.add_rejected(db, command_id, why, now):
        result = wire.CommandResult(command_id=command_id, status="rejected", detail=why)
        outbox.append(db, result, now)


def finish_command(db: Database, result: wire.CommandResult, outbox: Outbox, now: str) -> None:
    cloud_commands.finish_command(db, result.command_id, result.status, result.detail, now)
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
        action = OCPP_ACTION_OF[command.action]
    if action in FIRMWARE_ACTIONS:  # never here: run_command sends those to rollout
        raise ValueError(f"{action} from the cloud goes through the firmware checks")
    return action, resolve_file_locations(action, arguments, files, command.charger_id)


async def run_command(
    site: SiteContext,
    command: wire.OperatorCommand,
    files: FilesSettings,
    outbox: Outbox,
    clock: Callable[[], str] = utc_now_text,
    stopping: Callable[[], bool] = lambda: False,
) -> wire.CommandResult | None:
    """Run a command the cloud sent, once; None when it was not run (a repeat) or the
    daemon's stop cut it (`stopping()`: it stays `received` for the next start)."""
    store = site.store
    received = await store.run(lambda db: record_command(db, command, outbox, clock()))
    if not received.run:
        log.info("cloud command %s not run: %s", command.id, received.reason)
        return None
    return await _execute(site, command, files, outbox, clock, stopping)


async def _execute(
    site: SiteContext,
    command: wire.OperatorCommand,
    files: FilesSettings,
    outbox: Outbox,
    clock: Callable[[], str] = utc_now_text,
    stopping: Callable[[], bool] = lambda: False,
) -> wire.CommandResult | None:
    """Run a recorded command and record its result."""
    store = site.store
    if is_firmware_command(command):
        result = await run_firmware_command(site, command, files, outbox, clock)
        await store.run(lambda db: finish_command(db, result, outbox, clock()))
        log.info("cloud command %s (%s): %s", command.id, command.action, result.status)
        return result
    try:
        action, arguments = ocpp_request(command, files)
        answer = await send_command(site, command.charger_id, action, arguments)
    except ChargerOffline as error:
        if stopping():
            # The stop closed the charger's connection under the command: not a failure
            # of the command. Left `received`, the next start reports it interrupted or
            # runs it again (rerun_or_report_interrupted).
            log.info("cloud command %s (%s) cut by the stop", command.id, command.action)
            return None
        result = wire.CommandResult(command_id=command.id, status="failed", detail=str(error))
    except (CommandError, KeyError, TypeError, ValueError) as error:
        result = wire.CommandResult(command_id=command.id, status="failed", detail=str(error))
    except Exception as error:
        # Whatever the charger's answer made the OCPP library raise, the command has an
        # outcome: never left `received` behind a task that died.
        log.exception("cloud command %s failed", command.id)
        detail = f"{type(error).__name__}: {error}"
        result = wire.CommandResult(command_id=command.id, status="failed", detail=detail)
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


def interrupted_commands(db: Database) -> list[wire.OperatorCommand]:
    """Commands recorded as received and never finished: the daemon stopped while they
    ran (only called at start, before any command runs)."""
    found = []
    for command_id, action, charger_id, arguments, expires_at in cloud_commands.unfinished_commands(
        db
    ):
        try:
            found.append(
                wire.OperatorCommand(
                    id=command_id,
                    action=action,
                    charger_id=charger_id,
                    arguments=json.loads(arguments),
                    expires_at=expires_at,
                )
            )
        except ValueError:  # a row no command can be made of: reported interrupted
            found.append(
                wire.OperatorCommand(
                    id=command_id, action="ocpp", charger_id=charger_id, expires_at=expires_at
                )
            )
    return found


def rerunnable(command: wire.OperatorCommand, files: FilesSettings) -> bool:
    try:
        action, _ = ocpp_request(command, files)
    except (KeyError, TypeError, ValueError):
        return False
    return action in RERUNNABLE_ACTIONS


def report_interrupted(
    db: Database, command: wire.OperatorCommand, outbox: Outbox, now: str
) -> None:
    expired = parse_timestamp(command.expires_at) <= parse_timestamp(now)
    result = wire.CommandResult(
        command_id=command.id,
        status="expired" if expired else "interrupted",
        detail=f"expired at {command.expires_at}, not run again"
        if expired
        else "the edge stopped while it ran: whether the charger acted is unknown",
    )
    finish_command(db, result, outbox, now)


async def rerun_or_report_interrupted(
    site: SiteContext,
    files: FilesSettings,
    outbox: Outbox,
    stop: asyncio.Event,
    clock: Callable[[], str] = utc_now_text,
    wait_seconds: float = RERUN_WAIT_SECONDS,
) -> None:
    """At start: every command a previous run left `received` is reported interrupted,
    or, when running it again is harmless, run again once its charger is back."""
    store = site.store
    found = await store.run(interrupted_commands)
    again = []
    for command in found:
        if rerunnable(command, files) and parse_timestamp(command.expires_at) > parse_timestamp(
            clock()
        ):
            again.append(command)
            continue
        await store.run(
            functools.partial(report_interrupted, command=command, outbox=outbox, now=clock())
        )
        log.warning("cloud command %s (%s) was interrupted by a stop", command.id, command.action)
    deadline = time.monotonic() + wait_seconds
    for command in again:
        while not site.chargers.is_connected(command.charger_id) and time.monotonic() < deadline:
            if parse_timestamp(command.expires_at) <= parse_timestamp(clock()):
                break
            if await until_stopped(stop, 1.0):
                break
        if site.chargers.is_connected(command.charger_id) and not stop.is_set():
            log.info(
                "cloud command %s (%s) interrupted by a stop: run again", command.id, command.action
            )
            await _execute(site, command, files, outbox, clock, stop.is_set)
        elif not stop.is_set():
            await store.run(
                functools.partial(report_interrupted, command=command, outbox=outbox, now=clock())
            )
