"""The RC522 driver against a fake MFRC522 that answers at register level over `xfer2`,
with ISO 14443-A cards placed in and taken out of its field."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from gpiozero import Device, DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from edge.readers.rc522 import Rc522Reader
from edge.readers.supervisor import supervise_reader
from edge.readers.taps import OPENED, CardTap, RawUid, ReaderError, ReaderOpened
from edge.settings import Rc522ReaderSettings
from tests.doubles.mfrc522 import CardState, FakeMfrc522
from tests.waiting import eventually

CARD_4 = bytes.fromhex("04A2B3C4")
CARD_7 = bytes.fromhex("04A2B3C4D5E6F7")
CARD_10 = bytes.fromhex("08112233445566778899")
OTHER_CARD = bytes.fromhex("DEADBEEF")


def rc522_settings(**overrides: Any) -> Rc522ReaderSettings:
    values = {"kind": "rc522", "id": "bay-1", "reset_pin": None, "poll_interval": 0.005}
    return Rc522ReaderSettings(**(values | overrides))


def reader_on(chip: FakeMfrc522, **overrides: Any) -> Rc522Reader:
    return Rc522Reader(rc522_settings(**overrides), open_spi=lambda bus, device, speed: chip)


def reads_of(reader: Rc522Reader) -> AsyncGenerator[RawUid | ReaderOpened, None]:
    reads = reader.read()
    assert isinstance(reads, AsyncGenerator)  # so that a test can close it
    return reads


async def next_read(reads: AsyncIterator[RawUid | ReaderOpened]) -> RawUid | ReaderOpened:
    async with asyncio.timeout(3):
        return await anext(reads)


async def polls_go_by(chip: FakeMfrc522, count: int = 3) -> None:
    """Let the driver send `count` more REQAs into the field."""
    seen = chip.requests
    await eventually(lambda: chip.requests >= seen + count)


@pytest.fixture
def mock_gpio() -> Iterator[MockFactory]:
    factory = MockFactory()
    Device.pin_factory = factory
    yield factory
    factory.close()
    Device.pin_factory = None


@pytest.mark.parametrize("uid", [CARD_4, CARD_7, CARD_10], ids=["4 bytes", "7 bytes", "10 bytes"])
async def test_a_card_s_whole_uid_is_read(uid: bytes) -> None:
    chip = FakeMfrc522()
    async with aclosing(reads_of(reader_on(chip))) as reads:
        assert await next_read(reads) is OPENED
        card = chip.place(uid)
        assert await next_read(reads) == uid
        assert card.state is CardState.HALT
    assert chip.closed


@pytest.mark.parametrize("version", [0x91, 0x88, 0x12, 0xB2])
async def test_older_versions_and_common_clones_are_used(version: int) -> None:
    chip = FakeMfrc522(version=version)
    reader = reader_on(chip)
    async with aclosing(reads_of(reader)) as reads:
        assert await next_read(reads) is OPENED
        chip.place(CARD_7)
        assert await next_read(reads) == CARD_7
    assert reader.describe().startswith(("MFRC522", "FM17522"))


async def test_an_unknown_version_is_tried_and_said(caplog: pytest.LogCaptureFixture) -> None:
    chip = FakeMfrc522(version=0x9A)
    reader = reader_on(chip)
    async with aclosing(reads_of(reader)) as reads:
        assert await next_read(reads) is OPENED
        chip.place(CARD_4)
        assert await next_read(reads) == CARD_4
    assert "unknown RC522 version 0x9A" in caplog.text
    assert reader.describe().startswith("RC522 (version 0x9A)")


async def test_polls_that_no_card_answers_end_on_the_chip_timer() -> None:
    chip = FakeMfrc522()
    async with aclosing(reads_of(reader_on(chip, poll_interval=0.001))) as reads:
        assert await next_read(reads) is OPENED
        started = time.monotonic()
        await polls_go_by(chip, 20)
        # Waiting out the driver's own deadline (0.1 s) instead, 20 polls would take 2 s.
        assert time.monotonic() - started < 1.0


async def test_the_supervisor_turns_reads_into_canonical_taps() -> None:
    chip = FakeMfrc522()
    taps: asyncio.Queue[CardTap] = asyncio.Queue()

    async def on_tap(tap: CardTap) -> None:
        await taps.put(tap)

    supervisor = asyncio.create_task(supervise_reader("bay-1", reader_on(chip), on_tap))
    try:
        for uid, canonical in [
            (CARD_4, "04A2B3C4"),
            (CARD_7, "04A2B3C4D5E6F7"),
            (CARD_10, "08112233445566778899"),
        ]:
            chip.place(uid)
            async with asyncio.timeout(3):
                tap = await taps.get()
            assert (tap.reader_id, tap.uid) == ("bay-1", canonical)
            chip.remove()
    finally:
        supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)


async def test_a_card_left_on_the_reader_counts_once_and_again_when_it_comes_back() -> None:
    chip = FakeMfrc522()
    async with aclosing(reads_of(reader_on(chip))) as reads:
        assert await next_read(reads) is OPENED
        chip.place(CARD_4)
        assert await next_read(reads) == CARD_4
        await polls_go_by(chip)  # the card lies there, halted
        chip.remove()
        chip.place(OTHER_CARD)  # had the driver read CARD_4 again, it would come first
        assert await next_read(reads) == OTHER_CARD
        chip.remove()
        chip.place(CARD_4)
        assert await next_read(reads) == CARD_4


@pytest.mark.parametrize("trouble", ["garbled answer", "two cards at once"])
async def test_a_bad_anticollision_gives_nothing_rather_than_a_wrong_uid(trouble: str) -> None:
    chip = FakeMfrc522()
    async with aclosing(reads_of(reader_on(chip))) as reads:
        assert await next_read(reads) is OPENED
        if trouble == "garbled answer":
            chip.place(CARD_4, garbled=True)
        else:
            chip.place(CARD_4)
            chip.place(OTHER_CARD)
        await polls_go_by(chip, 5)
        chip.remove()
        chip.place(CARD_7)
        assert await next_read(reads) == CARD_7


async def test_no_chip_on_the_bus_is_an_error_an_installer_understands() -> None:
    chip = FakeMfrc522(present=False)
    with pytest.raises(ReaderError) as raised:
        async with aclosing(reads_of(reader_on(chip))) as reads:
            await next_read(reads)
    assert str(raised.value) == (
        "no RC522 answers on SPI bus 0 device 0: check the wiring and that SPI is enabled "
        "(raspi-config → Interface Options → SPI)"
    )
    assert chip.closed


async def test_a_device_that_fails_while_reading_is_an_error() -> None:
    chip = FakeMfrc522()
    async with aclosing(reads_of(reader_on(chip))) as reads:
        assert await next_read(reads) is OPENED
        chip.place(CARD_4)
        assert await next_read(reads) == CARD_4
        chip.fail()
        with pytest.raises(ReaderError, match=r"SPI bus 0 device 0 failed .*No such device"):
            await next_read(reads)


async def test_a_chip_that_stops_answering_is_an_error() -> None:
    chip = FakeMfrc522()
    async with aclosing(reads_of(reader_on(chip))) as reads:
        assert await next_read(reads) is OPENED
        chip.present = False
        with pytest.raises(ReaderError, match="stopped answering"):
            await next_read(reads)


async def test_a_chip_that_reset_itself_is_an_error_and_is_set_up_again_on_reopening() -> None:
    chip = FakeMfrc522()
    reader = reader_on(chip)
    async with aclosing(reads_of(reader)) as reads:
        assert await next_read(reads) is OPENED
        chip.power_dip()
        with pytest.raises(ReaderError, match="reset itself"):
            await next_read(reads)
    chip.closed = False  # the same device, opened again
    async with aclosing(reads_of(reader)) as reads:
        assert await next_read(reads) is OPENED
        chip.place(CARD_10)
        assert await next_read(reads) == CARD_10


async def test_the_driver_stops_promptly_and_closes_the_device() -> None:
    chip = FakeMfrc522()
    reads = reads_of(reader_on(chip, poll_interval=5))
    assert await next_read(reads) is OPENED
    await eventually(lambda: chip.requests == 1)  # polled once, now waiting 5 s
    started = time.monotonic()
    await reads.aclose()
    assert time.monotonic() - started < 0.5
    assert chip.closed
    assert not [thread for thread in threading.enumerate() if thread.name == "reader-bay-1"]


async def test_the_reset_pin_is_driven_high_to_run_the_chip_and_released(
    mock_gpio: MockFactory,
) -> None:
    chip = FakeMfrc522()
    pin = mock_gpio.pin(25)
    reader = reader_on(chip, reset_pin=25)
    async with aclosing(reads_of(reader)) as reads:
        assert await next_read(reads) is OPENED
        assert pin.state
        chip.place(CARD_4)
        assert await next_read(reads) == CARD_4
    assert [change.state for change in pin.states][-2:] == [False, True]  # held low, then run
    assert "reset pin 25" in reader.describe()
    DigitalOutputDevice(25).close()  # the pin is free again


async def test_without_gpio_the_chip_gets_a_soft_reset_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert Device.pin_factory is None
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    chip = FakeMfrc522()
    reader = reader_on(chip, reset_pin=25)
    with caplog.at_level(logging.WARNING, logger="edge.readers.rc522"):
        for _ in range(2):
            chip.closed = False
            async with aclosing(reads_of(reader)) as reads:
                assert await next_read(reads) is OPENED
                chip.place(CARD_4)
                assert await next_read(reads) == CARD_4
                chip.remove()
    said = [record for record in caplog.records if "no GPIO" in record.getMessage()]
    assert len(said) == 1
    assert reader.describe().endswith("soft reset")


async def test_a_missing_spi_device_tells_how_to_enable_spi() -> None:
    pytest.importorskip("spidev")
    if Path("/dev/spidev9.0").exists():  # noqa: ASYNC240 - a single stat
        pytest.skip("this machine has /dev/spidev9.0")
    reader = Rc522Reader(rc522_settings(spi_bus=9))
    with pytest.raises(ReaderError, match=r"there is no /dev/spidev9\.0: enable SPI"):
        async with aclosing(reads_of(reader)) as reads:
            await next_read(reads)
