"""Periodic work for the whole site: reservations that expired, local lists behind.

Calls to chargers (local list pushes) run in charger lanes, concurrently and each bounded
by the response timeout: a charger that never answers holds up only its own push, never
the other chargers' nor the next round of this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from edge.clock import utc_now
from edge.ocpp.charger_lanes import ChargerLanes
from edge.ocpp.command_effects import expire_reservations
from edge.ocpp.local_list import chargers_behind, sync_local_list
from edge.ocpp.server import OcppServer

log = logging.getLogger(__name__)

EVERY_SECONDS = 60.0


async def run_site_tasks(server: OcppServer, stop: asyncio.Event) -> None:
    async with ChargerLanes() as lanes:
        while not stop.is_set():
            expired = await server.context.store.run(
                functools.partial(expire_reservations, now=utc_now())
            )
            if expired:
                log.info("%d reservations expired", expired)
            if server.settings.push_local_list:
                for charger_id in await chargers_behind(server):
                    session = server.sessions.get(charger_id)
                    # A pending charger is told nothing, least of all the site's cards.
                    if session is None or session.registration != "accepted":
                        continue
                    if not lanes.busy(charger_id):
                        sync = functools.partial(sync_local_list, server, charger_id)
                        lanes.submit(charger_id, sync)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=EVERY_SECONDS)

