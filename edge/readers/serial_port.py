"""Serial card readers (pyserial, in a thread): RDM6300-style 125 kHz modules that send
STX-framed EM4100 IDs, and readers that send one UID per line. The parsers are pure:
they take bytes as they arrive, in any chunks, and return the UIDs they complete.

An RDM6300 frame carries a version byte and the card's 4 tag bytes; only the tag bytes
are handed on. They are the number printed on the card (10 decimal digits) and what
125 kHz keyboard-wedge readers type, so a card enrolled at one reader works at the other.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import serial

from edge.readers.taps import OPENED, RawUid, ReaderError, ReaderOpened, read_in_thread
from edge.settings import SerialReaderSettings

log = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
# 10 hex digits (version byte + 4 tag bytes), then 2 hex digits of checksum.
RDM6300_DIGITS = 12
LONGEST_LINE = 64
_HEX_DIGITS = frozenset(b"0123456789ABCDEFabcdef")
_LINE_ENDS = frozenset(b"\r\n")


class FrameParser(Protocol):
    """Turns the bytes a reader sends, in whatever chunks they arrive, into UIDs."""

    def feed(self, data: bytes) -> list[RawUid]: ...


class Rdm6300Parser:
    """STX, 10 ASCII hex digits, 2 ASCII hex digits of checksum (XOR of the 5 bytes), ETX.

    A damaged frame is logged with the reason and dropped; parsing starts again at the
    next STX. The module repeats the frame while a card stays in the field: each copy
    is returned (the supervisor drops the repeats).
    """

    def __init__(self) -> None:
        self._frame = bytearray()
        self._in_frame = False
        self._stray_bytes = 0

    def feed(self, data: bytes) -> list[RawUid]:
        uids: list[RawUid] = []
        for byte in data:
            if byte == STX:
                self._start_frame()
            elif not self._in_frame:
                self._stray_bytes += 1
            elif byte == ETX:
                self._in_frame = False
                uid = self._finish_frame(bytes(self._frame))
                if uid is not None:
                    uids.append(uid)
            elif len(self._frame) == RDM6300_DIGITS:
                log.warning("RDM6300 frame rejected: no ETX after %d digits", RDM6300_DIGITS)
                self._in_frame = False
                self._stray_bytes += 1
            else:
                self._frame.append(byte)
        return uids

    def _start_frame(self) -> None:
        if self._in_frame:
            log.warning(
                "RDM6300 frame rejected: cut off after %d bytes by the next STX", len(self._frame)
            )
        if self._stray_bytes:
            log.warning("RDM6300: skipped %d bytes outside a frame", self._stray_bytes)
            self._stray_bytes = 0
        self._frame.clear()
        self._in_frame = True

    @staticmethod
    def _finish_frame(frame: bytes) -> bytes | None:
        """The 4 tag bytes of a whole frame (between STX and ETX), or None if damaged."""
        if len(frame) != RDM6300_DIGITS:
            log.warning(
                "RDM6300 frame rejected: %d digits between STX and ETX, not %d",
                len(frame),
                RDM6300_DIGITS,
            )
            return None
        if not _HEX_DIGITS.issuperset(frame):
            log.warning("RDM6300 frame rejected: %r is not hexadecimal", frame)
            return None
        data = bytes.fromhex(frame[:10].decode("ascii"))
        checksum = int(frame[10:], 16)
        computed = 0
        for byte in data:
            computed ^= byte
        if checksum != computed:
            log.warning(
                "RDM6300 frame rejected: checksum %02X, the data gives %02X (%s)",
                checksum,
                computed,
                frame.decode("ascii"),
            )
            return None
        return data[1:]  # without the version (customer) byte


class LineParser:
    """One UID per line, ended by CR, LF or CRLF; surrounding whitespace is stripped and
    empty lines ignored. The text is handed on as it is (hex or decimal, per settings)."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._too_long = False

    def feed(self, data: bytes) -> list[RawUid]:
        uids: list[RawUid] = []
        for byte in data:
            if byte in _LINE_ENDS:
                uid = self._finish_line()
                if uid is not None:
                    uids.append(uid)
            elif self._too_long:
                continue  # the rest of a rejected line
            elif len(self._line) == LONGEST_LINE:
                log.warning("line rejected: longer than %d characters", LONGEST_LINE)
                self._too_long = True
                self._line.clear()
            else:
                self._line.append(byte)
        return uids

    def _finish_line(self) -> str | None:
        line = bytes(self._line)
        self._line.clear()
        if self._too_long:
            self._too_long = False
            return None
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            log.warning("line rejected: %r is not ASCII text", line)
            return None
        return text or None


def parser_for(protocol: str) -> FrameParser:
    """A fresh parser for a `protocol` of SerialReaderSettings."""
    if protocol == "rdm6300":
        return Rdm6300Parser()
    if protocol == "lines":
        return LineParser()
    raise ValueError(f"unknown serial reader protocol {protocol!r}")


def open_failure(port: str, error: OSError) -> ReaderError:
    """What an installer should do when `port` cannot be opened."""
    if error.errno == errno.ENOENT:
        return ReaderError(
            f"serial port {port} does not exist: check that the reader is plugged in and "
            "the port name (ls /dev/serial/by-id/)"
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        return ReaderError(
            f"no permission to open serial port {port}: add the edge's user to the "
            "dialout group (sudo usermod -aG dialout USER) and restart the edge"
        )
    if error.errno in (errno.EWOULDBLOCK, errno.EBUSY):
        return ReaderError(f"serial port {port} is in use by another program")
    return ReaderError(f"cannot open serial port {port}: {error}")


class SerialReader:
    """A card reader on a serial port (or a pyserial URL such as socket://HOST:PORT)."""

    def __init__(self, settings: SerialReaderSettings, *, read_timeout: float = 0.1) -> None:
        self.settings = settings
        # How long a read waits for bytes: the longest the thread takes to see a stop.
        self.read_timeout = read_timeout

    def describe(self) -> str:
        return f"{self.settings.port} {self.settings.baud} baud, {self.settings.protocol}"

    def read(self) -> AsyncIterator[RawUid | ReaderOpened]:
        return read_in_thread(self._read_loop, self.settings.id)

    def _read_loop(
        self, emit: Callable[[RawUid | ReaderOpened], None], stopping: threading.Event
    ) -> None:
        port_name = self.settings.port
        try:
            port = serial.serial_for_url(
                port_name,
                baudrate=self.settings.baud,
                timeout=self.read_timeout,
                exclusive=True,  # a second reader on the same port would steal bytes
            )
        except OSError as error:  # pyserial's SerialException is an OSError
            raise open_failure(port_name, error) from error
        except ValueError as error:  # a URL pyserial does not know
            raise ReaderError(f"cannot open serial port {port_name}: {error}") from error
        try:
            emit(OPENED)
            parser = parser_for(self.settings.protocol)
            while not stopping.is_set():
                try:
                    data = port.read(max(1, port.in_waiting))
                except OSError as error:
                    raise ReaderError(
                        f"serial port {port_name} stopped answering (unplugged?): {error}"
                    ) from error
                if data:
                    for uid in parser.feed(data):
                        emit(uid)
        finally:
            port.close()
