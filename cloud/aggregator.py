"""The aggregator's MQTT side: takes every edge's event batches (a shared subscription,
so replicas split the load), stores them and only then acknowledges; follows presence;
sends each edge its desired state (card list, firmware offers, operator commands) when
it comes online and again until it reports it; answers firmware chunk requests.

Messages wait in a bounded queue per edge, served edge by edge in turn by
`limits.inbound_workers` workers (cloud/inbound.py): one edge flooding the aggregator
never holds up another's batch. Store calls are blocking (SQLAlchemy) and run in threads:
the loop keeps taking messages while a commit waits for the disk.

Nothing an edge sends ends the MQTT session: a message whose handling fails is logged
with its edge, counted, and the next one taken; a topic whose edge level is no edge id
is counted as refused and never used to publish.

Beside the broker's side it runs the alerts engine (cloud/alerts.py) and the re-pricing
of sessions after a tariff change (cloud/repricing.py), which use the store only and go
on while the broker is away.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
from pydantic import BaseModel
from sqlalchemy import Engine

from cloud.alerts import AlertsEngine
from cloud.firmware import answer_request
from cloud.inbound import InboundQueue, InboundStats
from cloud.repricing import Repricer
from cloud.settings import CloudSettings
from cloud.store import desired
from cloud.store.ingest import (
    SAMPLE_BYTES,
    IngestResult,
    PayloadRefused,
    count_refusal,
    parse_payload,
    record_status,
    store_batch,
)
from contract import protocol as wire
from contract.mqtt import mqtt_client
from contract.runtime import Backoff, entered_unless_stopped, retry_with_backoff, until_stopped
from contract.stopping import cancel_until_done

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 1.0
LONGEST_RETRY_SECONDS = 30.0
# Seconds between two log lines about one edge's dropped messages.
DROP_LOG_SECONDS = 60.0

Handler = Callable[[aiomqtt.Client, str, bytes], Awaitable[None]]
# A message waiting for a worker: what follows the edge id in its topic, the payload (only
# a sample of one over limits.max_payload_bytes), and its size.
Inbound = tuple[str, bytes, int]


class Aggregator:
    def __init__(self, settings: CloudSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.prefix = settings.mqtt.topic_prefix
        self.connected = False
        self.batches_stored = 0
        self.sessions = 0  # MQTT sessions started: one, unless the broker went away
        self.inbound = InboundStats()
        self.refused_topics = 0  # messages on a topic with no edge id in it
        self._drop_logged_at: dict[str, float] = {}
        self._client: aiomqtt.Client | None = None
        self._send_now: set[str] = set()  # edges whose desired state changed
        self._desired_changed = asyncio.Event()
        self.alerts = AlertsEngine(settings.alerts, engine)
        self.repricer = Repricer(settings.sessions, engine)

    # -- connection --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            # Alerts and re-pricing use the store, not the broker: they go on while it
            # is away.
            tasks.create_task(self.alerts.run(stop), name="alerts")
            tasks.create_task(self.repricer.run(stop), name="repricing")
            tasks.create_task(self._take_from_broker(stop), name="mqtt")

    async def _take_from_broker(self, stop: asyncio.Event) -> None:
        mqtt = self.settings.mqtt

        def disconnected() -> None:
            self.connected, self._client = False, None

        # A failing store or a bug in one message must not end the service: what was not
        # acknowledged is sent again by the edges.
        await retry_with_backoff(
            stop,
            functools.partial(self._session, stop),
            expected=aiomqtt.MqttError,
            down=f"broker {mqtt.broker_host}:{mqtt.broker_port} unreachable",
            failed="aggregator session failed",
            after_each=disconnected,
            backoff=Backoff(FIRST_RETRY_SECONDS, LONGEST_RETRY_SECONDS),
            logger=log,
        )

    def _new_client(self) -> aiomqtt.Client:
        mqtt = self.settings.mqtt
        return mqtt_client(
            mqtt,
            identifier=mqtt.effective_client_id(),
            username=mqtt.username or None,
            password=mqtt.password or None,
            # Bounds connecting, publishing and the goodbye at shutdown.
            timeout=5,
            # MQTT 5: shared subscriptions ($share/...) are part of the standard.
            protocol=aiomqtt.ProtocolVersion.V5,
            # The library's own queue, emptied at once into ours; bounded all the same.
            max_queued_incoming_messages=self.settings.limits.inbound_queue,
        )

    async def _session(self, stop: asyncio.Event) -> None:
        share = f"$share/{self.settings.mqtt.share_group}/{self.prefix}/+"
        async with entered_unless_stopped(self._new_client(), stop) as client:
            if client is None:
                return  # stopped while connecting
            for suffix in ("events", "status", "firmware/request"):
                await client.subscribe(f"{share}/{suffix}", qos=1)
            self.connected, self._client = True, client
            self.sessions += 1
            log.info(
                "taking events from %s:%s",
                self.settings.mqtt.broker_host,
                self.settings.mqtt.broker_port,
            )
            limits = self.settings.limits
            queue: InboundQueue[Inbound] = InboundQueue(
                limits.inbound_queue, limits.inbound_per_edge, self.inbound
            )
            async with asyncio.TaskGroup() as tasks:
                parts = [
                    tasks.create_task(self._receive(client, queue)),
                    tasks.create_task(self._resend_desired_state(client)),
                    *(
                        tasks.create_task(self._work(client, queue))
                        for _ in range(limits.inbound_workers)
                    ),
                ]
                stopping = tasks.create_task(stop.wait())
                await asyncio.wait([*parts, stopping], return_when=asyncio.FIRST_COMPLETED)
                await cancel_until_done([*parts, stopping])

    async def _publish(self, client: aiomqtt.Client, topic: str, message: BaseModel) -> None:
        await client.publish(topic, message.model_dump_json(exclude_none=True), qos=1)

    # -- what the edges send ---------------------------------------------------------

    def _handler(self, suffix: str) -> Handler | None:
        handlers: dict[str, Handler] = {
            "events": self._on_events,
            "status": self._on_status,
            "firmware/request": self._on_firmware_request,
        }
        return handlers.get(suffix)

    async def _receive(self, client: aiomqtt.Client, queue: InboundQueue[Inbound]) -> None:
        """Every message into its edge's queue at once (never waiting on the store)."""
        async for message in client.messages:
            topic = message.topic.value
            parsed = wire.edge_id_of(topic, self.prefix)
            payload = message.payload
            if parsed is None or self._handler(parsed[1]) is None:
                self._refuse_topic(topic)
                continue
            edge_id, suffix = parsed
            data = bytes(payload)
            size = len(data)
            if size > self.settings.limits.max_payload_bytes:
                # Refused unread: only the sample the refusal keeps waits in the queue.
                data = data[:SAMPLE_BYTES]
            dropped = queue.offer(edge_id, (suffix, data, size))
            if dropped is not None:
                self._log_drop(f"edge {edge_id}", dropped)

    def _refuse_topic(self, topic: str) -> None:
        # The subscription's `+` lets any level through: one that is no edge id is never
        # used (an ack to it would be a wildcard topic, or another edge's). Counted in
        # memory only: a flood of them must cost no store write.
        self.refused_topics += 1
        self._log_drop(f"topic {topic[:120]!r}", "not an edge's topic")

    def _log_drop(self, source: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._drop_logged_at.get(source, -DROP_LOG_SECONDS) >= DROP_LOG_SECONDS:
            if len(self._drop_logged_at) > 10_000:
                self._drop_logged_at.clear()
            self._drop_logged_at[source] = now
            log.warning(
                "%s: message dropped (%s; %d dropped in all, %d on no edge's topic); an "
                "edge sends again what is not acknowledged",
                source,
                reason,
                sum(self.inbound.dropped.values()),
                self.refused_topics,
            )

    async def _work(self, client: aiomqtt.Client, queue: InboundQueue[Inbound]) -> None:
        """Handle messages one at a time, edges in turn; a failure stays with its message."""
        limit = self.settings.limits.max_payload_bytes
        while True:
            edge_id, (suffix, payload, size) = await queue.take()
            failed = False
            try:
                handler = self._handler(suffix)
                if size > limit:
                    refused = PayloadRefused("too_large", f"{size} bytes, more than {limit}")
                    await asyncio.to_thread(count_refusal, self.engine, edge_id, payload, refused)
                elif handler is not None:
                    await handler(client, edge_id, payload)
            except aiomqtt.MqttError:
                queue.done(edge_id, failed=True)
                raise  # the connection is gone: the session starts again
            except Exception:
                failed = True
                log.exception("a %s message from edge %s failed", suffix, edge_id)
            queue.done(edge_id, failed=failed)

    async def _on_events(self, client: aiomqtt.Client, edge_id: str, payload: bytes) -> None:
        limits = self.settings.limits
        result: IngestResult = await asyncio.to_thread(
            functools.partial(
                store_batch,
                self.engine,
                edge_id,
                payload,
                limits.max_payload_bytes,
                max_event_bytes=limits.max_event_bytes,
                sample_bytes=limits.quarantine_sample_bytes,
                max_meter_samples=self.settings.sessions.max_meter_samples,
                status_history=limits.status_history_per_charger,
            )
        )
        if result.rejected:
            log.warning("batch from %s refused: %s", edge_id, result.rejected)
        else:
            self.batches_stored += 1
        if result.ack_seq is not None:
            # Only now, after the commit: an ack means "stored" (or quarantined). An edge
            # that sends no epoch is from before the fields that tell it more, and would
            # refuse an ack that has them.
            ack = wire.Ack(seq=result.ack_seq)
            if result.epoch is not None:
                ack = wire.Ack(
                    seq=result.ack_seq,
                    epoch=result.epoch,
                    quarantined=[
                        wire.Quarantined(seq=seq, reason=reason)
                        for seq, reason in result.quarantined
                    ]
                    or None,
                    quarantined_total=result.quarantined_total or None,
                )
            await self._publish(client, wire.Topics(edge_id, self.prefix).ack, ack)
        if result.stored:
            # A cards.applied or command.result may have changed what to send.
            self.want_desired_state_sent(edge_id)

    async def _on_status(self, client: aiomqtt.Client, edge_id: str, payload: bytes) -> None:
        online = await asyncio.to_thread(
            functools.partial(
                record_status,
                self.engine,
                edge_id,
                payload,
                presence_history=self.settings.limits.presence_history_per_edge,
            )
        )
        if online:
            await self._send_desired_state(client, edge_id)

    async def _on_firmware_request(
        self, client: aiomqtt.Client, edge_id: str, payload: bytes
    ) -> None:
        limit = self.settings.limits.max_payload_bytes
        try:
            request = parse_payload(wire.FirmwareRequest, payload, limit)
        except PayloadRefused as unreadable:
            await asyncio.to_thread(count_refusal, self.engine, edge_id, payload, unreadable)
            return
        path = await asyncio.to_thread(desired.firmware_path_for, self.engine, edge_id, request)
        if path is None:
            unknown = PayloadRefused("not_offered", f"firmware {request.image!r} was not offered")
            await asyncio.to_thread(count_refusal, self.engine, edge_id, payload, unknown)
            return
        try:
            chunk = await asyncio.to_thread(answer_request, Path(path), request, limit // 2)
        except ValueError as error:
            wrong = PayloadRefused("invalid", f"firmware request: {error}")
            await asyncio.to_thread(count_refusal, self.engine, edge_id, payload, wrong)
            return
        await self._publish(client, wire.Topics(edge_id, self.prefix).firmware_chunk, chunk)

    # -- desired state -----------------------------------------------------------------

    def want_desired_state_sent(self, edge_id: str) -> None:
        """Something to send `edge_id` changed (an operator's card list, a command)."""
        if not wire.is_edge_id(edge_id):
            log.warning("desired state for %r not sent: not an edge id", edge_id[:80])
            return
        self._send_now.add(edge_id)
        self._desired_changed.set()

    async def _send_desired_state(self, client: aiomqtt.Client, edge_id: str) -> None:
        topics = wire.Topics(edge_id, self.prefix)
        now = datetime.now(UTC)
        cards, commands, offers = await asyncio.to_thread(self._desired_state, edge_id, now)
        for part in cards:
            await self._publish(client, topics.cards, part)
        for command in commands:
            await self._publish(client, topics.commands, command)
        if commands:
            ids = [command.id for command in commands]
            await asyncio.to_thread(desired.mark_sent, self.engine, ids, now)
        for offer in offers:
            await self._publish(client, topics.firmware_offer, offer)

    def _desired_state(
        self, edge_id: str, now: datetime
    ) -> tuple[list[wire.CardList], list[wire.OperatorCommand], list[wire.FirmwareOffer]]:
        return (
            desired.card_list_parts_to_send(self.engine, edge_id),
            desired.commands_to_send(self.engine, edge_id, now),
            desired.offers_to_send(self.engine, edge_id),
        )

    async def _resend_desired_state(self, client: aiomqtt.Client) -> None:
        """Send again until the edges report it: right away after a change, and every
        `resend_interval` to every online edge."""
        interval = self.settings.desired.resend_interval
        while True:
            await until_stopped(self._desired_changed, interval)  # a change, or a while
            self._desired_changed.clear()
            if self._send_now:
                edges, self._send_now = self._send_now, set()
            else:
                edges = set(await asyncio.to_thread(desired.online_edges, self.engine))
            for edge_id in sorted(edges):
                try:
                    await self._send_desired_state(client, edge_id)
                except aiomqtt.MqttError:
                    raise
                except Exception:
                    # One edge's desired state that cannot be sent (unreadable, refused
                    # by the broker) holds up no other edge's.
                    log.exception("desired state for edge %s not sent", edge_id)
