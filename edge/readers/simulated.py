"""Simulated readers, for demos, installers and tests: taps arrive as "READER UID"
lines on a local Unix socket (what `ocpp-edge tap READER UID` writes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from edge.readers.taps import OPENED, RawUid, ReaderOpened

log = logging.getLogger(__name__)

MAX_LINE = 256


class SimulatedReader:
    """A reader whose cards come from the tap socket."""

    def __init__(self, reader_id: str, socket_path: Path) -> None:
        self.reader_id = reader_id
        self.socket_path = socket_path
        self.inbox: asyncio.Queue[str] = asyncio.Queue()

    async def read(self) -> AsyncIterator[RawUid | ReaderOpened]:
        yield OPENED
        while True:
            yield await self.inbox.get()

    def describe(self) -> str:
        return f"simulated, taps from {self.socket_path}"


class TapSocket:
    """`async with TapSocket(path, readers):` serves the socket; each line "READER UID"
    goes to that simulated reader and is answered "ok" or "error: <why>"."""

    def __init__(self, path: Path, readers: dict[str, SimulatedReader]) -> None:
        self.path = path
        self.readers = readers
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TapSocket:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a daemon that was killed
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE)
        # The service user and its group (installers in it) may tap; nobody else.
        os.chmod(self.path, 0o660)
        log.info("simulated taps on %s for readers %s", self.path, ", ".join(self.readers))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write((self._take(line.decode(errors="replace").strip()) + "\n").encode())
                await writer.drain()
        except (ValueError, ConnectionError) as error:  # an overlong line, a peer gone
            log.warning("tap socket: %s", error)
        finally:
            writer.close()

    def _take(self, line: str) -> str:
        parts = line.split()
        if len(parts) != 2:
            return "error: send one line 'READER UID'"
        reader_id, uid = parts
        target = self.readers.get(reader_id)
        if target is None:
            known = ", ".join(sorted(self.readers)) or "none"
            return f"error: no simulated reader {reader_id!r} (simulated readers: {known})"
        target.inbox.put_nowait(uid)
        return "ok"


SEND_TIMEOUT_SECONDS = 5.0


async def send_tap(path: Path, reader_id: str, uid: str) -> str:
    """Write one tap to a running daemon's socket; its answer ("ok" or "error: ...")."""
    async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(f"{reader_id} {uid}\n".encode())
            await writer.drain()
            return (await reader.readline()).decode().strip()
        finally:
            writer.close()
