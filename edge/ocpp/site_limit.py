"""Holding the site under its power limit: each running transaction gets a fair share
as a TxProfile, re-balanced whenever a transaction starts or stops.

Shares go out in charger lanes (edge.ocpp.charger_lanes): concurrently, each call bounded
by the response timeout, and each charger's lane sends the newest shares when it runs.
A charger that never answers delays only its own share, never the others' nor the next
re-balance.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from sqlite_utils import Database

from contract.runtime import until_stopped
from edge.events import SiteEvent, TransactionStarted, TransactionStopped
from edge.ocpp.charger_lanes import ChargerLanes
from edge.ocpp.commands import CommandError, send_command
from edge.settings import SmartChargingSettings
from edge.smart_charging import SITE_LIMIT_PROFILE_ID_BASE, fair_shares, site_limit_profile
from edge.store import charging_profiles, transactions

if TYPE_CHECKING:
    from edge.site import SiteContext

log = logging.getLogger(__name__)


Key = tuple[str, int]  # (charger id, connector id)
Share = tuple[int, float]  # (transaction id, limit in W)


class SiteLimitBalancer:
    def __init__(self, site: SiteContext, settings: SmartChargingSettings) -> None:
        self.site = site
        self.settings = settings
        self._changed = asyncio.Event()
        self._lanes = ChargerLanes()
        # The newest share of every running transaction, as the last re-balance made it.
        self._shares: dict[Key, Share] = {}

    def on_event(self, event: SiteEvent) -> None:
        if isinstance(event, TransactionStarted | TransactionStopped):
            self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._changed.set()  # once at start: the last run may have left shares behind
        async with self._lanes:
            while not await until_stopped(stop, or_when=self._changed):
                self._changed.clear()
                await self.rebalance()

    async def rebalance(self) -> dict[Key, float]:
        """Work out every running transaction's share; each connected charger holding a
        share it does not have yet gets it sent in its lane."""
        running, sent = await self.site.store.run(_running_and_sent)
        shares = fair_shares(
            self.settings.site_limit_w,
            {key: float(self.settings.connector_max_w) for key in running},
        )
        self._shares = {key: (running[key], limit) for key, limit in shares.items()}
        behind = {  # a dict for its order: the transactions'
            charger_id: True
            for (charger_id, connector_id), share in self._shares.items()
            if sent.get((charger_id, connector_id)) != share
            # Offline: its share is still kept free for it.
            and self.site.chargers.is_connected(charger_id)
        }
        for charger_id in behind:
            self._lanes.submit(charger_id, functools.partial(self._send_shares, charger_id))
        return shares

    async def _send_shares(self, charger_id: str) -> None:
        """Send the charger the newest shares it does not hold yet, one by one."""
        _, sent = await self.site.store.run(_running_and_sent)
        for (charger, connector_id), share in list(self._shares.items()):
            if charger != charger_id or sent.get((charger, connector_id)) == share:
                continue
            if self._shares.get((charger, connector_id)) != share:
                continue  # replaced by a newer re-balance meanwhile: the lane runs again
            if not self.site.chargers.is_connected(charger_id):
                return
            transaction_id, limit = share
            profile = site_limit_profile(
                connector_id, transaction_id, limit, self.settings.profile_stack_level
            )
            try:
                await send_command(
                    self.site,
                    charger_id,
                    "SetChargingProfile",
                    {"connector_id": connector_id, "cs_charging_profiles": profile},
                    answer_within=self.site.settings.response_timeout,
                )
            except CommandError as error:
                log.warning("site limit share not sent to %s: %s", charger_id, error)


def _running_and_sent(
    db: Database,
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], tuple[int, float]]]:
    running = transactions.open_transaction_ids(db)
    return running, charging_profiles.accepted_site_limit_profiles(db, SITE_LIMIT_PROFILE_ID_BASE)
