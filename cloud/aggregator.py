"""The aggregator's MQTT side: takes every edge's event batches (a shared subscription,
so replicas split the load), stores them and only then acknowledges; follows presence;
sends each edge its desired state (card list, firmware offers, operator commands) when
it comes online and again until it reports it; answers firmware chunk requests.

Store calls are blocking (SQLAlchemy) and run in threads: the loop keeps taking
messages while a commit waits for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine

from cloud.firmware import answer_request
from cloud.settings import CloudSettings
from cloud.store import desired
from cloud.store.ingest import record_status, store_batch
from edge.sync import protocol as wire

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 1.0
LONGEST_RETRY_SECONDS = 30.0


class Aggregator:
    def __init__(self, settings: CloudSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.prefix = settings.mqtt.topic_prefix
        self.connected = False
        self.batches_stored = 0
        self._client: aiomqtt.Client | None = None
        self._send_now: set[str] = set()  # edges whose desired state changed
        self._desired_changed = asyncio.Event()

    # -- connection --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        retry_in = FIRST_RETRY_SECONDS
        while not stop.is_set():
            try:
                await self._session(stop)
                retry_in = FIRST_RETRY_SECONDS
            except* aiomqtt.MqttError as errors:
                log.warning(
                    "broker %s:%s unreachable: %s; trying again in %.0f s",
                    self.settings.mqtt.broker_host,
                    self.settings.mqtt.broker_port,
                    errors.exceptions[0],
                    retry_in,
                )
            except* Exception:
                # A failing store or a bug in one message must not end the service: what
                # was not acknowledged is sent again by the edges.
                log.exception("aggregator session failed; starting again in %.0f s", retry_in)
            self.connected, self._client = False, None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=retry_in)
            retry_in = min(retry_in * 2, LONGEST_RETRY_SECONDS)

    def _new_client(self) -> aiomqtt.Client:
        mqtt = self.settings.mqtt
        tls = None
        if mqtt.tls_ca is not None:
            tls = aiomqtt.TLSParameters(
                ca_certs=str(mqtt.tls_ca),
                certfile=str(mqtt.tls_certificate) if mqtt.tls_certificate else None,
                keyfile=str(mqtt.tls_private_key) if mqtt.tls_private_key else None,
            )
        return aiomqtt.Client(
            mqtt.broker_host,
            mqtt.broker_port,
            identifier=mqtt.effective_client_id(),
            username=mqtt.username or None,
            password=mqtt.password or None,
            keepalive=mqtt.keepalive,
            tls_params=tls,
            # MQTT 5: shared subscriptions ($share/...) are part of the standard.
            protocol=aiomqtt.ProtocolVersion.V5,
            # Bounds connecting, publishing and the goodbye at shutdown.
            timeout=5,
            # No Nagle delay on acks and chunks (see edge/sync/link.py).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _session(self, stop: asyncio.Event) -> None:
        share = f"$share/{self.settings.mqtt.share_group}/{self.prefix}/+"
        async with self._new_client() as client:
            for suffix in ("events", "status", "firmware/request"):
                await client.subscribe(f"{share}/{suffix}", qos=1)
            self.connected, self._client = True, client
            log.info(
                "taking events from %s:%s",
                self.settings.mqtt.broker_host,
                self.settings.mqtt.broker_port,
            )
            async with asyncio.TaskGroup() as tasks:
                parts = [
                    tasks.create_task(self._receive(client)),
                    tasks.create_task(self._resend_desired_state(client)),
                ]
                stopping = tasks.create_task(stop.wait())
                await asyncio.wait([*parts, stopping], return_when=asyncio.FIRST_COMPLETED)
                for part in (*parts, stopping):
                    part.cancel()

    async def _publish(self, client: aiomqtt.Client, topic: str, message: BaseModel) -> None:
        await client.publish(topic, message.model_dump_json(exclude_none=True), qos=1)

    # -- what the edges send ---------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        handlers: dict[str, Callable[[aiomqtt.Client, str, bytes], Awaitable[None]]] = {
            "events": self._on_events,
            "status": self._on_status,
            "firmware/request": self._on_firmware_request,
        }
        async for message in client.messages:
            topic = message.topic.value
            parsed = wire.edge_id_of(topic, self.prefix)
            payload = message.payload
            handler = handlers.get(parsed[1]) if parsed else None
            if parsed is None or handler is None or not isinstance(payload, bytes | bytearray):
                log.warning("message on unexpected topic %s ignored", topic)
                continue
            await handler(client, parsed[0], bytes(payload))

    async def _on_events(self, client: aiomqtt.Client, edge_id: str, payload: bytes) -> None:
        result = await asyncio.to_thread(
            store_batch, self.engine, edge_id, payload, self.settings.limits.max_payload_bytes
        )
        if result.rejected:
            log.warning("batch from %s refused: %s", edge_id, result.rejected)
        else:
            self.batches_stored += 1
        if result.ack_seq is not None:
            # Only now, after the commit: an ack means "stored".
            topics = wire.Topics(edge_id, self.prefix)
            await self._publish(client, topics.ack, wire.Ack(seq=result.ack_seq))
        if result.stored:
            # A cards.applied or command.result may have changed what to send.
            self.want_desired_state_sent(edge_id)

    async def _on_status(self, client: aiomqtt.Client, edge_id: str, payload: bytes) -> None:
        online = await asyncio.to_thread(record_status, self.engine, edge_id, payload)
        if online:
            await self._send_desired_state(client, edge_id)

    async def _on_firmware_request(
        self, client: aiomqtt.Client, edge_id: str, payload: bytes
    ) -> None:
        try:
            request = wire.FirmwareRequest.model_validate_json(payload)
        except ValidationError as error:
            log.warning("bad firmware request from %s: %s", edge_id, error.errors()[:2])
            return
        path = await asyncio.to_thread(desired.firmware_path_for, self.engine, edge_id, request)
        if path is None:
            log.warning("%s asked for firmware %s it was not offered", edge_id, request.image)
            return
        try:
            chunk = await asyncio.to_thread(
                answer_request, Path(path), request, self.settings.limits.max_payload_bytes // 2
            )
        except ValueError as error:
            log.warning("firmware request from %s refused: %s", edge_id, error)
            return
        await self._publish(client, wire.Topics(edge_id, self.prefix).firmware_chunk, chunk)

    # -- desired state -----------------------------------------------------------------

    def want_desired_state_sent(self, edge_id: str) -> None:
        """Something to send `edge_id` changed (an operator's card list, a command)."""
        self._send_now.add(edge_id)
        self._desired_changed.set()

    async def _send_desired_state(self, client: aiomqtt.Client, edge_id: str) -> None:
        topics = wire.Topics(edge_id, self.prefix)
        now = datetime.now(UTC)
        cards, commands, offers = await asyncio.to_thread(self._desired_state, edge_id, now)
        if cards is not None:
            await self._publish(client, topics.cards, cards)
        for command in commands:
            await self._publish(client, topics.commands, command)
        if commands:
            ids = [command.id for command in commands]
            await asyncio.to_thread(desired.mark_sent, self.engine, ids, now)
        for offer in offers:
            await self._publish(client, topics.firmware_offer, offer)

    def _desired_state(
        self, edge_id: str, now: datetime
    ) -> tuple[wire.CardList | None, list[wire.OperatorCommand], list[wire.FirmwareOffer]]:
        return (
            desired.card_list_to_send(self.engine, edge_id),
            desired.commands_to_send(self.engine, edge_id, now),
            desired.offers_to_send(self.engine, edge_id),
        )

    async def _resend_desired_state(self, client: aiomqtt.Client) -> None:
        """Send again until the edges report it: right away after a change, and every
        `resend_interval` to every online edge."""
        interval = self.settings.desired.resend_interval
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancel that
            # comes as the event is set (a batch stored just before the stop).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._desired_changed.wait()
            self._desired_changed.clear()
            if self._send_now:
                edges, self._send_now = self._send_now, set()
            else:
                edges = set(await asyncio.to_thread(desired.online_edges, self.engine))
            for edge_id in sorted(edges):
                await self._send_desired_state(client, edge_id)
