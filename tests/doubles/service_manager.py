"""systemd's two sockets as a test sees them: the notify socket a `Type=notify` service
reports to (READY=1, STATUS=, WATCHDOG=1, STOPPING=1), and journald's native socket,
reached by a process started in its own mount namespace where /run is a directory of
the test's (root only: `unshare --mount`)."""

from __future__ import annotations

import asyncio
import shlex
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Notification:
    """One datagram: its "KEY=value" lines, and when it arrived (monotonic seconds)."""

    fields: dict[str, str]
    at: float


class DatagramSocket:
    """A bound Unix datagram socket, read on the event loop."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self.socket.setblocking(False)

    async def receive(self, within: float) -> bytes:
        async with asyncio.timeout(within):
            return await asyncio.get_running_loop().sock_recv(self.socket, 65536)

    def close(self) -> None:
        self.socket.close()


@dataclass
class NotifySocket:
    """$NOTIFY_SOCKET for a service: a path, or an abstract name starting with `@`."""

    address: str
    received: list[Notification] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._socket = DatagramSocket(self.address)

    async def next(self, within: float = 10.0) -> Notification:
        data = await self._socket.receive(within)
        lines = data.decode().split("\n")
        fields = dict(line.split("=", 1) for line in lines if line)
        notification = Notification(fields, time.monotonic())
        self.received.append(notification)
        return notification

    async def until(
        self, wanted: Callable[[Notification], bool], within: float = 10.0
    ) -> Notification:
        """Read until a notification is `wanted`; every one read stays in `received`."""
        async with asyncio.timeout(within):
            while not wanted(notification := await self.next(within)):
                pass
        return notification

    def close(self) -> None:
        self._socket.close()


class JournalSocket:
    """journald's /run/systemd/journal/socket inside `directory` (the namespace's /run),
    holding the entries that arrive, each as its fields."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "systemd" / "journal").mkdir(parents=True)
        self._socket = DatagramSocket(str(directory / "systemd" / "journal" / "socket"))
        self.entries: list[dict[str, bytes]] = []

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run where /run is this directory (for that process alone)."""
        script = f"mount --bind {shlex.quote(str(self.directory))} /run && exec " + (
            " ".join(shlex.quote(part) for part in argv)
        )
        return ["unshare", "--mount", "sh", "-c", script]

    async def until(
        self, wanted: Callable[[dict[str, bytes]], bool], within: float = 10.0
    ) -> dict[str, bytes]:
        async with asyncio.timeout(within):
            while True:
                entry = parse_journal_entry(await self._socket.receive(within))
                self.entries.append(entry)
                if wanted(entry):
                    return entry

    def close(self) -> None:
        self._socket.close()


def parse_journal_entry(data: bytes) -> dict[str, bytes]:
    """journald's native protocol: `NAME=value\\n`, or for a value that holds a newline
    `NAME\\n`, its length as 64-bit little-endian, the value, `\\n`."""
    entry: dict[str, bytes] = {}
    position = 0
    while position < len(data):
        end = data.index(b"\n", position)
        line = data[position:end]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            position = end + 1
        else:
            name = line
            (size,) = struct.unpack_from("<Q", data, end + 1)
            value = data[end + 9 : end + 9 + size]
            position = end + 9 + size + 1
        entry[name.decode()] = value
    return entry


def namespaces_available() -> bool:
    """Whether this machine lets the test give a process its own mount namespace."""
    try:
        return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False
