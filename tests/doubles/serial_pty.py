"""A pseudo-terminal pair standing in for a serial card reader: the edge opens the
slave path like any serial port, and the test writes what the reader would send."""

from __future__ import annotations

import os
import pty
import tty
from collections.abc import Iterator
from contextlib import contextmanager


class PtyReader:
    """The reader's side of the line. `path` is the port the edge opens."""

    def __init__(self) -> None:
        self._master, self._slave = pty.openpty()
        # Raw: bytes pass unchanged (no CR/LF translation, no echo back to us).
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self.closed = False

    def send(self, data: bytes) -> None:
        """Bytes as the reader sends them, in this chunk."""
        os.write(self._master, data)

    def close(self) -> None:
        """The reader goes away: the edge's next read of the port fails."""
        if not self.closed:
            self.closed = True
            # Our slave descriptor keeps the line up while the edge reopens the port.
            os.close(self._slave)
            os.close(self._master)


@contextmanager
def serial_pty() -> Iterator[PtyReader]:
    """A fresh pty pair, closed on exit."""
    reader = PtyReader()
    try:
        yield reader
    finally:
        reader.close()


def rdm6300_frame(tag: bytes, version: int = 0x01) -> bytes:
    """What an RDM6300 sends for a card: STX, 10 hex digits, XOR checksum, ETX."""
    data = bytes([version]) + tag
    checksum = 0
    for byte in data:
        checksum ^= byte
    return b"\x02" + data.hex().upper().encode() + f"{checksum:02X}".encode() + b"\x03"
