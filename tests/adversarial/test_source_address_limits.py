"""What one source address may hold on the OCPP port: open connections and handshakes in
progress are counted per address and in all, and a handshake has a time limit, so that
a flood of sockets or a slow sender (slowloris) cannot take the port from the site's
chargers."""

from __future__ import annotations

import contextlib
import time

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from tests.adversarial.raw_http import RawPeer
from tests.conftest import RunningEdge, StartEdge
from tests.waiting import eventually_answers

OCPP16 = [Subprotocol("ocpp1.6")]
DEFAULT_PER_ADDRESS = 64
HALF_SENT = b"GET /ocpp/SLOW HTTP/1.1\r\nHost: 127.0.0.1\r\n"


async def open_from(edge: RunningEdge, charger_id: str, source: str) -> ClientConnection:
    return await connect(
        f"{edge.url}/{charger_id}", subprotocols=OCPP16, open_timeout=5, local_addr=(source, 0)
    )


async def can_open(edge: RunningEdge, charger_id: str, source: str) -> bool:
    try:
        connection = await open_from(edge, charger_id, source)
    except InvalidStatus:
        return False
    await connection.close()
    return True


async def test_connections_per_source_address_are_bounded(edge: RunningEdge) -> None:
    held = [
        await open_from(edge, f"A-{number}", "127.0.0.3") for number in range(DEFAULT_PER_ADDRESS)
    ]
    try:
        with pytest.raises(InvalidStatus) as refused:
            await open_from(edge, "A-LAST", "127.0.0.3")
        response = refused.value.response
        assert response.status_code == 429
        body = response.body.decode()
        assert "127.0.0.3" in body and "max_connections_per_address" in body
        # Another address is not held back; the site's chargers stay connected.
        assert await can_open(edge, "B-1", "127.0.0.4")
        assert sum(name.startswith("A-") for name in edge.server.sessions) == DEFAULT_PER_ADDRESS
        # One leaves: there is room again.
        await held.pop().close()
        await eventually_answers(lambda: can_open(edge, "A-LAST", "127.0.0.3"))
    finally:
        for connection in held:
            await connection.close()
    assert edge.server.admission.refused["too many connections from one address"] >= 1


async def test_half_sent_handshakes_count_against_their_address(edge: RunningEdge) -> None:
    assert edge.server.port is not None
    slow = [await RawPeer.open(edge.server.port, "127.0.0.5") for _ in range(DEFAULT_PER_ADDRESS)]
    try:
        for peer in slow:
            peer.writer.write(HALF_SENT)
        # Refused at once, not when the half-sent handshakes time out.
        started = time.monotonic()
        late = await RawPeer.open(edge.server.port, "127.0.0.5")
        assert await late.status(within=5) == 429
        assert time.monotonic() - started < 2
        assert await can_open(edge, "ELSEWHERE", "127.0.0.6")
    finally:
        for peer in slow:
            peer.close()


async def test_a_half_sent_handshake_is_closed_after_the_handshake_timeout(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(handshake_timeout=1.0)
    assert edge.server.port is not None
    peer = await RawPeer.open(edge.server.port)
    peer.writer.write(HALF_SENT)
    started = time.monotonic()
    assert await peer.closed_by_server(within=10)
    assert 0.5 < time.monotonic() - started < 5


async def test_handshakes_in_progress_are_bounded_in_all(start_edge: StartEdge) -> None:
    edge = await start_edge(max_handshakes_in_progress=5, handshake_timeout=2.0)
    assert edge.server.port is not None
    slow = [await RawPeer.open(edge.server.port, f"127.0.2.{host}") for host in range(1, 6)]
    try:
        for peer in slow:
            peer.writer.write(HALF_SENT)
        late = await RawPeer.open(edge.server.port, "127.0.2.99")
        head = await late.answer(within=5)
        assert head.startswith(b"HTTP/1.1 503 ") and b"max_handshakes_in_progress" in head
        # Once the half-sent ones time out, chargers get in again.
        await eventually_answers(lambda: can_open(edge, "CP1", "127.0.2.99"), within=10)
    finally:
        for peer in slow:
            with contextlib.suppress(Exception):
                peer.close()


async def test_handshakes_per_minute_are_bounded_per_address(start_edge: StartEdge) -> None:
    # A peer reconnecting in a loop: each handshake costs a commit and events for the cloud.
    edge = await start_edge(handshakes_per_minute_per_address=5)
    for number in range(5):
        assert await can_open(edge, f"LOOP-{number}", "127.0.0.10")
    with pytest.raises(InvalidStatus) as refused:
        await open_from(edge, "LOOP-5", "127.0.0.10")
    assert refused.value.response.status_code == 429
    assert b"handshakes_per_minute_per_address" in refused.value.response.body
    assert await can_open(edge, "OTHER", "127.0.0.11")
    assert len(edge.query("SELECT id FROM chargers WHERE id LIKE 'LOOP-%'")) == 5
