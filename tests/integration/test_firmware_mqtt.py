"""Firmware from the cloud to the edge's file directory through a real mosquitto: whole
transfers, transfers cut by a broker killed and restarted empty, a dropped client and an
edge restarted from its SQLite state (each resumed, not restarted), and images refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.firmware import make_offer, public_key_text
from contract.firmware import parse_target
from contract.protocol import FirmwareRequest, Topics
from edge.files.store import FileDirectory
from edge.store.writer import StoreWriter
from edge.sync.firmware import FirmwareDownloads
from tests.doubles.firmware_mqtt import (
    CloudFirmwareResponder,
    ConnectionCut,
    EdgeFirmwareLoop,
    EdgeStopped,
    ProgressRecorder,
)
from tests.mosquitto import Mosquitto

CHUNK = 65536
EDGE_ID = "site-7"
TARGETS = [parse_target("ACME/*")]
OnRequest = Callable[[FirmwareRequest], Awaitable[None]]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto that sends each message at once: with Nagle's algorithm on (its
    default) every chunk waited ~40 ms for the edge's delayed ACK (44 ms a chunk against
    2.5 ms, measured here); the clients turn it off on their side too."""
    mosquitto = Mosquitto(tmp_path / "broker", "set_tcp_nodelay true")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@asynccontextmanager
async def running(task: Awaitable[None]) -> AsyncIterator[asyncio.Task[None]]:
    """A task cancelled and awaited on leaving, whatever it was doing."""
    started = asyncio.ensure_future(task)
    try:
        yield started
    finally:
        started.cancel()
        with contextlib.suppress(asyncio.CancelledError, EdgeStopped):
            await started


class Site:
    """The edge's firmware side: its store, file directory and the loop feeding them."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, public_key: str) -> None:
        self.db = tmp_path / "edge.db"
        self.files = FileDirectory(tmp_path / "files")
        self.broker = broker
        self.public_key = public_key
        self.progress = ProgressRecorder()

    @asynccontextmanager
    async def edge(
        self, on_request: OnRequest | None = None
    ) -> AsyncIterator[tuple[EdgeFirmwareLoop, asyncio.Task[None]]]:
        """One run of the edge component, subscribed, until the block ends."""
        async with StoreWriter(self.db) as store:
            downloads = FirmwareDownloads(store, self.files, self.public_key, self.progress)
            loop = EdgeFirmwareLoop(
                downloads, self.broker.port, Topics(EDGE_ID), on_request=on_request
            )
            async with running(loop.run()) as task:
                await wait_subscribed(loop.subscribed, task)
                yield loop, task


async def wait_subscribed(subscribed: asyncio.Event, task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(5):
        await asyncio.wait(
            [asyncio.ensure_future(subscribed.wait()), task], return_when=asyncio.FIRST_COMPLETED
        )
    if task.done():
        task.result()


def same_bytes(one: Path, other: Path) -> bool:
    return one.read_bytes() == other.read_bytes()


def write_image(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


async def test_transfer_cut_three_times_resumes_and_serves_the_same_bytes(
    tmp_path: Path, broker: Mosquitto
) -> None:
    fleet_key = Ed25519PrivateKey.generate()
    image = write_image(tmp_path / "cloud" / "cp-3.1.bin", 24 * CHUNK + 4321)  # 25 chunks
    offer = make_offer(image, "cp-3.1.bin", "3.1", fleet_key, targets=TARGETS, chunk_size=CHUNK)
    cloud = CloudFirmwareResponder(broker.port, {"cp-3.1.bin": image}, max_chunk=CHUNK)
    site = Site(tmp_path, broker, public_key_text(fleet_key))
    cuts: list[tuple[int, str]] = []

    async def cut_mid_transfer(request: FirmwareRequest) -> None:
        # Each cut comes right after a request went out, while its chunk is on the way.
        if not cuts and request.offset >= offer.size // 4:
            cuts.append((request.offset, "broker"))
            pid = broker.process.pid if broker.process else None
            # On the loop's thread, blocking it for the ~20 ms a restart takes: the
            # clients find the broker gone and come back to an empty one.
            broker.kill()
            broker.start(empty=True)
            assert broker.process is not None and broker.process.pid != pid
        elif len(cuts) == 1 and request.offset >= offer.size // 2:
            cuts.append((request.offset, "client"))
            raise ConnectionCut
        elif len(cuts) == 2 and request.offset >= offer.size * 3 // 4:
            cuts.append((request.offset, "edge"))
            raise EdgeStopped

    async with running(cloud.run()):
        await asyncio.wait_for(cloud.subscribed.wait(), 5)
        async with site.edge(on_request=cut_mid_transfer) as (first_run, task):
            await cloud.offer(EDGE_ID, offer)
            with pytest.raises(EdgeStopped):  # the third cut ends the first run
                await asyncio.wait_for(task, 10)
        assert [kind for _, kind in cuts] == ["broker", "client", "edge"]
        assert first_run.connections == 3  # at first, after the broker, after the cut
        # The edge again, from its SQLite file and partial file: it asks for what it lacks.
        async with site.edge() as (second_run, _):
            await site.progress.until("cp-3.1.bin", "verified")
        assert second_run.requested[0].offset >= cuts[2][0]

    assert same_bytes(site.files.firmware / "cp-3.1.bin", image)
    assert os.listdir(site.files.firmware) == ["cp-3.1.bin"]
    # Resumed, never restarted: requests only move forward, and little was sent twice.
    offsets = [request.offset for request in cloud.requests]
    assert offsets == sorted(offsets)
    assert cloud.bytes_served - offer.size <= 6 * CHUNK


async def test_tampered_image_and_bad_signature_are_refused(
    tmp_path: Path, broker: Mosquitto
) -> None:
    fleet_key = Ed25519PrivateKey.generate()
    tampered = write_image(tmp_path / "cloud" / "cp-4.0.bin", 8 * CHUNK)
    offer = make_offer(tampered, "cp-4.0.bin", "4.0", fleet_key, targets=TARGETS, chunk_size=CHUNK)
    with tampered.open("r+b") as file:  # changed in the cloud after it was offered
        file.seek(5 * CHUNK + 99)
        file.write(b"\x00\xff")
    forged = write_image(tmp_path / "cloud" / "cp-4.1.bin", 2 * CHUNK)
    forged_offer = make_offer(
        forged, "cp-4.1.bin", "4.1", Ed25519PrivateKey.generate(), targets=TARGETS
    )
    images = {"cp-4.0.bin": tampered, "cp-4.1.bin": forged}
    cloud = CloudFirmwareResponder(broker.port, images, max_chunk=CHUNK)
    site = Site(tmp_path, broker, public_key_text(fleet_key))

    async with running(cloud.run()), site.edge():
        await asyncio.wait_for(cloud.subscribed.wait(), 5)
        await cloud.offer(EDGE_ID, forged_offer)
        await cloud.offer(EDGE_ID, offer)
        bad_signature = await site.progress.until("cp-4.1.bin", "rejected")
        bad_digest = await site.progress.until("cp-4.0.bin", "rejected")

    assert "signature" in bad_signature.detail
    assert "SHA-256" in bad_digest.detail and bad_digest.bytes == offer.size
    # The forged image was never fetched; the tampered one was, and is gone.
    assert {request.image for request in cloud.requests} == {"cp-4.0.bin"}
    assert os.listdir(site.files.firmware) == []
