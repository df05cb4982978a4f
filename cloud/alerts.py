"""The alerts engine: every `[alerts] interval` it looks at the store and raises what
needs a person, once, and clears it when the condition ends; each alert raised and
cleared is POSTed to a webhook.

The conditions (`judge`, a pure function of one snapshot of the store):

- `edge_offline`: the edge has been offline (its last will, or its goodbye) for
  `edge_offline_after` seconds, by the cloud's clock. Cleared when it is back online.
- `backlog_old`: an edge online for at least `backlog_older_than` seconds still holds
  events older than that which the cloud has not acknowledged (an edge just back from a
  long time offline is given that long to catch up). Cleared when its backlog is synced
  or younger; never judged while the edge is offline (its figures are old).
- `connector_faulted`: a connector has been Faulted for `faulted_after` seconds as far as
  the edge's synced data shows: from the status's time to the newest time the cloud
  holds all the edge's events up to (its newest event, or the time of its last status
  when that said nothing was waiting), both on the edge's clock. A Faulted reported
  within `boot_grace` seconds of the charger's boot counts only from the end of that
  grace. Never raised while the edge is offline (its chargers are "last known", not
  down), and an alert raised stays as it is until the edge says otherwise. Cleared when
  the connector reports another status.
- `refusals_spike`: more than `refusals_count` payloads from one edge refused within
  `refusals_window` seconds; cleared when the window holds half as many or fewer.

Every replica runs the engine; the store lets exactly one raise, clear and notify each
alert (cloud/store/alerts.py). Store calls run in threads; the engine writes only when
something changes, so ingest never waits on it for long; a failing store or webhook is
logged and tried again, never ends the process.

The webhook gets each notice at least once (a notice whose POST outlives the claim's
lease may be sent by another replica too: `X-Ocpp-Cloud-Delivery` tells repeats apart),
retried with back-off up to `webhook_attempts` times. An alert cleared before its
`raised` notice went out is sent once, as cleared (with when it was raised).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine

from cloud.settings import AlertSettings
from cloud.store import alerts as store
from cloud.store.alert_settings import FleetAlertSettings, every_fleets_settings, fleets_of
from cloud.store.alerts import (
    AlertView,
    Clearing,
    EdgeFacts,
    FaultedConnector,
    NewAlert,
    Observation,
)
from cloud.store.times import iso, utc_now
from contract.runtime import until_stopped
from contract.storable import safe_text

log = logging.getLogger(__name__)

# Notices sent in one round (the rest wait for the next).
NOTICES_PER_ROUND = 20
# A claimed notice is another replica's to send after its POST's timeout and this margin.
LEASE_MARGIN_SECONDS = 30.0
# Old cleared alerts and refusal buckets are deleted this often.
PRUNE_EVERY_SECONDS = 3600.0
# Edge text quoted in an alert (a charger id, a status's info) is cut to this.
QUOTED_CHARS = 200
SIGNATURE_HEADER = "X-Ocpp-Cloud-Signature"
TIMESTAMP_HEADER = "X-Ocpp-Cloud-Timestamp"
DELIVERY_HEADER = "X-Ocpp-Cloud-Delivery"
EVENT_HEADER = "X-Ocpp-Cloud-Event"

Key = tuple[str, str, str]  # kind, edge, subject
# The order alerts are raised in when an edge has more than max_open_per_edge.
_PRIORITY = {"edge_offline": 0, "backlog_old": 1, "refusals_spike": 2, "connector_faulted": 3}


# -- the rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    raising: list[NewAlert]
    clearing: list[Clearing]
    held_back: int = 0  # alerts not raised: their edge has max_open_per_edge open
    # Edges and connectors whose figures could not be judged (a time or age beyond any
    # calendar): their alerts are left as they are.
    unjudged: int = 0


# What an edge reports can be any number or time a store holds; arithmetic on one past
# the calendar's ends fails for that edge or connector alone.
_BEYOND_THE_CALENDAR = (OverflowError, ValueError)


def judge(
    observation: Observation,
    rules: AlertSettings,
    now: datetime,
    fleet_rules: Mapping[int, AlertSettings] | None = None,
) -> Judgement:
    """What to raise and clear, given the store's state and the rules: `rules`, or for
    an edge of a fleet that set its own thresholds, `fleet_rules[its fleet]`."""
    edges = {edge.edge_id: edge for edge in observation.edges}
    by_fleet = fleet_rules or {}

    def rules_of(edge_id: str) -> AlertSettings:
        edge = edges.get(edge_id)
        if edge is None or edge.fleet_id is None:
            return rules
        return by_fleet.get(edge.fleet_id, rules)

    candidates: list[NewAlert] = []
    keep: set[Key] = set()  # conditions under which an open alert stays open
    unjudged = 0
    for edge in observation.edges:
        try:
            _judge_presence(edge, rules_of(edge.edge_id), now, candidates, keep)
            _judge_backlog(edge, rules_of(edge.edge_id), now, candidates, keep)
        except _BEYOND_THE_CALENDAR:
            unjudged += 1
            keep.update((kind, edge.edge_id, "") for kind in ("edge_offline", "backlog_old"))
    for fault in observation.faulted:
        try:
            _judge_fault(fault, edges, rules_of(fault.edge_id), candidates, keep)
        except _BEYOND_THE_CALENDAR:
            unjudged += 1
    _judge_refusals(observation, rules, now, candidates, keep, rules_of)
    open_alerts = {(a.kind, a.edge_id, a.subject): a for a in observation.open_alerts}
    clearing = [
        Clearing(
            alert.id,
            _why_cleared(alert.kind, edges.get(alert.edge_id), rules_of(alert.edge_id)),
            alert.edge_id,
        )
        for key, alert in open_alerts.items()
        if key not in keep
    ]
    cleared = {clear.alert_id for clear in clearing}
    open_per_edge = Counter(
        alert.edge_id for alert in observation.open_alerts if alert.id not in cleared
    )
    raising: list[NewAlert] = []
    held_back = 0
    for new in sorted(candidates, key=lambda new: (_PRIORITY[new.kind], new.since)):
        if (new.kind, new.edge_id, new.subject) in open_alerts:
            continue
        if open_per_edge[new.edge_id] >= rules.max_open_per_edge:
            held_back += 1
            continue
        open_per_edge[new.edge_id] += 1
        raising.append(new)
    return Judgement(raising, clearing, held_back, unjudged)


def _judge_presence(
    edge: EdgeFacts,
    rules: AlertSettings,
    now: datetime,
    candidates: list[NewAlert],
    keep: set[Key],
) -> None:
    if not rules.edge_offline_after or edge.state != "offline":
        return
    keep.add(("edge_offline", edge.edge_id, ""))
    since = edge.state_since
    if since is not None and (now - since).total_seconds() >= rules.edge_offline_after:
        detail = f"edge {edge.edge_id} offline since {iso(since)}"
        candidates.append(NewAlert("edge_offline", edge.edge_id, "", since, detail))


def _judge_backlog(
    edge: EdgeFacts,
    rules: AlertSettings,
    now: datetime,
    candidates: list[NewAlert],
    keep: set[Key],
) -> None:
    threshold = rules.backlog_older_than
    if not threshold:
        return
    key: Key = ("backlog_old", edge.edge_id, "")
    if edge.state != "online":
        keep.add(key)  # its figures are as old as its last status: nothing to judge
        return
    oldest = edge.oldest_age_s
    if not edge.backlog or oldest is None or oldest < threshold:
        return
    keep.add(key)
    online_since = edge.state_since
    if online_since is None or (now - online_since).total_seconds() < threshold:
        return  # back online lately: it is given the time to catch up
    measured = edge.figures_at or now
    since = measured - timedelta(seconds=oldest)
    detail = (
        f"edge {edge.edge_id} holds {edge.backlog} events not yet synced, the oldest "
        f"from {iso(since)}"
    )
    candidates.append(NewAlert("backlog_old", edge.edge_id, "", since, detail))


def synced_until(edge: EdgeFacts) -> datetime | None:
    """The newest time (edge clock) up to which the cloud holds all the edge's events:
    its newest event stored, or its last status's time when that said none waited."""
    known = [edge.last_event_at]
    if edge.status_backlog == 0:
        known.append(edge.status_reported_at)
    moments = [moment for moment in known if moment is not None]
    return max(moments) if moments else None


def fault_counts_from(fault: FaultedConnector, rules: AlertSettings) -> datetime:
    """When a Faulted starts to count: its time, or the end of the boot grace when the
    charger reported it while starting."""
    booted = fault.booted_at
    grace = timedelta(seconds=rules.boot_grace)
    if booted is not None and booted <= fault.status_at < booted + grace:
        return booted + grace
    return fault.status_at


def _judge_fault(
    fault: FaultedConnector,
    edges: dict[str, EdgeFacts],
    rules: AlertSettings,
    candidates: list[NewAlert],
    keep: set[Key],
) -> None:
    if not rules.faulted_after:
        return
    subject = f"{fault.charger_id}/{fault.connector_id}"
    keep.add(("connector_faulted", fault.edge_id, subject))
    edge = edges.get(fault.edge_id)
    if edge is None or edge.state != "online":
        return  # stale, not down: judged once the edge is back
    until = synced_until(edge)
    if until is None:
        return
    if (until - fault_counts_from(fault, rules)).total_seconds() < rules.faulted_after:
        return
    charger = safe_text(fault.charger_id[:QUOTED_CHARS])
    error = safe_text(fault.error_code[:QUOTED_CHARS])
    info = f", {safe_text(fault.info[:QUOTED_CHARS])}" if fault.info else ""
    detail = (
        f"charger {charger} of edge {fault.edge_id}: connector {fault.connector_id} "
        f"Faulted since {iso(fault.status_at)} ({error}{info})"
    )
    candidates.append(
        NewAlert(
            "connector_faulted",
            fault.edge_id,
            subject,
            fault.status_at,
            detail,
            charger_id=fault.charger_id,
            connector_id=fault.connector_id,
        )
    )


def _judge_refusals(
    observation: Observation,
    rules: AlertSettings,
    now: datetime,
    candidates: list[NewAlert],
    keep: set[Key],
    rules_of: Callable[[str], AlertSettings] | None = None,
) -> None:
    for source, spike in observation.refusals.items():
        # The source's fleet's count (the window is the configuration's: refusals are
        # counted over it for every edge alike).
        most = (rules_of(source) if rules_of is not None else rules).refusals_count
        if not most:
            continue
        key: Key = ("refusals_spike", source, "")
        if spike.count > most // 2:
            keep.add(key)
        if spike.count > most:
            detail = (
                f"{spike.count} payloads refused from edge {source} in the last "
                f"{rules.refusals_window:.0f} s (more than {most}): GET /api/rejections"
            )
            candidates.append(NewAlert("refusals_spike", source, "", spike.first_at, detail))


def _why_cleared(kind: str, edge: EdgeFacts | None, rules: AlertSettings) -> str:
    if kind == "edge_offline":
        if not rules.edge_offline_after:
            return "alerts on offline edges are turned off"
        return "the edge is online again"
    if kind == "backlog_old":
        if not rules.backlog_older_than:
            return "alerts on backlogs are turned off"
        return "the edge's backlog is synced"
    if kind == "connector_faulted":
        if not rules.faulted_after:
            return "alerts on Faulted connectors are turned off"
        return "the connector reports another status"
    if not rules.refusals_count:
        return "alerts on refusals are turned off"
    return f"refusals in the window are down to half of {rules.refusals_count} or fewer"


# -- the webhook ----------------------------------------------------------------------


class NoticeRefused(Exception):
    """The webhook did not take a notice; the message says how."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 over "TIMESTAMP.BODY"."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def notice_document(alert: AlertView) -> dict[str, Any]:
    """The JSON an alert's notice carries: the alert as it is when sent."""
    state = alert.state
    text = f"{'Alert' if state == 'raised' else 'Cleared'}: {alert.detail}"
    if alert.clear_reason:
        text += f" ({alert.clear_reason})"
    return {
        "id": alert.id,
        "kind": alert.kind,
        "state": state,
        "edge_id": alert.edge_id,
        "subject": alert.subject,
        "charger_id": alert.charger_id,
        "connector_id": alert.connector_id,
        "since": iso(alert.since),
        "raised_at": iso(alert.raised_at),
        "cleared_at": None if alert.cleared_at is None else iso(alert.cleared_at),
        "detail": alert.detail,
        "clear_reason": alert.clear_reason,
        "text": text,
    }


async def post_notice(
    client: httpx.AsyncClient,
    settings: AlertSettings,
    alert: AlertView,
    *,
    public_only: bool = False,
) -> None:
    """POST `alert`'s notice; NoticeRefused unless the webhook answers 2xx in time.
    `public_only`: refuse a webhook whose host has a loopback, private or other
    non-public address (one a fleet's admin set)."""
    await _post(
        client,
        settings,
        notice_document(alert),
        event=f"alert.{alert.state}",
        delivery=f"{alert.id}-{alert.state}",
        public_only=public_only,
    )


async def post_test_notice(
    client: httpx.AsyncClient, settings: AlertSettings, fleet: str, *, public_only: bool
) -> int:
    """POST a test notice (kind `test`) for `fleet`; the webhook's HTTP status, or
    NoticeRefused saying why it did not take it."""
    now = utc_now()
    document = {
        "id": None,
        "kind": "test",
        "state": "test",
        "edge_id": None,
        "subject": "",
        "since": iso(now),
        "raised_at": iso(now),
        "cleared_at": None,
        "detail": f"a test notice for fleet {fleet}",
        "clear_reason": None,
        "text": f"Test: alerts of fleet {fleet} reach this webhook.",
    }
    return await _post(
        client,
        settings,
        document,
        event="alert.test",
        delivery=f"test-{secrets.token_hex(8)}",
        public_only=public_only,
    )


async def _post(
    client: httpx.AsyncClient,
    settings: AlertSettings,
    document: dict[str, Any],
    *,
    event: str,
    delivery: str,
    public_only: bool,
) -> int:
    body = json.dumps(document, ensure_ascii=False).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "ocpp-cloud",
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery,
        TIMESTAMP_HEADER: timestamp,
    }
    if settings.webhook_secret:
        headers[SIGNATURE_HEADER] = signature(settings.webhook_secret, timestamp, body)
    try:
        async with asyncio.timeout(settings.webhook_timeout):
            if public_only:
                await check_public_host(settings.webhook_url)
            # Streamed and never read: the receiver's answer costs nothing but its status.
            async with client.stream(
                "POST", settings.webhook_url, content=body, headers=headers
            ) as answer:
                status = answer.status_code
    except NoticeRefused:
        raise
    except TimeoutError as error:
        raise NoticeRefused(f"no answer within {settings.webhook_timeout:g} s") from error
    except Exception as error:
        # Whatever the client raises (httpx's errors, and the socket's own for an address
        # it cannot use) is this notice's failure: counted, logged and tried again.
        raise NoticeRefused(f"{type(error).__name__}: {str(error)[:200]}") from error
    if not 200 <= status < 300:
        raise NoticeRefused(f"the webhook answered HTTP {status}")
    return status


async def check_public_host(url: str) -> None:
    """NoticeRefused unless every address the URL's host has is a public one: a fleet's
    webhook must not reach this machine or the networks behind it (the host is looked up
    again when the POST connects; a name that changes its addresses in between is the
    known gap, docs/security.md)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise NoticeRefused(f"the webhook's host {host[:100]} cannot be found: {error}") from error
    for *_, address in found:
        ip = ipaddress.ip_address(address[0])
        if not ip.is_global or ip.is_multicast:
            raise NoticeRefused(
                f"the webhook's host {host[:100]} has the address {ip}, which is not a "
                "public one (alerts.fleet_webhooks_private allows it)"
            )


def retry_delay(settings: AlertSettings, attempts: int) -> float:
    """Seconds before the next attempt, after `attempts` failed."""
    return float(
        min(settings.webhook_retry_longest, settings.webhook_retry_first * 2 ** (attempts - 1))
    )


# -- the engine -------------------------------------------------------------------------


@dataclass
class AlertStats:
    """This replica's engine, for GET /api/stats/alerts."""

    looks: int = 0
    last_look_at: datetime | None = None
    last_error: str | None = None
    raised: int = 0
    cleared: int = 0
    held_back: int = 0
    notices_sent: int = 0
    notices_failed: int = 0
    notices_given_up: int = 0
    last_notice_error: str | None = None


def rules_for(base: AlertSettings, own: FleetAlertSettings | None) -> AlertSettings:
    """A fleet's settings: the configuration's, with the thresholds the fleet set and
    its webhook (its own, none, or the configuration's). An own webhook is signed with
    the fleet's own secret, never the configuration's."""
    if own is None:
        return base
    changes: dict[str, Any] = own.overrides()
    if own.webhook_url is not None:
        changes |= {"webhook_url": own.webhook_url, "webhook_secret": own.webhook_secret or ""}
    return base.model_copy(update=changes)


class AlertsEngine:
    def __init__(self, settings: AlertSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.stats = AlertStats()
        self._notices_due = asyncio.Event()
        self._next_retry: datetime | None = None  # the soonest retry this replica set
        self._pruned_at = -PRUNE_EVERY_SECONDS
        # Each fleet's settings as of the last look (fleets that set none: the base).
        self._fleet_rules: dict[int, AlertSettings] = {}

    @property
    def webhook_on(self) -> bool:
        """Whether the configuration has a webhook (fleets may set their own)."""
        return bool(self.settings.webhook_url)

    def rules_of_fleet(self, fleet_id: int | None) -> AlertSettings:
        if fleet_id is None:
            return self.settings
        return self._fleet_rules.get(fleet_id, self.settings)

    async def run(self, stop: asyncio.Event) -> None:
        """Look and notify until `stop` is set."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._look_every_interval(stop))
            # Always: a fleet may set a webhook of its own at any time.
            tasks.create_task(self._notify(stop))

    async def _look_every_interval(self, stop: asyncio.Event) -> None:
        while True:
            try:
                await self.look()
            except Exception as error:
                # The store may be away for a while: looked at again next time.
                self.stats.last_error = f"{type(error).__name__}: {str(error)[:300]}"
                log.exception("alerts: the fleet could not be looked at")
            if await until_stopped(stop, self.settings.interval):
                return

    async def look(
        self, now: datetime | None = None
    ) -> tuple[list[tuple[int, NewAlert]], list[Clearing]]:
        """One look at the fleet: the alerts this replica raised and cleared."""
        now = now or utc_now()
        settings = self.settings
        own = await asyncio.to_thread(every_fleets_settings, self.engine)
        self._fleet_rules = {
            fleet_id: rules_for(settings, fleet) for fleet_id, fleet in own.items()
        }
        observation = await asyncio.to_thread(
            store.observe, self.engine, now, settings.refusals_window
        )
        judgement = judge(observation, settings, now, self._fleet_rules)
        fleet_of = {edge.edge_id: edge.fleet_id for edge in observation.edges}

        def webhook_for(edge_id: str) -> bool:
            return bool(self.rules_of_fleet(fleet_of.get(edge_id)).webhook_url)

        raised, cleared = await asyncio.to_thread(
            store.raise_and_clear,
            self.engine,
            judgement.raising,
            judgement.clearing,
            now,
            notify=webhook_for,
        )
        self._tell(judgement, raised, cleared)
        self.stats.looks += 1
        self.stats.last_look_at = now
        self.stats.last_error = None
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            await asyncio.to_thread(
                store.prune,
                self.engine,
                now - timedelta(days=settings.keep_cleared_days),
                now - timedelta(seconds=settings.refusals_window),
            )
        if raised or cleared:
            self._notices_due.set()
        return raised, cleared

    def _tell(
        self, judgement: Judgement, raised: list[tuple[int, NewAlert]], cleared: list[Clearing]
    ) -> None:
        # Only what this replica raised or cleared: another's is its own to log.
        self.stats.raised += len(raised)
        self.stats.cleared += len(cleared)
        for alert_id, new in raised:
            log.warning("alert %d raised: %s", alert_id, new.detail)
        for clearing in cleared:
            log.info("alert %d cleared: %s", clearing.alert_id, clearing.reason)
        if judgement.unjudged:
            log.warning(
                "alerts: %d edges or connectors not judged: their times or ages are beyond "
                "any calendar",
                judgement.unjudged,
            )
        if judgement.held_back:
            self.stats.held_back += judgement.held_back
            log.warning(
                "alerts: %d not raised, their edges have %d open already "
                "(alerts.max_open_per_edge)",
                judgement.held_back,
                self.settings.max_open_per_edge,
            )

    async def _notify(self, stop: asyncio.Event) -> None:
        """Send due notices: after each look that changed something, and every
        interval (retries come due)."""
        async with httpx.AsyncClient(follow_redirects=False) as client:
            while True:
                try:
                    while await self.deliver(client) == NOTICES_PER_ROUND:
                        if stop.is_set():
                            return
                except Exception as error:
                    self.stats.last_notice_error = f"{type(error).__name__}: {error}"[:300]
                    log.exception("alerts: notices could not be sent")
                if await until_stopped(stop, self._wait_seconds(), or_when=self._notices_due):
                    return
                self._notices_due.clear()

    def _wait_seconds(self) -> float:
        """Until the next look's notices, or sooner, a retry this replica set."""
        wait = self.settings.interval
        if self._next_retry is not None:
            until_retry = (self._next_retry - utc_now()).total_seconds()
            self._next_retry = None
            wait = max(0.0, min(wait, until_retry))
        return wait

    def _fleet_webhook(self, settings: AlertSettings) -> bool:
        """Whether `settings`' webhook is one a fleet set (held to public addresses
        unless alerts.fleet_webhooks_private), not the configuration's."""
        return (
            settings.webhook_url != self.settings.webhook_url
            and not self.settings.fleet_webhooks_private
        )

    async def deliver(self, client: httpx.AsyncClient, now: datetime | None = None) -> int:
        """Send the notices due now (up to NOTICES_PER_ROUND); how many were due."""
        now = now or utc_now()
        due = await asyncio.to_thread(store.due_notices, self.engine, now, NOTICES_PER_ROUND)
        if not due:
            return 0
        fleets = await asyncio.to_thread(fleets_of, self.engine, [alert.edge_id for alert in due])
        for waiting in due:
            # The alert's fleet's webhook as of the last look (an alert about an edge
            # the cloud has no row for: the configuration's).
            settings = self.rules_of_fleet(fleets.get(waiting.edge_id))
            lease = timedelta(seconds=settings.webhook_timeout + LEASE_MARGIN_SECONDS)
            claimed = await asyncio.to_thread(
                store.claim_notice, self.engine, waiting, now, now + lease
            )
            if claimed is None:
                continue  # another replica's
            if not settings.webhook_url:
                # The fleet took its webhook away since the alert was raised.
                await asyncio.to_thread(
                    store.notice_failed, self.engine, claimed, "no webhook set: not sent", None
                )
                continue
            sent = claimed.state
            try:
                await post_notice(
                    client, settings, claimed, public_only=self._fleet_webhook(settings)
                )
            except NoticeRefused as refused:
                self._failed(claimed, str(refused))
                attempts = claimed.notify_attempts
                spent = attempts >= settings.webhook_attempts
                retry_at = (
                    None
                    if spent
                    else utc_now() + timedelta(seconds=retry_delay(settings, attempts))
                )
                error = f"{refused} (attempt {attempts} of {settings.webhook_attempts})"
                if spent:
                    error = f"given up: {error}"
                    self.stats.notices_given_up += 1
                elif retry_at is not None:
                    self._next_retry = min(self._next_retry or retry_at, retry_at)
                await asyncio.to_thread(store.notice_failed, self.engine, claimed, error, retry_at)
                continue
            self.stats.notices_sent += 1
            await asyncio.to_thread(store.notice_sent, self.engine, claimed, sent, utc_now())
        return len(due)

    def _failed(self, alert: AlertView, reason: str) -> None:
        self.stats.notices_failed += 1
        self.stats.last_notice_error = reason
        log.warning(
            "alerts: the webhook did not take the %s notice of alert %d (attempt %d of %d): %s",
            alert.state,
            alert.id,
            alert.notify_attempts,
            self.settings.webhook_attempts,
            reason,
        )
