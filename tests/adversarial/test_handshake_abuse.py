"""Odd handshakes and registrations: oversized requests, endless subprotocol lists, two
sockets racing for one charger id, and a replaced connection whose peer stopped reading."""

from __future__ import annotations

import asyncio
import socket

import pytest

from edge.ocpp.commands import ChargerTimeout, send_command
from tests.adversarial.raw_http import RawPeer, handshake_request
from tests.conftest import RunningEdge, StartEdge
from tests.ocpp_client import RawCharger
from tests.waiting import eventually


async def test_an_oversized_handshake_request_is_refused(edge: RunningEdge) -> None:
    assert edge.server.port is not None
    peer = await RawPeer.open(edge.server.port)
    padding = [f"X-Padding-{number}: {'p' * 4000}" for number in range(60)]
    peer.writer.write(handshake_request("/ocpp/BIG", ["Sec-WebSocket-Protocol: ocpp1.6", *padding]))
    head = await peer.answer(within=5)
    assert head.startswith(b"HTTP/1.1 431 "), head[:200]
    assert b"handshake_max_bytes" in head
    assert "BIG" not in edge.server.sessions


async def test_a_long_subprotocol_list_is_not_echoed_back(edge: RunningEdge) -> None:
    assert edge.server.port is not None
    peer = await RawPeer.open(edge.server.port)
    offered = [f"Sec-WebSocket-Protocol: {'x' * 90}{number:04d}" for number in range(100)]
    peer.writer.write(handshake_request("/ocpp/MANY", offered))
    answer = await peer.answer(within=5)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert len(answer) < 2048, len(answer)
    assert b"ocpp1.6" in answer and b"and 9" in answer  # "... and 95 more"


async def test_two_sockets_racing_for_one_charger_id_leave_it_connected(
    edge: RunningEdge,
) -> None:
    async with RawCharger(edge.url, "CP1") as first:
        await first.boot()
        current = first
        for _ in range(25):
            # The charger comes back on a new socket while its old one is still closing.
            second = await RawCharger(edge.url, "CP1").__aenter__()
            assert current.connection is not None
            await current.connection.close()
            current = second
            # A committed unit of work after both ends have settled.
            reply = await current.call(
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
            )
            assert reply[0] == 3
            assert edge.query("SELECT connected FROM chargers WHERE id = 'CP1'")[0][0] == 1
            assert "CP1" in edge.server.sessions
        assert current.connection is not None
        await current.connection.close()


def tcp_state(local_port: int, remote_port: int) -> str | None:
    """The kernel's state of the server's socket for one connection (/proc/net/tcp)."""
    states = {"01": "ESTABLISHED", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "07": "CLOSE"}
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == (
                remote_port
            ):
                return states.get(state, state)
    return None


async def stuck_charger(edge: RunningEdge, charger_id: str) -> tuple[asyncio.StreamWriter, int]:
    """A charger connected on a socket with a tiny receive buffer that, once a large call
    has filled every buffer on the way, reads nothing more; (its writer, its port)."""
    assert edge.server.port is not None
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", edge.server.port))
    reader, writer = await asyncio.open_connection(sock=raw)
    writer.write(handshake_request(f"/ocpp/{charger_id}", ["Sec-WebSocket-Protocol: ocpp1.6"]))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    await eventually(lambda: charger_id in edge.server.sessions)
    with pytest.raises(ChargerTimeout):
        await send_command(
            edge.context,
            charger_id,
            "DataTransfer",
            {"vendor_id": "test", "data": "x" * 8_000_000},
            answer_within=1,
        )
    port = raw.getsockname()[1]
    assert tcp_state(edge.server.port, port) == "ESTABLISHED"
    return writer, port


async def test_a_replaced_connection_that_stopped_reading_is_closed(edge: RunningEdge) -> None:
    writer, stuck_port = await stuck_charger(edge, "STUCK")
    async with RawCharger(edge.url, "STUCK") as replacement:
        # The old connection is ended within the close timeout, read or not.
        await eventually(
            lambda: tcp_state(edge.server.port or 0, stuck_port) != "ESTABLISHED", within=15
        )
        assert (await replacement.ok("Heartbeat", {}))["currentTime"]
    writer.transport.abort()


async def test_a_connection_whose_peer_stopped_reading_is_cut(start_edge: StartEdge) -> None:
    # The keepalive ping cannot find it out: the ping itself waits for the full buffer.
    edge = await start_edge(websocket_ping_interval=1)
    writer, stuck_port = await stuck_charger(edge, "STUCK")
    await eventually(
        lambda: tcp_state(edge.server.port or 0, stuck_port) != "ESTABLISHED", within=15
    )
    await eventually(lambda: "STUCK" not in edge.server.sessions)
    await eventually(
        lambda: edge.query("SELECT connected FROM chargers WHERE id = 'STUCK'")[0][0] == 0
    )
    writer.transport.abort()
