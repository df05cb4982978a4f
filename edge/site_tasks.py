"""Periodic work for the whole site: reservations that expired, local lists behind,
pending chargers unseen for too long.

Calls to chargers (local list pushes) run in charger lanes, concurrently and each bounded
by the response timeout: a charger that never answers holds up only its own push, never
the other chargers' nor the next round of this loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlite_utils import Database

from contract.runtime import until_stopped
from edge.clock import format_utc, now_ms, utc_now_text
from edge.ocpp.charger_lanes import ChargerLanes
from edge.ocpp.local_list import chargers_behind, sync_local_list
from edge.site import SiteContext
from edge.store import chargers, commands, message_log, reservations
from edge.store.writer import StoreWriter

log = logging.getLogger(__name__)

EVERY_SECONDS = 60.0
# Forgetting stale pending chargers looks at the transactions table: hourly is enough.
FORGET_PENDING_EVERY_SECONDS = 3600.0


async def run_site_tasks(site: SiteContext, stop: asyncio.Event) -> None:
    forgotten_at = -FORGET_PENDING_EVERY_SECONDS
    async with ChargerLanes() as lanes:
        while not stop.is_set():
            expired = await site.store.run(
                functools.partial(reservations.expire_reservations, now=utc_now_text())
            )
            if expired:
                log.info("%d reservations expired", expired)
            if time.monotonic() - forgotten_at >= FORGET_PENDING_EVERY_SECONDS:
                forgotten_at = time.monotonic()
                await forget_stale_pending_chargers(site)
            if site.settings.push_local_list:
                for charger_id in await chargers_behind(site):
                    # A pending charger is told nothing, least of all the site's cards.
                    if not site.chargers.is_accepted(charger_id):
                        continue
                    if not lanes.busy(charger_id):
                        sync = functools.partial(sync_local_list, site, charger_id)
                        lanes.submit(charger_id, sync)
            await until_stopped(stop, EVERY_SECONDS)


async def forget_stale_pending_chargers(site: SiteContext) -> list[str]:
    """Delete pending chargers unseen for `pending_charger_days` (not connected ones)."""
    days = site.settings.pending_charger_days
    unseen_since = format_utc(datetime.now(UTC) - timedelta(days=days))
    connected = frozenset(site.chargers.connected_ids())
    forgotten: list[str] = await site.store.run(
        functools.partial(chargers.forget_stale_pending, unseen_since=unseen_since, keep=connected)
    )
    if forgotten:
        log.info(
            "forgot %d pending charger(s) unseen for %d days: %s",
            len(forgotten),
            days,
            ", ".join(forgotten[:10]) + (" ..." if len(forgotten) > 10 else ""),
        )
    return forgotten


async def prune_history(
    store: StoreWriter, message_log_days: int, command_history_days: int, stop: asyncio.Event
) -> None:
    """Keep `message_log_days` of OCPP frames and `command_history_days` of commands (0:
    all of them): check at start, then hourly, in small steps."""
    chunk = 5000
    while not stop.is_set():
        steps: list[Callable[[Database], int]] = []
        if message_log_days:
            before_ms = now_ms() - message_log_days * 86_400_000
            steps.append(
                functools.partial(
                    message_log.prune_oldest_messages, before_ms=before_ms, limit=chunk
                )
            )
        if command_history_days:
            before = format_utc(datetime.now(UTC) - timedelta(days=command_history_days))
            steps.append(
                functools.partial(commands.prune_oldest_commands, before=before, limit=chunk)
            )
        for prune in steps:
            while await store.run(prune) == chunk and not stop.is_set():
                pass
        await until_stopped(stop, 3600)
