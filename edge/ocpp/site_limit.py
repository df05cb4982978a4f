"""Holding the site under its power limit: each running transaction gets a fair share
as a TxProfile, re-balanced whenever a transaction starts or stops."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlite_utils import Database

from edge.events import SiteEvent, TransactionStarted, TransactionStopped
from edge.ocpp.commands import CommandError, send_command
from edge.settings import SmartChargingSettings
from edge.smart_charging import SITE_LIMIT_PROFILE_ID_BASE, fair_shares, site_limit_profile

if TYPE_CHECKING:
    from edge.ocpp.server import OcppServer

log = logging.getLogger(__name__)


class SiteLimitBalancer:
    def __init__(self, server: OcppServer, settings: SmartChargingSettings) -> None:
        self.server = server
        self.settings = settings
        self._changed = asyncio.Event()

    def on_event(self, event: SiteEvent) -> None:
        if isinstance(event, TransactionStarted | TransactionStopped):
            self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._changed.set()  # once at start: the last run may have left shares behind
        while not stop.is_set():
            waiting = asyncio.ensure_future(self._changed.wait())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            stopping.cancel()
            if stop.is_set():
                return
            self._changed.clear()
            await self.rebalance()

    async def rebalance(self) -> dict[tuple[str, int], float]:
        """Send every running transaction whose share changed its new TxProfile."""
        running, sent = await self.server.context.store.run(_running_and_sent)
        shares = fair_shares(
            self.settings.site_limit_w,
            {key: float(self.settings.connector_max_w) for key in running},
        )
        for (charger_id, connector_id), limit in shares.items():
            transaction_id = running[(charger_id, connector_id)]
            if sent.get((charger_id, connector_id)) == (transaction_id, limit):
                continue
            if charger_id not in self.server.sessions:
                continue  # offline: its share is still kept free for it
            profile = site_limit_profile(
                connector_id, transaction_id, limit, self.settings.profile_stack_level
            )
            try:
                await send_command(
                    self.server,
                    charger_id,
                    "SetChargingProfile",
                    {"connector_id": connector_id, "cs_charging_profiles": profile},
                )
            except CommandError as error:
                log.warning("site limit share not sent to %s: %s", charger_id, error)
        return shares


def _running_and_sent(
    db: Database,
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], tuple[int, float]]]:
    running = {
        (charger_id, connector_id): transaction_id
        for charger_id, connector_id, transaction_id in db.conn.execute(
            "SELECT charger_id, connector_id, id FROM transactions WHERE stopped_at IS NULL"
        )
    }
    sent = {}
    for charger_id, connector_id, transaction_id, limit in db.conn.execute(
        "SELECT charger_id, connector_id, transaction_id, "
        "json_extract(profile, '$.chargingSchedule.chargingSchedulePeriod[0].limit') "
        "FROM charging_profiles WHERE source = 'site_limit' AND status = 'Accepted' "
        "AND profile_id >= ?",
        (SITE_LIMIT_PROFILE_ID_BASE,),
    ):
        sent[(charger_id, connector_id)] = (transaction_id, float(limit))
    return running, sent
