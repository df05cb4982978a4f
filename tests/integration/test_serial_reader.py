"""The serial reader driver on a real pseudo-terminal: pyserial opens it as it would a
USB adapter or the Pi's UART, and the test sends what a reader would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import serial

from edge.readers.serial_port import SerialReader
from edge.readers.supervisor import UidRules, supervise_reader
from edge.readers.taps import OPENED, CardTap, ReaderError
from edge.settings import SerialReaderSettings
from tests.doubles.serial_pty import PtyReader, rdm6300_frame, serial_pty
from tests.reading import next_item, reading

TAG = bytes.fromhex("00AABBCC")  # printed on the card as 0011189196


def settings(port: str, **values: Any) -> SerialReaderSettings:
    return SerialReaderSettings(kind="serial", id="gate-1", port=port, **values)


@pytest.fixture
def pty_reader() -> Iterator[PtyReader]:
    with serial_pty() as reader:
        yield reader


async def test_frames_sent_by_the_reader_are_read(pty_reader: PtyReader) -> None:
    reader = SerialReader(settings(pty_reader.path))
    async with reading(reader) as items:
        assert await next_item(items) is OPENED
        pty_reader.send(rdm6300_frame(TAG))
        assert await next_item(items) == TAG
        # A frame in two writes, as a slow line delivers it.
        frame = rdm6300_frame(bytes.fromhex("0077A1F3"))
        pty_reader.send(frame[:5])
        pty_reader.send(frame[5:])
        assert await next_item(items) == bytes.fromhex("0077A1F3")


async def test_a_bad_checksum_is_rejected_and_the_next_frame_read(
    pty_reader: PtyReader, caplog: pytest.LogCaptureFixture
) -> None:
    reader = SerialReader(settings(pty_reader.path))
    async with reading(reader) as items:
        assert await next_item(items) is OPENED
        pty_reader.send(b"\x021200AABBCC00\x03")
        pty_reader.send(rdm6300_frame(bytes.fromhex("0077A1F3")))
        assert await next_item(items) == bytes.fromhex("0077A1F3")
    assert "checksum 00, the data gives CF" in caplog.text


async def test_the_reader_going_away_is_a_reader_error(pty_reader: PtyReader) -> None:
    reader = SerialReader(settings(pty_reader.path))
    async with reading(reader) as items:
        assert await next_item(items) is OPENED
        pty_reader.close()
        error = await next_item(items)
    assert isinstance(error, ReaderError)
    assert f"serial port {pty_reader.path} stopped answering (unplugged?)" in str(error)


async def test_a_missing_port_is_a_reader_error() -> None:
    reader = SerialReader(settings("/dev/ttyUSB-no-such-reader"))
    with pytest.raises(ReaderError) as raised:
        async for _ in reader.read():
            pass
    assert str(raised.value) == (
        "serial port /dev/ttyUSB-no-such-reader does not exist: check that the reader "
        "is plugged in and the port name (ls /dev/serial/by-id/)"
    )


async def test_stopping_the_reader_lets_go_of_the_port_promptly(pty_reader: PtyReader) -> None:
    reader = SerialReader(settings(pty_reader.path))
    async with reading(reader) as items:
        assert await next_item(items) is OPENED
        with pytest.raises(serial.SerialException, match="exclusively lock"):
            serial.Serial(pty_reader.path, exclusive=True)
        stop_asked = time.monotonic()
    # The read timeout bounds how long the reader's thread takes to see the stop.
    assert time.monotonic() - stop_asked < 1.0
    serial.Serial(pty_reader.path, exclusive=True).close()


@contextlib.asynccontextmanager
async def supervised(
    reader: SerialReader, rules: UidRules
) -> AsyncIterator[tuple[asyncio.Queue[CardTap], asyncio.Queue[tuple[bool, str]]]]:
    taps: asyncio.Queue[CardTap] = asyncio.Queue()
    statuses: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()

    async def on_tap(tap: CardTap) -> None:
        taps.put_nowait(tap)

    task = asyncio.create_task(
        supervise_reader(
            "gate-1",
            reader,
            on_tap,
            rules=rules,
            on_status=lambda _, online, reason: statuses.put_nowait((online, reason)),
            first_retry=0.05,
        )
    )
    try:
        yield taps, statuses
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_rdm6300_card_becomes_one_tap(pty_reader: PtyReader) -> None:
    reader = SerialReader(settings(pty_reader.path))
    async with supervised(reader, UidRules()) as (taps, statuses):
        async with asyncio.timeout(5):
            assert await statuses.get() == (True, "open")
            # The module repeats the frame while the card stays in the field.
            pty_reader.send(rdm6300_frame(TAG) * 3)
            pty_reader.send(rdm6300_frame(bytes.fromhex("0077A1F3")))
            first = await taps.get()
            second = await taps.get()
    assert (first.reader_id, first.uid) == ("gate-1", "00AABBCC")
    assert second.uid == "0077A1F3"


async def test_a_decimal_line_reader_gives_the_same_uid_as_the_rdm6300(
    pty_reader: PtyReader,
) -> None:
    reader = SerialReader(settings(pty_reader.path, protocol="lines", uid_format="decimal"))
    async with supervised(reader, UidRules(uid_format="decimal")) as (taps, statuses):
        async with asyncio.timeout(5):
            assert await statuses.get() == (True, "open")
            pty_reader.send(b"0011189196\r\n")
            tap = await taps.get()
    assert tap.uid == "00AABBCC"


async def test_the_supervisor_hears_the_reader_go_away(pty_reader: PtyReader) -> None:
    reader = SerialReader(settings(pty_reader.path))
    async with supervised(reader, UidRules()) as (_, statuses):
        async with asyncio.timeout(5):
            assert await statuses.get() == (True, "open")
            pty_reader.close()
            online, reason = await statuses.get()
    assert not online
    assert "stopped answering (unplugged?)" in reason
