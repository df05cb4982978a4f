"""The NFC reader driver on nfcpy's real udp driver, with cards emulated on loopback."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Literal

import pytest

from edge.readers.nfc import NfcReader, list_nfc_devices
from edge.readers.supervisor import supervise_reader
from edge.readers.taps import OPENED, CardTap, RawUid, ReaderError, ReaderOpened
from edge.settings import NfcReaderSettings
from tests.doubles.nfc_tags import TagKind, emulated_tag

Target = Literal["106A", "106B", "212F", "424F"]

# Each reader polls only for the card's technology: over udp a poll that nobody
# answers takes nfcpy a full second.
TARGET_OF: dict[TagKind, Target] = {
    "type2": "106A",
    "type4a": "106A",
    "type4b": "106B",
    "type3": "212F",
}


def nfc_reader(device: str, target: Target = "106A") -> NfcReader:
    return NfcReader(NfcReaderSettings(kind="nfc", id="door", device=device, targets=[target]))


async def next_read(reads: AsyncIterator[RawUid | ReaderOpened]) -> RawUid | ReaderOpened:
    async with asyncio.timeout(5):
        return await anext(reads)


def reads_of(reader: NfcReader) -> AsyncGenerator[RawUid | ReaderOpened, None]:
    reads = reader.read()
    assert isinstance(reads, AsyncGenerator)  # read_in_thread's, which the test closes
    return reads


def reader_threads(reader: NfcReader) -> list[threading.Thread]:
    return [
        thread for thread in threading.enumerate() if thread.name == f"reader-nfc-{reader.device}"
    ]


@pytest.mark.parametrize(
    ("kind", "uid"),
    [
        ("type2", "1A2B3C4D"),  # 14443-A, single size (MIFARE Classic style)
        ("type2", "04A1B2C3D4E5F6"),  # double size, NXP (Ultralight, NTAG)
        ("type2", "04A1B2C3D4E5F60718A9"),  # triple size
        ("type4a", "08A1B2C3"),  # ISO-DEP, random UID (a phone)
        ("type4a", "04A1B2C3D4E5F6"),  # ISO-DEP, double size (DESFire)
        ("type4b", "A1B2C3D4"),  # 14443-B: the PUPI
        ("type3", "012E4CD5A9B3C1D7"),  # FeliCa: the IDm
    ],
)
async def test_each_kind_of_card_gives_its_uid(kind: TagKind, uid: str) -> None:
    with emulated_tag(kind, bytes.fromhex(uid)) as tag:
        reader = nfc_reader(tag.device_path, TARGET_OF[kind])
        async with aclosing(reads_of(reader)) as reads:
            assert await next_read(reads) is OPENED
            assert await next_read(reads) == bytes.fromhex(uid)
    assert reader.describe() == f"nfcpy {tag.device_path}"


async def test_a_card_held_counts_once_and_again_when_put_back() -> None:
    taps: asyncio.Queue[CardTap] = asyncio.Queue()
    statuses: list[tuple[str, bool, str]] = []

    async def on_tap(tap: CardTap) -> None:
        await taps.put(tap)

    with emulated_tag("type2", bytes.fromhex("04a1b2c3d4e5f6")) as tag:
        reader = nfc_reader(tag.device_path)
        # No debounce: only the driver can keep the held card from counting again.
        supervisor = asyncio.create_task(
            supervise_reader(
                "door",
                reader,
                on_tap,
                debounce_seconds=0,
                on_status=lambda *status: statuses.append(status),
            )
        )
        try:
            async with asyncio.timeout(5):
                first = await taps.get()
            assert (first.reader_id, first.uid) == ("door", "04A1B2C3D4E5F6")
            # The reader keeps checking that the card is still there...
            await asyncio.to_thread(tag.wait_until, lambda tag: tag.presence_checks >= 3)
            assert taps.empty()
            # ...notices when it is taken away, and reads it again when it is put back.
            fields_off = tag.fields_off
            tag.remove()
            await asyncio.to_thread(tag.wait_until, lambda tag: tag.fields_off > fields_off)
            tag.present()
            async with asyncio.timeout(5):
                second = await taps.get()
            assert second.uid == "04A1B2C3D4E5F6"
            assert second.at > first.at
        finally:
            supervisor.cancel()
            with pytest.raises(asyncio.CancelledError):
                await supervisor
    assert taps.empty()
    assert statuses == [("door", True, "open")]
    assert reader_threads(reader) == []


async def test_leaving_the_iteration_closes_the_reader_promptly() -> None:
    with emulated_tag("type4a", bytes.fromhex("04a1b2c3d4e5f6")) as tag:
        reader = nfc_reader(tag.device_path)
        reads = reads_of(reader)
        assert await next_read(reads) is OPENED
        assert await next_read(reads) == bytes.fromhex("04a1b2c3d4e5f6")
        await asyncio.to_thread(tag.wait_until, lambda tag: tag.presence_checks >= 1)
        fields_off = tag.fields_off

        started = time.monotonic()
        await reads.aclose()

        assert time.monotonic() - started < 0.5
        assert reader_threads(reader) == []
        # Closing nfcpy's device switched the field off.
        await asyncio.to_thread(tag.wait_until, lambda tag: tag.fields_off > fields_off)


async def test_leaving_the_iteration_with_no_card_waits_at_most_one_poll() -> None:
    with emulated_tag("type2", bytes.fromhex("1a2b3c4d"), present=False) as tag:
        reader = nfc_reader(tag.device_path)
        reads = reads_of(reader)
        assert await next_read(reads) is OPENED
        # The reader is polling: waiting for an answer that will not come.
        await asyncio.to_thread(tag.wait_until, lambda tag: tag.frames_heard >= 1)

        started = time.monotonic()
        await reads.aclose()

        # The udp driver waits one second for an answer to a poll; hardware answers in
        # milliseconds.
        assert time.monotonic() - started < 1.5
        assert reader_threads(reader) == []


@pytest.mark.parametrize(
    ("device", "message"),
    [
        (
            "usb:ffff:ffff",
            "no NFC reader at usb:ffff:ffff: is it plugged in, and is the user in the plugdev group?",
        ),
        (
            "tty:AMA9:pn532",
            "no NFC reader on /dev/ttyAMA9: enable the serial port (raspi-config, Interface "
            "Options, Serial Port: no login shell, hardware enabled) and check the wiring",
        ),
        ("", 'no NFC device set: give device = "usb" or another nfcpy path'),
    ],
)
async def test_a_device_that_cannot_be_opened_raises_reader_error(
    device: str, message: str
) -> None:
    reads: list[RawUid | ReaderOpened] = []
    with pytest.raises(ReaderError) as raised:
        async for read in nfc_reader(device).read():
            reads.append(read)
    assert str(raised.value) == message
    assert reads == []


async def test_a_device_that_fails_while_reading_raises_reader_error() -> None:
    # The kernel refuses datagrams to the broadcast address: nfcpy's device fails on its
    # first poll, after it opened, as a reader pulled out of its socket does.
    reads: list[RawUid | ReaderOpened] = []
    with pytest.raises(ReaderError) as raised:
        async for read in nfc_reader("udp:255.255.255.255:54321").read():
            reads.append(read)
    assert reads == [OPENED]
    assert str(raised.value) == (
        "the NFC reader at udp:255.255.255.255:54321 stopped answering "
        "([Errno 13] Permission denied): is it still plugged in?"
    )


async def test_a_card_that_answers_badly_is_logged_and_reading_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.readers.nfc")
    # A Type 4A card whose ATS is cut short after its length byte.
    with emulated_tag("type4a", bytes.fromhex("08a1b2c3"), ats=b"\x05") as tag:
        reader = nfc_reader(tag.device_path)
        async with aclosing(reads_of(reader)) as reads:
            assert await next_read(reads) is OPENED
            # The reader failed on the card, polled again and met it once more.
            await asyncio.to_thread(tag.wait_until, lambda tag: tag.fields_off >= 2)
            tag.put_card("type2", bytes.fromhex("1a2b3c4d"))
            assert await next_read(reads) == bytes.fromhex("1a2b3c4d")
    warnings = [
        record.getMessage() for record in caplog.records if record.name == "edge.readers.nfc"
    ]
    assert warnings == [
        f"nfcpy {tag.device_path}: ignored a card that answered badly "
        "(IndexError: bytearray index out of range)"
    ]


def test_a_machine_without_usb_lists_no_reader_quietly(caplog: pytest.LogCaptureFixture) -> None:
    if Path("/dev/bus/usb").exists():
        pytest.skip("this machine has USB devices, which the test cannot know")
    caplog.set_level(logging.INFO)
    assert list_nfc_devices() == []
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
