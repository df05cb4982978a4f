"""Raw TCP peers of the OCPP port: half-sent handshakes, oversized requests, sockets that
stop reading; what a websockets client would never send."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterable
from dataclasses import dataclass


def handshake_request(path: str, headers: Iterable[str] = ()) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class RawPeer:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> RawPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    async def answer(self, within: float = 5.0) -> bytes:
        """What the server sends until it closes, or until its response's head when it
        accepts (a 101 does not end the connection)."""
        received = b""
        async with asyncio.timeout(within):
            while chunk := await self.reader.read(65536):
                received += chunk
                if received.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in received:
                    break
        return received

    async def status(self, within: float = 5.0) -> int | None:
        """The HTTP status the server answers with, or None if it just closes."""
        head = await self.answer(within)
        if not head.startswith(b"HTTP/1.1 "):
            return None
        return int(head.split(b" ", 2)[1])

    async def closed_by_server(self, within: float) -> bool:
        """Whether the server ends the connection within `within` seconds."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.transport.abort()
