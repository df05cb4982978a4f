"""The edge's MQTT link to the cloud: sends the outbox in order and forgets events only
once the aggregator acknowledged them; announces presence (retained, with a last will);
takes the cloud's desired state (cards, firmware) and operator commands.

Connects, and after any failure reconnects with back-off; every connection subscribes
again and resends from the oldest unacknowledged event. Nothing here depends on the
broker keeping messages: an unacknowledged batch is simply sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import aiomqtt
from pydantic import BaseModel, ValidationError
from sqlite_utils import Database

from contract import protocol as wire
from contract.runtime import entered_unless_stopped, retry_with_backoff, until_stopped
from contract.stopping import cancel_until_done
from edge.clock import parse_timestamp, utc_now_text
from edge.settings import FilesSettings, SyncSettings
from edge.store.outbox import SyncState, store_epoch
from edge.sync.broker import broker_client
from edge.sync.cards import apply_card_part, refuse_card_list
from edge.sync.commands import (
    record_unreadable_command,
    rerun_or_report_interrupted,
    run_command,
)
from edge.sync.outbox import (
    AckOutcome,
    Outbox,
    acknowledge,
    backlog,
    pending_batch,
)

if TYPE_CHECKING:
    from edge.site import SiteContext

log = logging.getLogger(__name__)

Message = TypeVar("Message", bound=BaseModel)

# Seconds without a firmware chunk after which the missing ones are asked for again.
FIRMWARE_SILENCE_SECONDS = 5.0
# A batch stays well under the aggregator's limit on one message.
BATCH_MAX_BYTES = 512 * 1024
# Seconds between two log lines about refused acks (each is counted in the store).
REFUSED_ACK_LOG_SECONDS = 60.0
# Operator commands running at once; beyond it a new one is left unrecorded (the cloud
# sends it again until it hears a result), so no peer can make the edge hold unbounded
# tasks.
MAX_COMMANDS_AT_ONCE = 64
# Desired state that fails validation is reported at most this often (seconds) for one
# card list version, command or image: the cloud sends it again every resend_interval.
REPORT_REFUSAL_SECONDS = 600.0
# An `edge.health` event this often (seconds).
HEALTH_EVERY_SECONDS = 3600.0


class FirmwareSink(Protocol):
    """Where firmware offers and chunks from the cloud go (edge.sync.firmware)."""

    async def offered(self, offer: wire.FirmwareOffer) -> wire.FirmwareRequest | None: ...

    async def chunk(self, chunk: wire.FirmwareChunk) -> wire.FirmwareRequest | None: ...

    async def pending_requests(self) -> list[wire.FirmwareRequest]: ...


def software_version() -> str:
    try:
        return metadata.version("ocpp-edge")
    except metadata.PackageNotFoundError:
        return "unknown"


class SyncLink:
    def __init__(
        self,
        settings: SyncSettings,
        site: SiteContext,
        outbox: Outbox,
        files: FilesSettings,
        firmware: FirmwareSink | None = None,
    ) -> None:
        self.settings = settings
        self.site = site
        self.store = site.store
        self.outbox = outbox  # the same one the site's parts record into
        self.files = files
        self.firmware = firmware
        self.topics = wire.Topics(settings.edge_id, settings.topic_prefix)
        self.started_at = utc_now_text()
        self._started = time.monotonic()
        self.connected = False
        self._acked = 0
        self._ack_changed = asyncio.Condition()
        self._outbox_grew = asyncio.Event()
        self.outbox.on_append = self._outbox_grew.set
        self._commands: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()  # the daemon's, once `run` is given it
        self._client: aiomqtt.Client | None = None  # while connected, for replies
        self._last_chunk_at = 0.0
        self._epoch = ""  # this store's identity, read when the link starts
        self.refused_acks = 0
        self._refused_logged_at = -REFUSED_ACK_LOG_SECONDS
        self._refusals_reported: dict[str, float] = {}

    # -- the connection ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set; reconnect with back-off after failures.
        First, commands a previous run left unfinished are reported or run again."""
        self._stop = stop
        self._epoch = await self.store.run(store_epoch)
        self._start_command(
            rerun_or_report_interrupted(self.site, self.files, self.outbox, stop),
            "cloud-commands-interrupted",
        )
        try:
            await self._stay_connected(stop)
        finally:
            # Also when the link itself is cancelled: commands waiting for a charger
            # are the link's to end (the cloud sees them expire).
            for task in self._commands:
                task.cancel()

    async def _stay_connected(self, stop: asyncio.Event) -> None:
        def down() -> None:
            self.connected = False

        # The site goes on without the cloud: a failing link is retried, never allowed
        # to stop the daemon.
        await retry_with_backoff(
            stop,
            lambda: self._connected_session(stop),
            expected=aiomqtt.MqttError,
            down=f"cloud link to {self.settings.broker_host}:{self.settings.broker_port} down",
            failed="cloud link failed",
            after_each=down,
            logger=log,
        )

    def _new_client(self) -> aiomqtt.Client:
        offline = wire.EdgeStatus(state="offline").model_dump_json(exclude_none=True)
        return broker_client(
            self.settings,
            identifier=f"edge-{self.settings.edge_id}",
            will=aiomqtt.Will(self.topics.status, offline, qos=1, retain=True),
        )

    async def _connected_session(self, stop: asyncio.Event) -> None:
        async with entered_unless_stopped(self._new_client(), stop) as client:
            if client is None:
                return  # stopped while connecting
            for topic in (
                self.topics.ack,
                self.topics.cards,
                self.topics.firmware_offer,
                self.topics.firmware_chunk,
                self.topics.commands,
            ):
                await client.subscribe(topic, qos=1)
            self.connected, self._client = True, client
            log.info(
                "cloud link up: %s:%s as %s",
                self.settings.broker_host,
                self.settings.broker_port,
                self.settings.edge_id,
            )
            await self._publish_status(client)
            if self.firmware is not None:
                for request in await self.firmware.pending_requests():
                    await self._publish(client, self.topics.firmware_request, request)
            async with asyncio.TaskGroup() as tasks:
                parts = [
                    tasks.create_task(self._receive(client)),
                    tasks.create_task(self._send_events(client)),
                    tasks.create_task(self._status_every_interval(client)),
                    tasks.create_task(self._ask_again_for_silent_firmware(client)),
                ]
                stopping = tasks.create_task(stop.wait())
                done, _ = await asyncio.wait(
                    [*parts, stopping], return_when=asyncio.FIRST_COMPLETED
                )
                if stopping in done:
                    # A clean goodbye: the last will is only for a dropped link.
                    offline = wire.EdgeStatus(state="offline", at=utc_now_text())
                    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                        async with asyncio.timeout(2):
                            await self._publish(client, self.topics.status, offline, retain=True)
                await cancel_until_done([*parts, stopping])

    async def _publish(
        self, client: aiomqtt.Client, topic: str, message: BaseModel, *, retain: bool = False
    ) -> None:
        await client.publish(
            topic, message.model_dump_json(exclude_none=True), qos=1, retain=retain
        )

    # -- up ----------------------------------------------------------------------------

    async def _send_events(self, client: aiomqtt.Client) -> None:
        """One batch in flight: send the oldest unacknowledged events, wait for the
        aggregator's ack (resend after `ack_timeout`), then the next batch."""
        limit, edge_id = self.settings.batch_max_events, self.settings.edge_id
        while True:
            self._outbox_grew.clear()
            batch = await self.store.run(
                lambda db: pending_batch(db, edge_id, limit, BATCH_MAX_BYTES)
            )
            if batch is None:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancel that
                # comes as the event is set, and the link would outlive the daemon's stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await self._outbox_grew.wait()
                continue
            await client.publish(self.topics.events, batch.payload, qos=1)
            try:
                async with asyncio.timeout(self.settings.ack_timeout):
                    await self._acked_up_to(batch.last_seq)
            except TimeoutError:
                log.info(
                    "no ack for events %s-%s within %.0f s: sending again",
                    batch.first_seq,
                    batch.last_seq,
                    self.settings.ack_timeout,
                )

    async def _acked_up_to(self, seq: int) -> None:
        async with self._ack_changed:
            await self._ack_changed.wait_for(lambda: self._acked >= seq)

    async def _on_ack(self, ack: wire.Ack) -> None:
        if ack.seq <= self._acked and not ack.quarantined:
            return  # a repeat: nothing new to forget
        now, epoch = utc_now_text(), self._epoch
        outcome: AckOutcome = await self.store.run(lambda db: acknowledge(db, ack, epoch, now))
        if outcome.refused is not None:
            # Never taken: it would forget events the cloud never had (or another
            # store's); the batch is sent again and the real ack follows.
            self.refused_acks += 1
            if time.monotonic() - self._refused_logged_at >= REFUSED_ACK_LOG_SECONDS:
                self._refused_logged_at = time.monotonic()
                log.warning(
                    "cloud link: ack refused: %s (%d refused since start)",
                    outcome.refused,
                    self.refused_acks,
                )
            return
        async with self._ack_changed:
            self._acked = max(self._acked, ack.seq)
            self._ack_changed.notify_all()

    async def status(self) -> wire.EdgeStatus:
        """This edge's presence and health, as the cloud sees it."""
        held: SyncState = await self.store.run(backlog)
        oldest_age = None
        if held.oldest_at is not None:
            oldest_age = time.time() - parse_timestamp(held.oldest_at).timestamp()
        disk = shutil.disk_usage(self.store.path.resolve().parent)
        return wire.EdgeStatus(
            state="online",
            software_version=software_version(),
            started_at=self.started_at,
            uptime_s=round(time.monotonic() - self._started, 1),
            backlog=held.events,
            oldest_age_s=None if oldest_age is None else round(oldest_age, 1),
            disk_free_mb=round(disk.free / 1_048_576, 1),
            cards_version=held.cards_version,
            at=utc_now_text(),
        )

    async def report_health(self, stop: asyncio.Event) -> None:
        """An `edge.health` event every hour, for the cloud's history of this edge."""
        while not await until_stopped(stop, HEALTH_EVERY_SECONDS):
            status = await self.status()
            health = wire.EdgeHealth(
                software_version=status.software_version or "unknown",
                uptime_s=status.uptime_s or 0.0,
                backlog=status.backlog or 0,
                oldest_age_s=status.oldest_age_s,
                disk_free_mb=status.disk_free_mb or 0.0,
            )
            await self.store.run(functools.partial(self.outbox.append, event=health))

    async def _publish_status(self, client: aiomqtt.Client) -> None:
        await self._publish(client, self.topics.status, await self.status(), retain=True)

    async def _status_every_interval(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(self.settings.status_interval)
            await self._publish_status(client)

    # -- down ------------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        handlers: dict[str, Callable[[bytes], Awaitable[None]]] = {
            self.topics.ack: self._take(wire.Ack, self._on_ack),
            self.topics.cards: self._take(wire.CardList, self._on_cards),
            self.topics.commands: self._take(wire.OperatorCommand, self._on_command),
            self.topics.firmware_offer: self._take(wire.FirmwareOffer, self._on_offer),
            self.topics.firmware_chunk: self._take(wire.FirmwareChunk, self._on_chunk),
        }
        async for message in client.messages:
            handler = handlers.get(message.topic.value)
            payload = message.payload
            if handler is None or not isinstance(payload, bytes | bytearray):
                log.warning("cloud link: unexpected message on %s", message.topic.value)
                continue
            if len(payload) > wire.MAX_PAYLOAD_BYTES:
                log.warning(
                    "cloud link: %d bytes on %s, more than %d: refused unread",
                    len(payload),
                    message.topic.value,
                    wire.MAX_PAYLOAD_BYTES,
                )
                continue
            try:
                await handler(bytes(payload))
            except Exception:
                # One message the edge cannot use must not drop the link (the cloud
                # sends desired state again): logged, and the next one is taken.
                log.exception("cloud link: a message on %s failed", message.topic.value)

    def _take(
        self, model: type[Message], handle: Callable[[Message], Awaitable[None]]
    ) -> Callable[[bytes], Awaitable[None]]:
        async def take(payload: bytes) -> None:
            try:
                message = model.model_validate_json(payload)
            except ValidationError as error:
                # Refused whole: nothing of a bad message is applied; the refusal of
                # desired state is reported, so the cloud shows why it is not taken.
                detail = _described(error)
                log.warning("cloud sent a bad %s, refused: %s", model.__name__, detail)
                await self._report_refused(model, payload, detail)
                return
            await handle(message)

        return take

    async def _report_refused(self, model: type[BaseModel], payload: bytes, detail: str) -> None:
        """A `cards.applied` (with `refused`), `command.result` (rejected) or
        `firmware.progress` (rejected) for desired state that failed validation, when
        the message names what it is about; once per ten minutes for the same one."""
        try:
            raw = json.loads(payload)
        except (ValueError, RecursionError):
            raw = None
        fields = raw if isinstance(raw, dict) else {}
        now, outbox = utc_now_text(), self.outbox
        work: Callable[[Database], object] | None = None
        if model is wire.CardList:
            version = fields.get("version")
            known = version if isinstance(version, int) and 0 < version <= wire.INT32_MAX else None
            key = f"cards {known}"

            def work(db: Database) -> object:
                return refuse_card_list(db, known, detail, outbox, now)

        elif model is wire.OperatorCommand and _reference(fields.get("id"), 64):
            key = command_id = str(fields["id"])

            def work(db: Database) -> object:
                record_unreadable_command(db, command_id, detail, outbox, now)
                return None

        elif model is wire.FirmwareOffer and _reference(fields.get("image"), 128):
            key = image = str(fields["image"])
            progress = wire.FirmwareProgress(
                image=image, status="rejected", bytes=0, detail=f"offer refused: {detail}"
            )

            def work(db: Database) -> object:
                outbox.append(db, progress, now)
                return None

        if work is None:
            return
        moment = time.monotonic()
        if moment - self._refusals_reported.get(key, -REPORT_REFUSAL_SECONDS) < (
            REPORT_REFUSAL_SECONDS
        ):
            return
        if len(self._refusals_reported) >= 256:
            self._refusals_reported.clear()
        self._refusals_reported[key] = moment
        await self.store.run(work)

    async def _on_cards(self, cards: wire.CardList) -> None:
        now, outbox = utc_now_text(), self.outbox
        outcome = await self.store.run(lambda db: apply_card_part(db, cards, outbox, now))
        log.info("card list %s from the cloud: %s", cards.version, outcome)

    async def _on_command(self, command: wire.OperatorCommand) -> None:
        if len(self._commands) >= MAX_COMMANDS_AT_ONCE:
            log.warning(
                "cloud command %s left for later: %d commands are running",
                command.id,
                len(self._commands),
            )
            return
        self._start_command(
            run_command(self.site, command, self.files, self.outbox, stopping=self._stop.is_set),
            f"cloud-command-{command.id}",
        )

    def _start_command(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    async def _on_offer(self, offer: wire.FirmwareOffer) -> None:
        if self.firmware is None:
            log.warning("firmware %s offered, but this edge takes no firmware", offer.image)
            return
        await self._request_firmware(await self.firmware.offered(offer))

    async def _on_chunk(self, chunk: wire.FirmwareChunk) -> None:
        if self.firmware is None:
            return
        self._last_chunk_at = time.monotonic()
        await self._request_firmware(await self.firmware.chunk(chunk))

    async def _ask_again_for_silent_firmware(self, client: aiomqtt.Client) -> None:
        """A chunk lost with a broker restart is never answered: ask again for what is
        missing when no chunk came for a while."""
        while self.firmware is not None:
            last = self._last_chunk_at
            await asyncio.sleep(FIRMWARE_SILENCE_SECONDS)
            if self._last_chunk_at == last:
                for request in await self.firmware.pending_requests():
                    await self._publish(client, self.topics.firmware_request, request)

    async def _request_firmware(self, request: wire.FirmwareRequest | None) -> None:
        if request is not None and self._client is not None:
            await self._publish(self._client, self.topics.firmware_request, request)


def _described(error: ValidationError) -> str:
    """The first problems of a refused message, without the values (they are the
    sender's and may be anything)."""
    problems = error.errors(include_url=False, include_input=False)
    text = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'message'}: {problem['msg']}"
        for problem in problems[:3]
    )
    return text[:500]


def _reference(value: object, longest: int) -> bool:
    """Whether `value` can name a command or an image in a report."""
    return isinstance(value, str) and 0 < len(value) <= longest and value.isprintable()
