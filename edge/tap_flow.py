"""A driver's tap, from the reader to the charger: decide, tell the driver, send
RemoteStartTransaction or RemoteStopTransaction, and follow up with the charger's own
messages (transaction started, meter readings, stopped) on the reader's feedback.

Every tap is recorded in `card_decisions` with its reason and, later, what came of
it (the command, the charger's answer, the transaction it started).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from edge import log_context
from edge.authorization import Authorization
from edge.card_decision import CardDecision, CardPresented, Choice, decide_card
from edge.clock import utc_now_text
from edge.events import (
    CardAction,
    MeterReading,
    SiteEvent,
    TransactionStarted,
    TransactionStopped,
)
from edge.feedback import Feedback, Signal
from edge.ocpp.commands import CommandError, send_command
from edge.readers.taps import CardTap
from edge.settings import AuthorizationSettings, TapSettings
from edge.store import card_decisions, chargers, reservations, transactions
from edge.tap_decision import (
    ConnectorView,
    InProgress,
    Refuse,
    StartCharging,
    StopCharging,
    TapPlan,
    plan_tap,
)
from edge.tap_outcome import TapResult

if TYPE_CHECKING:
    from edge.site import SiteContext

log = logging.getLogger(__name__)


@dataclass
class ReaderPost:
    """A reader where it is mounted: the charger it starts (connector 0: any of its
    connectors) and what it shows the driver."""

    reader_id: str
    charger_id: str | None
    connector_id: int
    feedback: Feedback

    def serves(self, charger_id: str, connector_id: int) -> bool:
        return charger_id == self.charger_id and self.connector_id in (0, connector_id)


@dataclass(frozen=True, slots=True)
class ReaderState:
    """Whether a reader's device is open, why not, and since when."""

    online: bool
    reason: str
    since: str


@dataclass(frozen=True, slots=True)
class TapOutcome:
    """What a tap led to (for the caller's log, tests and benchmarks)."""

    plan: TapPlan
    decision_id: int
    outcome: TapResult


@dataclass(frozen=True, slots=True)
class _Command:
    """A tap's RemoteStartTransaction or RemoteStopTransaction, and what its acceptance
    records."""

    action: str
    arguments: dict[str, Any]
    accepted: TapResult
    refused: Signal
    transaction_id: int | None = None


@dataclass
class _Underway:
    """A start or stop the charger accepted, waiting for its StartTransaction/StopTransaction."""

    id_tag: str
    reader_id: str
    decision_id: int
    expiry: asyncio.TimerHandle | None = None


class TapFlow:
    def __init__(
        self,
        site: SiteContext,
        posts: list[ReaderPost],
        taps: TapSettings,
        authorization: AuthorizationSettings,
    ) -> None:
        self.site = site
        self.posts = {post.reader_id: post for post in posts}
        self.taps = taps
        self.authorization = authorization
        self._starting: dict[tuple[str, int], _Underway] = {}
        self._stopping: dict[int, _Underway] = {}  # by transaction id
        self._charger_locks: dict[str, asyncio.Lock] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self.reader_states: dict[str, ReaderState] = {}

    # -- taps ------------------------------------------------------------------

    async def tap_received(self, tap: CardTap) -> None:
        """Take a reader's tap without holding the reader up: each tap is handled in
        its own task, so a slow charger never delays the next tap's feedback."""
        task = asyncio.create_task(self._handle_safely(tap), name=f"tap-{tap.reader_id}")
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def _handle_safely(self, tap: CardTap) -> None:
        post = self.posts.get(tap.reader_id)
        charger_id = post.charger_id if post is not None else None
        with log_context.concerning(reader_id=tap.reader_id, charger_id=charger_id):
            try:
                await self.handle_tap(tap)
            except Exception:
                log.exception("tap %s at reader %s failed", tap.uid, tap.reader_id)
                if post is not None:
                    post.feedback.signal(Signal.ERROR, "Edge error")

    async def close(self, wait_seconds: float = 0.5) -> None:
        """Wait a moment for taps being handled (one waiting for a charger's answer is
        cancelled: its decision is stored already), then turn the feedback off."""
        if self._handling:
            await asyncio.wait(set(self._handling), timeout=wait_seconds)
        unfinished = list(self._handling)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished, timeout=wait_seconds)
        for underway in [*self._starting.values(), *self._stopping.values()]:
            if underway.expiry is not None:
                underway.expiry.cancel()
        for post in self.posts.values():
            post.feedback.close()

    async def handle_tap(self, tap: CardTap) -> TapOutcome:
        post = self.posts.get(tap.reader_id)
        if post is None:
            raise KeyError(f"no reader {tap.reader_id}")
        charger_id = post.charger_id
        lock = self._charger_locks.setdefault(charger_id or "", asyncio.Lock())
        # One tap per charger at a time: two readers must not pick the same connector.
        async with lock:
            plan, decision_id = await self._decide(post, tap)
            self._signal_decision(post, tap, plan)
            if isinstance(plan, StartCharging):
                assert charger_id is not None
                underway = _Underway(tap.uid, post.reader_id, decision_id)
                self._starting[(charger_id, plan.connector_id)] = underway
        if isinstance(plan, StartCharging):
            return await self._start(post, tap, plan, underway)
        if isinstance(plan, StopCharging):
            return await self._stop(post, tap, plan, decision_id)
        result = TapResult.IN_PROGRESS if isinstance(plan, InProgress) else TapResult.REFUSED
        return TapOutcome(plan, decision_id, result)

    async def _decide(self, post: ReaderPost, tap: CardTap) -> tuple[TapPlan, int]:
        charger_id = post.charger_id
        online = charger_id is not None and self.site.chargers.is_connected(charger_id)
        card = CardPresented(tap.uid, tap.at, charger_id, reader_id=post.reader_id)
        starting = {
            key[1]: underway.id_tag
            for key, underway in self._starting.items()
            if key[0] == charger_id
        }
        stopping = set(self._stopping)
        outbox, settings = self.site.outbox, self.authorization

        def decide(db: Database) -> CardDecision[TapPlan]:
            def choose(authorization: Authorization) -> Choice[TapPlan]:
                if charger_id is None:
                    plan: TapPlan = Refuse("reader not mapped to a charger", Signal.ERROR)
                else:
                    views = _connector_views(db, charger_id, post.connector_id, starting, stopping)
                    plan = plan_tap(
                        tap.uid, authorization, charger_online=online, connectors=list(views)
                    )
                reason = _reason(plan, authorization)
                return Choice(
                    plan, _ACTIONS[type(plan)], reason, getattr(plan, "connector_id", None)
                )

            return decide_card(db, outbox, card, settings, choose)

        decision = await self.site.store.run(decide)
        log.info(
            "tap %s at reader %s (charger %s): %s",
            tap.uid,
            post.reader_id,
            charger_id,
            decision.plan,
        )
        return decision.plan, decision.decision_id

    def _signal_decision(self, post: ReaderPost, tap: CardTap, plan: TapPlan) -> None:
        if isinstance(plan, Refuse):
            # The display has a line of 16: the gist ("Connector busy"), not the detail.
            post.feedback.signal(plan.signal, plan.reason.split(":")[0].capitalize())
        elif isinstance(plan, StartCharging):
            post.feedback.signal(Signal.ACCEPTED, "Starting")
        elif isinstance(plan, StopCharging):
            post.feedback.signal(Signal.ACCEPTED, "Stopping")
        else:
            post.feedback.signal(Signal.ACCEPTED, plan.reason.capitalize())

    async def _start(
        self, post: ReaderPost, tap: CardTap, plan: StartCharging, underway: _Underway
    ) -> TapOutcome:
        assert post.charger_id is not None
        key = (post.charger_id, plan.connector_id)
        arguments = {"id_tag": tap.uid, "connector_id": plan.connector_id}

        def forget() -> None:
            if self._starting.get(key) is underway:
                del self._starting[key]

        def wait_for_start() -> None:
            # The StartTransaction may already be here; else it has start_timeout.
            if self._starting.get(key) is underway:
                underway.expiry = asyncio.get_running_loop().call_later(
                    self.taps.start_timeout, self._start_expired, key, underway
                )

        command = _Command(
            "RemoteStartTransaction", arguments, TapResult.START_ACCEPTED, Signal.REJECTED
        )
        return await self._send(post, plan, underway.decision_id, command, forget, wait_for_start)

    async def _stop(
        self, post: ReaderPost, tap: CardTap, plan: StopCharging, decision_id: int
    ) -> TapOutcome:
        transaction_id = plan.transaction_id
        underway = _Underway(tap.uid, post.reader_id, decision_id)
        self._stopping[transaction_id] = underway

        def forget() -> None:
            self._stopping.pop(transaction_id, None)

        def wait_for_stop() -> None:
            if transaction_id in self._stopping:
                underway.expiry = asyncio.get_running_loop().call_later(
                    self.taps.start_timeout, forget
                )

        arguments = {"transaction_id": transaction_id}
        command = _Command(
            "RemoteStopTransaction",
            arguments,
            TapResult.STOP_ACCEPTED,
            Signal.ERROR,
            transaction_id,
        )
        return await self._send(post, plan, decision_id, command, forget, wait_for_stop)

    async def _send(
        self,
        post: ReaderPost,
        plan: StartCharging | StopCharging,
        decision_id: int,
        command: _Command,
        forget: Callable[[], None],
        wait: Callable[[], None],
    ) -> TapOutcome:
        """Send a tap's command; on "Accepted" wait for the charger to act, else forget
        the start or stop and tell the driver."""
        assert post.charger_id is not None
        try:
            result = await send_command(
                self.site,
                post.charger_id,
                command.action,
                command.arguments,
                answer_within=self.site.settings.response_timeout,
            )
        except CommandError as error:
            forget()
            post.feedback.signal(Signal.ERROR, _short(error))
            self._record_outcome(decision_id, TapResult.FAILED, error.command_id, detail=str(error))
            return TapOutcome(plan, decision_id, TapResult.FAILED)
        if result.response.get("status") != "Accepted":
            forget()
            post.feedback.signal(command.refused, "Charger refused")
            self._record_outcome(decision_id, TapResult.CHARGER_REFUSED, result.command_id)
            return TapOutcome(plan, decision_id, TapResult.CHARGER_REFUSED)
        self._record_outcome(
            decision_id, command.accepted, result.command_id, command.transaction_id
        )
        wait()
        return TapOutcome(plan, decision_id, command.accepted)

    def _start_expired(self, key: tuple[str, int], underway: _Underway) -> None:
        if self._starting.get(key) is not underway:
            return
        del self._starting[key]
        log.warning(
            "charger %s accepted a start for %s on connector %s but did not start within %.0f s",
            key[0],
            underway.id_tag,
            key[1],
            self.taps.start_timeout,
        )
        post = self.posts.get(underway.reader_id)
        if post is not None:
            post.feedback.signal(Signal.ERROR, "Not started")
        self._record_outcome(underway.decision_id, TapResult.NOT_STARTED_IN_TIME)

    def _record_outcome(
        self,
        decision_id: int,
        result: TapResult,
        command_id: int | None = None,
        transaction_id: int | None = None,
        *,
        detail: str | None = None,
    ) -> None:
        self.site.store.submit(
            lambda db: card_decisions.record_tap_outcome(
                db,
                decision_id,
                result,
                detail=detail,
                command_id=command_id,
                transaction_id=transaction_id,
            )
        )

    # -- what the chargers report ----------------------------------------------

    def on_event(self, event: SiteEvent) -> None:
        if isinstance(event, TransactionStarted):
            key = (event.charger_id, event.connector_id)
            underway = self._starting.get(key)
            if underway is not None and underway.id_tag.upper() == event.id_tag.upper():
                del self._starting[key]
                if underway.expiry is not None:
                    underway.expiry.cancel()
                self._record_outcome(
                    underway.decision_id, TapResult.STARTED, transaction_id=event.transaction_id
                )
            for post in self._posts_serving(event.charger_id, event.connector_id):
                if event.id_tag_status == "Accepted":
                    post.feedback.signal(Signal.CHARGING_STARTED)
        elif isinstance(event, TransactionStopped):
            underway = self._stopping.pop(event.transaction_id, None)
            if underway is not None and underway.expiry is not None:
                underway.expiry.cancel()
            for post in self._posts_serving(event.charger_id, event.connector_id):
                post.feedback.signal(Signal.CHARGING_STOPPED, f"{event.energy_wh / 1000:.1f} kWh")
        elif isinstance(event, MeterReading):
            if event.power_w is None and event.energy_wh is None:
                return
            for post in self._posts_serving(event.charger_id, event.connector_id):
                post.feedback.show_charging(event.power_w or 0.0, event.energy_wh or 0)

    def reader_status(self, reader_id: str, online: bool, reason: str) -> None:
        """The supervisor's report: the reader came or went."""
        self.reader_states[reader_id] = ReaderState(online, reason, utc_now_text())
        post = self.posts.get(reader_id)
        if post is not None:
            # The reason is in the log; a driver needs only to know the reader is out.
            post.feedback.signal(Signal.READER_ONLINE if online else Signal.READER_OFFLINE)

    def _posts_serving(self, charger_id: str, connector_id: int) -> Iterator[ReaderPost]:
        return (post for post in self.posts.values() if post.serves(charger_id, connector_id))


_ACTIONS: dict[type[TapPlan], CardAction] = {
    StartCharging: "start",
    StopCharging: "stop",
    Refuse: "refuse",
    InProgress: "ignore",
}


def _reason(plan: TapPlan, authorization: Authorization) -> str:
    if isinstance(plan, Refuse | InProgress):
        return plan.reason if isinstance(plan, Refuse) else f"already {plan.reason}"
    if isinstance(plan, StopCharging):
        return "the card's own transaction: stop"
    return authorization.reason


def _short(error: CommandError) -> str:
    kind = error.kind
    return {"offline": "Charger offline", "timeout": "No answer"}.get(kind, "Charger error")


def _connector_views(
    db: Database,
    charger_id: str,
    connector_id: int,
    starting: dict[int, str],
    stopping: set[int],
) -> Iterator[ConnectorView]:
    """The connectors a reader serves (one, or all of the charger's) as the plan sees them."""
    statuses = chargers.connector_statuses(db, charger_id)
    numbers = [connector_id] if connector_id else sorted(n for n in statuses if n > 0)
    running = transactions.running_on_charger(db, charger_id)
    reserved = reservations.active_reservations(db, charger_id)
    for number in numbers:
        transaction = running.get(number)
        yield ConnectorView(
            connector_id=number,
            status=statuses.get(number),
            transaction=transaction,
            starting_for=starting.get(number),
            stopping=transaction is not None and transaction.transaction_id in stopping,
            reserved_for=reserved.get(number) or reserved.get(0),
        )
