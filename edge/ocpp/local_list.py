"""Keeping each charger's OCPP local authorization list equal to the card table, as far
as the charger can hold it, so chargers authorize cards themselves even while the edge
restarts (docs/ocpp.md, "Local lists").

After each boot the edge reads the charger's four local-list keys once (GetConfiguration);
a charger without LocalAuthListManagement, or with its list disabled, is left alone.
Otherwise it gets what it lacks (edge/ocpp/local_list_plan.py): a Differential from the
version it holds, or a Full list, in parts of at most its SendLocalListMaxLength. A
refusal is not tried again at once: the charger waits `[ocpp.local_list] retry_seconds`,
doubled at each refusal in a row, until it reboots or a card changes.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlite_utils import Database

from edge.clock import format_utc, parse_timestamp, utc_now_text
from edge.ocpp.commands import (
    ChargerOffline,
    ChargerRefused,
    ChargerTimeout,
    CommandError,
    PreparedCall,
    send_command,
    send_prepared,
)
from edge.ocpp.local_list_limits import ListLimits, read_limits, retry_delay
from edge.ocpp.local_list_plan import Catalogue, ListPush, Next, choose_push
from edge.store import local_lists
from edge.store.local_lists import LIST_KEYS, AcceptedPart, SyncFacts

if TYPE_CHECKING:
    from edge.site import SiteContext

log = logging.getLogger(__name__)


async def sync_local_list(site: SiteContext, charger_id: str) -> None:
    """Bring the charger's list to the card table's version, within its limits; one push
    per charger at a time. Whatever the charger answers ends here, recorded."""
    async with site.local_lists.lock(charger_id):
        try:
            await _sync(site, charger_id)
        except ChargerOffline:
            log.info("%s went offline during its local list push; it goes on later", charger_id)
        except CommandError as error:  # the store refused (unknown charger, bad request)
            log.warning("local list for %s not synchronised: %s", charger_id, error)


async def _sync(site: SiteContext, charger_id: str) -> None:
    settings, store = site.settings, site.store
    facts = await store.run(functools.partial(local_lists.sync_facts, charger_id=charger_id))
    if facts.state.keys_read_at is None or facts.state.keys_read_boot != facts.boot:
        if not await _read_keys(site, charger_id, facts):
            return
        facts = await store.run(functools.partial(local_lists.sync_facts, charger_id=charger_id))
    limits = read_limits(facts.configuration, settings.local_list)
    skipped = limits.skip_reason()
    if skipped is not None:
        await _skip(site, charger_id, facts, skipped)
        return
    if _waiting(facts):
        return
    try:
        reported = await send_command(
            site, charger_id, "GetLocalListVersion", {}, answer_within=settings.response_timeout
        )
    except (ChargerRefused, ChargerTimeout) as error:
        await _refused(site, charger_id, facts, f"GetLocalListVersion: {error}")
        return
    version = int(reported.response["listVersion"])
    if version < 0:
        await _skip(site, charger_id, facts, f"it reports listVersion {version}: no local list")
        return
    catalogue = await site.local_lists.catalogue(facts.card_version, store.run)
    chosen = choose_push(site.local_lists, catalogue, charger_id, limits, facts.state, version)
    if chosen is None:
        if facts.state.status != "listed":
            await store.run(functools.partial(_listed, charger_id=charger_id))
        return
    await _send_parts(site, charger_id, facts, catalogue, limits, chosen)


async def _read_keys(site: SiteContext, charger_id: str, facts: SyncFacts) -> bool:
    """GetConfiguration of the four keys (its answer lands in the configuration
    snapshot); False when the push cannot go on now."""
    try:
        await send_command(
            site,
            charger_id,
            "GetConfiguration",
            {"key": list(LIST_KEYS)},
            answer_within=site.settings.response_timeout,
        )
    except ChargerRefused as error:
        # A charger that cannot say gets the documented defaults.
        log.info("%s: its local-list keys are unknown (%s); defaults used", charger_id, error)
    except ChargerTimeout as error:
        await _refused(site, charger_id, facts, f"GetConfiguration: {error}")
        return False
    await site.store.run(
        functools.partial(
            local_lists.record_keys_read, charger_id=charger_id, boot=facts.boot, now=utc_now_text()
        )
    )
    return True


async def _send_parts(
    site: SiteContext,
    charger_id: str,
    facts: SyncFacts,
    catalogue: Catalogue,
    limits: ListLimits,
    chosen: Next,
) -> None:
    push, part, fell_back = chosen.push, chosen.part, False
    if part > push.parts:
        last = _accepted(push, push.parts)
        await site.store.run(
            functools.partial(
                local_lists.record_part_accepted,
                charger_id=charger_id,
                accepted=last,
                now=utc_now_text(),
            )
        )
    while part <= push.parts:
        accepted = _accepted(push, part)
        prepared = PreparedCall(
            "SendLocalList",
            push.text(part),
            {"listVersion": accepted.list_version, "updateType": push.update_type(part)},
        )
        what = _part_name(push, part)
        try:
            result = await send_prepared(
                site,
                charger_id,
                prepared,
                functools.partial(_part_answered, charger_id=charger_id, accepted=accepted),
                answer_within=site.settings.response_timeout,
            )
        except (ChargerRefused, ChargerTimeout) as error:
            await _refused(site, charger_id, facts, f"{what}: {error}")
            return
        status = result.response.get("status")
        if status == "Accepted":
            part += 1
            continue
        if push.push_type == "Differential" and part == 1 and not fell_back:
            # OCPP 1.6 §5.15: a refused Differential is followed by the Full list.
            log.info("%s answered %s to a Differential list; sending it Full", charger_id, status)
            push = site.local_lists.push(catalogue, charger_id, limits, "Full", 0)
            part, fell_back = 1, True
            continue
        await _refused(site, charger_id, facts, f"{what} answered {status}")
        return
    log.info(
        "%s holds the card table's list at version %d: %d of %d cards",
        charger_id,
        push.card_version,
        push.held,
        push.cards,
    )


def _accepted(push: ListPush, part: int) -> AcceptedPart:
    return AcceptedPart(
        card_version=push.card_version,
        push_type=push.push_type,
        digest=push.digest,
        part=part,
        parts=push.parts,
        list_version=push.list_version(part),
        held=push.held,
        cards=push.cards,
        max_length=push.max_length,
    )


def _part_name(push: ListPush, part: int) -> str:
    entries = len(push.part_ids(part))
    if push.parts == 1:
        return f"SendLocalList {push.push_type} ({entries} entries)"
    return f"SendLocalList {push.update_type(part)} part {part} of {push.parts} ({entries} entries)"


def _part_answered(
    db: Database, response: dict[str, object], *, charger_id: str, accepted: AcceptedPart
) -> None:
    if response.get("status") == "Accepted":
        local_lists.record_part_accepted(db, charger_id, accepted, utc_now_text())


def _listed(db: Database, *, charger_id: str) -> None:
    local_lists.record_listed(db, charger_id, utc_now_text())


def _waiting(facts: SyncFacts) -> bool:
    """Refused at this card-table version since the charger's last boot, and not yet
    time to try again."""
    state = facts.state
    if state.status != "refused" or state.retry_at is None:
        return False
    if state.failed_version != facts.card_version or state.failed_boot != facts.boot:
        return False
    return parse_timestamp(state.retry_at) > datetime.now(UTC)


async def _skip(site: SiteContext, charger_id: str, facts: SyncFacts, reason: str) -> None:
    if facts.state.status == "skipped" and facts.state.detail == reason:
        return
    log.info("%s gets no local list: %s", charger_id, reason)
    await site.store.run(
        functools.partial(
            local_lists.record_skipped, charger_id=charger_id, detail=reason, now=utc_now_text()
        )
    )


async def _refused(site: SiteContext, charger_id: str, facts: SyncFacts, detail: str) -> None:
    """Record the refusal and when to try again: later at each refusal in a row (at one
    card-table version and boot), up to `retry_max_seconds`."""
    settings = site.settings.local_list

    def refuse(db: Database) -> float:
        state = local_lists.list_state(db, charger_id)
        in_a_row = (
            state.status == "refused"
            and state.failed_version == facts.card_version
            and state.failed_boot == facts.boot
        )
        failures = (state.failures if in_a_row else 0) + 1
        delay = retry_delay(failures, settings)
        now = datetime.now(UTC)
        local_lists.record_refusal(
            db,
            charger_id,
            detail,
            failures,
            format_utc(now + timedelta(seconds=delay)),
            facts.card_version,
            facts.boot,
            format_utc(now),
        )
        return delay

    delay = await site.store.run(refuse)
    log.warning("%s: local list refused (%s); next try in %.0f s", charger_id, detail, delay)


async def chargers_behind(site: SiteContext) -> list[str]:
    """Connected chargers whose list is older than the card table's."""
    connected = site.chargers.connected_ids()

    def behind(db: Database) -> list[str]:
        current = local_lists.card_list_version(db)
        confirmed = local_lists.confirmed_versions(db)
        return [charger for charger in connected if confirmed.get(charger, 0) < current]

    return await site.store.run(behind)
