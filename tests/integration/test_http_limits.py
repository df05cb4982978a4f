"""Every HTTP server of the edge and the cloud (local API, chargers' file server, cloud
REST API) bounds what one client can hold, over raw sockets against the running daemon
and aggregator: bodies past their route's limit are refused while they stream in, a
request sent byte by byte (slowloris) or a body trickled in is cut off, an answer left
unread is dropped, and connections are capped per address; meanwhile a normal request
is served."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.api import MAX_CARD_LIST_BODY_BYTES
from edge.cli import main
from edge.files.tokens import UploadTokens
from tests.conftest import RunningCloud, StartCloud, StartEdge, free_port
from tests.mosquitto import Mosquitto

# Short deadlines for the tests; the defaults are documented in docs/security.md.
FAST = {
    "header_timeout": 1.0,
    "body_timeout": 1.0,
    "min_body_rate": 4096,
    "send_timeout": 1.0,
    "max_connections_per_source": 6,
}
# However slow this machine is, far beyond the deadlines above.
WITHIN = 15.0
RESET = "/api/chargers/SIM1/commands/Reset"


@dataclass
class Server:
    name: str
    port: int
    # A request that must keep working, and the headers it needs.
    probe_path: str
    headers: dict[str, str]
    # A route that reads a body.
    body_method: str
    body_path: str


@dataclass
class Answer:
    status: int
    head: str
    body: bytes


async def read_answer(reader: asyncio.StreamReader) -> Answer | None:
    """The answer on a connection, or None when it closes without one."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    text = head.decode("latin-1")
    length = 0
    for line in text.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return Answer(int(text.split()[1]), text, body)


@contextlib.asynccontextmanager
async def raw(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def request_head(method: str, path: str, headers: dict[str, str], extra: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *extra.splitlines()]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def served(server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(
            f"http://127.0.0.1:{server.port}{server.probe_path}", headers=server.headers
        )
    assert answer.status_code < 500, (server.name, answer.status_code)


@pytest.fixture
def limits() -> dict[str, Any]:
    """The limits every server is started with (a test may parametrize them)."""
    return FAST


@pytest.fixture
async def edge_servers(
    start_edge: StartEdge, tmp_path: Path, limits: dict[str, Any]
) -> list[Server]:
    edge = await start_edge(
        with_api=True,
        files={"host": "127.0.0.1", "port": free_port(), **limits},
        sections={"api": limits},
    )
    image = tmp_path / "big.bin"
    image.write_bytes(b"\x5a" * (48 << 20))
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[store]\npath = "{edge.db_path}"\n[files]\ndirectory = "{edge.settings.files.directory}"\n'
    )
    assert main(["firmware", "add", str(image), "--config", str(config)]) == 0
    assert edge.site.files is not None
    token = UploadTokens.load_or_create(edge.settings.files.directory).issue("CP-1", 3600)
    return [
        Server("local API", edge.api_port, "/api/chargers", {}, "POST", RESET),
        Server(
            "file server",
            edge.site.files.port,
            "/firmware/none.bin",
            {},
            "PUT",
            f"/uploads/{token}/slow.txt",
        ),
    ]


@pytest.fixture
async def cloud(start_cloud: StartCloud, broker: Mosquitto, limits: dict[str, Any]) -> RunningCloud:
    return await start_cloud(broker, api=limits)


@pytest.fixture
def servers(edge_servers: list[Server], cloud: RunningCloud) -> list[Server]:
    assert cloud.site.api is not None
    port, headers = cloud.site.api.port, cloud.api_headers
    return [
        *edge_servers,
        Server("cloud API", port, "/api/edges", headers, "PUT", "/api/edges/site-1/cards"),
    ]


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> Answer | None:
    """Read until the server closes the connection; what it answered, if anything."""
    async with asyncio.timeout(seconds):
        answer = await read_answer(reader)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        return answer


async def test_headers_sent_byte_by_byte_are_cut_off(servers: list[Server]) -> None:
    async def slowloris(server: Server) -> Answer | None:
        async with raw(server.port) as (reader, writer):
            head = request_head("GET", server.probe_path, server.headers)[:-2]

            async def trickle() -> None:
                for byte in head:
                    writer.write(bytes([byte]))
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    await asyncio.sleep(0.1)

            sender = asyncio.create_task(trickle())
            try:
                return await closed_within(reader, WITHIN)
            finally:
                sender.cancel()

    for server in servers:
        clients = [asyncio.create_task(slowloris(server)) for _ in range(4)]
        await served(server)  # meanwhile
        answers = await asyncio.gather(*clients)
        for answer in answers:
            assert answer is not None and answer.status == 408, server.name


async def test_a_body_trickled_in_is_cut_off(servers: list[Server]) -> None:
    for server in servers:
        async with raw(server.port) as (reader, writer):
            extra = "Content-Type: application/json\r\nContent-Length: 100000"
            writer.write(request_head(server.body_method, server.body_path, server.headers, extra))

            async def trickle() -> None:
                for _ in range(10_000):
                    writer.write(b" ")
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    await asyncio.sleep(0.2)

            sender = asyncio.create_task(trickle())
            try:
                await closed_within(reader, WITHIN)
            finally:
                sender.cancel()
        await served(server)


@pytest.mark.parametrize("limits", [{"max_connections_per_source": 6}])
async def test_connections_are_capped_per_address(servers: list[Server]) -> None:
    for server in servers:
        async with contextlib.AsyncExitStack() as stack:
            held = [await stack.enter_async_context(raw(server.port)) for _ in range(6)]
            async with raw(server.port) as (reader, _):
                answer = await closed_within(reader, WITHIN)
                assert answer is not None and answer.status == 503, server.name
                assert b"too many connections from one address" in answer.body
            assert len(held) == 6
        await served(server)


async def test_an_answer_left_unread_is_dropped(edge_servers: list[Server]) -> None:
    files = next(server for server in edge_servers if server.name == "file server")
    size = 48 << 20
    async with raw(files.port) as (reader, writer):
        writer.write(request_head("GET", "/firmware/big.bin", {}))
        await writer.drain()
        await asyncio.sleep(4 * FAST["send_timeout"])  # reading nothing meanwhile
        received = 0
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(WITHIN):
                while chunk := await reader.read(1 << 20):
                    received += len(chunk)
    assert received < size
    await served(files)


async def post_stream(
    port: int, method: str, path: str, headers: dict[str, str]
) -> tuple[Answer | None, int]:
    """Send a chunked body without end until the server answers; (its answer, bytes sent)."""
    async with raw(port) as (reader, writer):
        extra = "Content-Type: application/json\r\nTransfer-Encoding: chunked"
        writer.write(request_head(method, path, headers, extra))
        sent = 0
        answer_task = asyncio.create_task(read_answer(reader))
        chunk = b" " * 65536
        while not answer_task.done() and sent < (1 << 32):
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            try:
                await writer.drain()
            except ConnectionError:
                break
            sent += len(chunk)
            await asyncio.sleep(0)
        async with asyncio.timeout(WITHIN):
            return await answer_task, sent


async def test_bodies_past_their_limit_are_refused_as_they_arrive(
    edge_servers: list[Server], cloud: RunningCloud
) -> None:
    api = edge_servers[0]
    assert cloud.site.api is not None
    cloud_port = cloud.site.api.port
    routes: list[tuple[int, str, str, dict[str, str], int]] = [
        (cloud_port, "POST", "/api/enroll", {}, 65536),
        (cloud_port, "POST", "/api/enroll/code", {}, 65536),
        # A card list may fill every part an edge takes.
        (cloud_port, "PUT", "/api/edges/site-1/cards", cloud.api_headers, MAX_CARD_LIST_BODY_BYTES),
        (api.port, "POST", RESET, {}, 1 << 20),
    ]
    for port, method, path, headers, limit in routes:
        # Declared: refused before a byte of it is read.
        async with raw(port) as (reader, writer):
            extra = "Content-Type: application/json\r\nContent-Length: 314572800"
            writer.write(request_head(method, path, headers, extra))
            async with asyncio.timeout(WITHIN):
                answer = await read_answer(reader)
            assert answer is not None and answer.status == 413, path
            assert "connection: close" in answer.head.lower()
        # Chunked (no length): refused once past the limit, not after reading it all.
        answer, sent = await post_stream(port, method, path, headers)
        assert answer is not None and answer.status == 413, path
        assert sent < limit + (8 << 20), path
