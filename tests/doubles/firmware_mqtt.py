"""The two MQTT ends of the firmware path at their simplest, over a real broker: a cloud
responder that offers images and answers an edge's requests with chunks, and an edge loop
that feeds offers and chunks to `FirmwareDownloads` and publishes the requests it returns.
Both reconnect when the broker goes away. The daemon's own sync links are built
elsewhere; these stand in for them as peers in tests."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt
from pydantic import ValidationError

from cloud.firmware import ChunkRequestError, answer_request
from contract.protocol import (
    DEFAULT_TOPIC_PREFIX,
    FirmwareChunk,
    FirmwareOffer,
    FirmwareProgress,
    FirmwareRequest,
    Topics,
    edge_id_of,
)
from edge.sync.firmware import FirmwareDownloads

log = logging.getLogger(__name__)

# Between attempts to reach a broker that is restarting: there is no event to await.
RECONNECT_DELAY = 0.05
# A request is small and waits for an answer: without this, Nagle's algorithm and the
# peer's delayed ACK hold the end of each chunk or request back by ~40 ms.
NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


class ConnectionCut(Exception):
    """Raised by an `on_request` hook: the edge's client leaves the broker and comes back."""


class EdgeStopped(Exception):
    """Raised by an `on_request` hook: the edge's loop ends, as the daemon would stop."""


def _payload(message: aiomqtt.Message) -> bytes | None:
    return bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else None


class CloudFirmwareResponder:
    """The aggregator's side: `await responder.offer(edge_id, offer)`; `run()` answers
    every edge's requests from `images` (name -> file) and counts what it served."""

    def __init__(
        self,
        port: int,
        images: dict[str, Path],
        *,
        prefix: str = DEFAULT_TOPIC_PREFIX,
        max_chunk: int = 65536,
    ) -> None:
        self.port = port
        self.images = images
        self.prefix = prefix
        self.max_chunk = max_chunk
        self.requests: list[FirmwareRequest] = []
        self.bytes_served = 0
        self.subscribed = asyncio.Event()

    async def offer(self, edge_id: str, offer: FirmwareOffer) -> None:
        async with aiomqtt.Client(
            "127.0.0.1", self.port, identifier="cloud-offers", socket_options=NO_DELAY
        ) as client:
            topic = Topics(edge_id, self.prefix).firmware_offer
            await client.publish(topic, offer.model_dump_json(), qos=1)

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier="cloud-firmware", socket_options=NO_DELAY
                ) as client:
                    await client.subscribe(f"{self.prefix}/+/firmware/request", qos=1)
                    self.subscribed.set()
                    await self._serve(client)
            except* aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(RECONNECT_DELAY)

    async def _serve(self, client: aiomqtt.Client) -> None:
        # Receiving apart from answering, as the aggregator does: a qos-1 publish whose
        # connection drops before its PUBACK would otherwise wait out the client's whole
        # timeout; here the receiving side sees the drop and ends the answering side.
        requests: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()

        async def receive() -> None:
            async for message in client.messages:
                requests.put_nowait(message)

        async def answer() -> None:
            while True:
                await self._answer(client, await requests.get())

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(receive())
            tasks.create_task(answer())

    async def _answer(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        found = edge_id_of(str(message.topic), self.prefix)
        payload = _payload(message)
        if found is None or found[1] != "firmware/request" or payload is None:
            return
        try:
            request = FirmwareRequest.model_validate_json(payload)
        except ValidationError as error:
            log.warning("firmware request from %s refused: %s", found[0], error)
            return
        path = self.images.get(request.image)
        if path is None:
            log.warning("%s asks for %s, which is not offered", found[0], request.image)
            return
        try:
            chunk = await asyncio.to_thread(answer_request, path, request, self.max_chunk)
        except ChunkRequestError as error:
            log.warning("%s", error)
            return
        self.requests.append(request)
        self.bytes_served += len(base64.b64decode(chunk.data))
        topic = Topics(found[0], self.prefix).firmware_chunk
        await client.publish(topic, chunk.model_dump_json(), qos=1)


class EdgeFirmwareLoop:
    """The edge's side: subscribes to its offers and chunks, feeds `downloads`, publishes
    the requests it returns, and asks again for what is due after each connection and
    whenever nothing arrived for `reask_after` seconds. `on_request` sees each request
    after it is published (and may raise ConnectionCut or EdgeStopped)."""

    def __init__(
        self,
        downloads: FirmwareDownloads,
        port: int,
        topics: Topics,
        *,
        reask_after: float = 0.3,
        on_request: Callable[[FirmwareRequest], Awaitable[None]] | None = None,
    ) -> None:
        self.downloads = downloads
        self.port = port
        self.topics = topics
        self.reask_after = reask_after
        self.on_request = on_request
        self.requested: list[FirmwareRequest] = []
        self.connections = 0
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        identifier = f"edge-{self.topics.edge_id}"
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=identifier, socket_options=NO_DELAY
                ) as client:
                    await client.subscribe(
                        [(self.topics.firmware_offer, 1), (self.topics.firmware_chunk, 1)]
                    )
                    self.connections += 1
                    self.subscribed.set()
                    await self._ask(client, await self.downloads.pending_requests())
                    await self._serve(client)
            except (aiomqtt.MqttError, ConnectionCut):
                self.subscribed.clear()
                await asyncio.sleep(RECONNECT_DELAY)

    async def _serve(self, client: aiomqtt.Client) -> None:
        while True:
            try:
                async with asyncio.timeout(self.reask_after):
                    message = await anext(client.messages)
            except TimeoutError:
                await self._ask(client, await self.downloads.pending_requests())
                continue
            request = await self._handle(message)
            if request is not None:
                await self._ask(client, [request])

    async def _handle(self, message: aiomqtt.Message) -> FirmwareRequest | None:
        payload = _payload(message)
        if payload is None:
            return None
        try:
            if message.topic.matches(self.topics.firmware_offer):
                return await self.downloads.offered(FirmwareOffer.model_validate_json(payload))
            if message.topic.matches(self.topics.firmware_chunk):
                return await self.downloads.chunk(FirmwareChunk.model_validate_json(payload))
        except ValidationError as error:
            log.warning("firmware message on %s refused: %s", message.topic, error)
        return None

    async def _ask(self, client: aiomqtt.Client, requests: list[FirmwareRequest]) -> None:
        for request in requests:
            await client.publish(self.topics.firmware_request, request.model_dump_json(), qos=1)
            self.requested.append(request)
            if self.on_request is not None:
                await self.on_request(request)


class ProgressRecorder:
    """A `report` callback that keeps every event and lets a test await one."""

    def __init__(self) -> None:
        self.events: list[FirmwareProgress] = []
        self._arrived = asyncio.Event()

    def __call__(self, db: object, progress: FirmwareProgress) -> None:
        self.events.append(progress)
        self._arrived.set()

    async def until(self, image: str, status: str, within: float = 10.0) -> FirmwareProgress:
        async with asyncio.timeout(within):
            while (event := self._find(image, status)) is None:
                self._arrived.clear()
                await self._arrived.wait()
        return event

    def _find(self, image: str, status: str) -> FirmwareProgress | None:
        return next((e for e in self.events if (e.image, e.status) == (image, status)), None)
