"""Keeping each charger's OCPP local authorization list equal to the card table, so
chargers authorize cards themselves even while the edge restarts."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlite_utils import Database

from edge.ocpp.commands import CommandError, send_command
from edge.store import local_lists

if TYPE_CHECKING:
    from edge.site import SiteContext

log = logging.getLogger(__name__)


async def sync_local_list(site: SiteContext, charger_id: str) -> None:
    """Ask the charger its list version; send what it lacks (Differential from a version
    the edge confirmed, else Full; Full again if the charger refuses the difference)."""
    store = site.store
    try:
        reported = await send_command(site, charger_id, "GetLocalListVersion", {})
        version = int(reported.response["listVersion"])
        current, confirmed = await store.run(
            lambda db: (
                local_lists.card_list_version(db),
                local_lists.confirmed_version(db, charger_id),
            )
        )
        if version >= max(current, 1):
            return
        update_type = "Differential" if 0 < version == confirmed else "Full"
        sent = await send_command(site, charger_id, "SendLocalList", {"update_type": update_type})
        if sent.response.get("status") != "Accepted" and update_type == "Differential":
            await send_command(site, charger_id, "SendLocalList", {"update_type": "Full"})
    except CommandError as error:
        log.warning("local list for %s not synchronised: %s", charger_id, error)


async def chargers_behind(site: SiteContext) -> list[str]:
    """Connected chargers whose confirmed list version is older than the card table's."""
    connected = site.chargers.connected_ids()

    def behind(db: Database) -> list[str]:
        current = local_lists.card_list_version(db)
        confirmed = local_lists.confirmed_versions(db)
        return [charger for charger in connected if confirmed.get(charger, 0) < current]

    return await site.store.run(behind)
