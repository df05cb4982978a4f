"""The RC522 reader (NXP MFRC522) on a Raspberry Pi's SPI header.

The chip is spoken to directly through spidev (the maintained RC522 libraries all need
RPi.GPIO): `Mfrc522` reads and writes its registers and runs its Transceive and CalcCRC
commands; `read_card` is one ISO 14443-3 type A poll (REQA, anticollision and SELECT
over cascade levels 1-3, HLTA); `Rc522Reader` polls in a thread and yields UIDs of 4,
7 or 10 bytes. HLTA parks a card left on the reader, so it is read once until it is
taken away and presented again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, suppress
from typing import Any, Protocol

from gpiozero import BadPinFactory, DigitalOutputDevice, GPIOZeroError

from edge.readers.taps import OPENED, RawUid, ReaderError, ReaderOpened, read_in_thread
from edge.settings import Rc522ReaderSettings

log = logging.getLogger(__name__)

# Registers (MFRC522 datasheet, section 9.2).
COMMAND = 0x01
COM_IRQ = 0x04
DIV_IRQ = 0x05
ERROR = 0x06
FIFO_DATA = 0x09
FIFO_LEVEL = 0x0A
CONTROL = 0x0C
BIT_FRAMING = 0x0D
MODE = 0x11
TX_CONTROL = 0x14
TX_ASK = 0x15
CRC_RESULT_HIGH = 0x21
CRC_RESULT_LOW = 0x22
TIMER_MODE = 0x2A
TIMER_PRESCALER = 0x2B
TIMER_RELOAD_HIGH = 0x2C
TIMER_RELOAD_LOW = 0x2D
VERSION = 0x37

# Commands, and the bits read back.
IDLE, CALC_CRC, TRANSCEIVE, SOFT_RESET = 0x00, 0x03, 0x0C, 0x0F
POWER_DOWN = 0x10  # CommandReg: still in reset
RX_IRQ, IDLE_IRQ, TIMER_IRQ = 0x20, 0x10, 0x01  # ComIrqReg
CRC_IRQ = 0x04  # DivIrqReg
FRAME_ERRORS = 0x1B  # ErrorReg: BufferOvfl, CollErr, ParityErr, ProtocolErr
START_SEND = 0x80
ANTENNA_ON = 0x03  # TxControlReg: Tx1RFEn and Tx2RFEn

# VersionReg of the chips sold on RC522 boards.
KNOWN_VERSIONS = {
    0x91: "MFRC522 v1.0",
    0x92: "MFRC522 v2.0",
    0x88: "FM17522",
    0x12: "MFRC522 clone",
    0xB2: "MFRC522 clone",
}

# ISO 14443-3 type A.
REQA = 0x26
HLTA = b"\x50\x00"
SELECT_CODES = (0x93, 0x95, 0x97)  # cascade levels 1, 2, 3
ANTICOLLISION = 0x20  # NVB: no UID bits known yet
SELECT = 0x70  # NVB: the whole UID part follows
CASCADE_TAG = 0x88
CASCADE_BIT = 0x04  # in SAK: the UID goes on at the next level

# The chip's timer gives up on an answer after 25 ms; ours gives up on the chip later.
CHIP_DEADLINE_SECONDS = 0.1
RESET_SETTLE_SECONDS = 0.05
OSCILLATOR_START_SECONDS = 0.05


class SpiDevice(Protocol):
    """What the driver needs of an SPI device (spidev.SpiDev has it)."""

    def xfer2(self, data: list[int]) -> list[int]: ...

    def close(self) -> None: ...


OpenSpi = Callable[[int, int, int], SpiDevice]  # (bus, device, speed in Hz)


def open_spidev(bus: int, device: int, speed_hz: int) -> SpiDevice:
    """/dev/spidevBUS.DEVICE in SPI mode 0, the RC522's."""
    import spidev  # Linux only

    path = f"/dev/spidev{bus}.{device}"
    spi = spidev.SpiDev()
    try:
        spi.open(bus, device)
    except FileNotFoundError:
        raise ReaderError(
            f"there is no {path}: enable SPI (raspi-config → Interface Options → SPI) "
            "and check spi_bus and spi_device"
        ) from None
    except PermissionError:
        raise ReaderError(
            f"no permission to open {path}: add the service's user to the spi group"
        ) from None
    spi.max_speed_hz = speed_hz
    spi.mode = 0
    opened: SpiDevice = spi
    return opened


class Mfrc522:
    """The chip's registers over SPI, and the two jobs it does for us: send a frame and
    return the answer, compute a CRC_A. OSError from the device passes through."""

    def __init__(self, spi: SpiDevice) -> None:
        self.spi = spi

    def read(self, register: int) -> int:
        return self.read_many([register])[0]

    def read_many(self, registers: list[int]) -> list[int]:
        # Address byte: bit 7 read, bits 6..1 the register; each answer comes one byte later.
        answer = self.spi.xfer2([0x80 | register << 1 for register in registers] + [0])
        return answer[1:]

    def write(self, register: int, *values: int) -> None:
        self.spi.xfer2([register << 1, *values])

    def set_bits(self, register: int, bits: int) -> None:
        self.write(register, self.read(register) | bits)

    def reset(self) -> bool:
        """Soft reset; False if the chip never came out of it."""
        self.write(COMMAND, SOFT_RESET)
        # The datasheet gives no duration: let the oscillator start before asking.
        time.sleep(RESET_SETTLE_SECONDS)
        return self._wait_for(COMMAND, lambda value: not value & POWER_DOWN) is not None

    def configure(self) -> None:
        """Timer (25 ms answer timeout), 100 % ASK, CRC preset 0x6363, antenna on."""
        self.write(TIMER_MODE, 0x80)  # TAuto: the timer starts when a frame is sent
        self.write(TIMER_PRESCALER, 0xA9)  # 13.56 MHz / (2 * 169 + 1): 25 us a tick
        self.write(TIMER_RELOAD_HIGH, 0x03)
        self.write(TIMER_RELOAD_LOW, 0xE8)  # 1000 ticks
        self.write(TX_ASK, 0x40)  # Force100ASK: type A cards need it
        self.write(MODE, 0x3D)  # CRC coprocessor preset 0x6363, as CRC_A
        self.set_bits(TX_CONTROL, ANTENNA_ON)

    def transceive(self, frame: bytes, last_bits: int = 0) -> bytes | None:
        """Send `frame` (its last byte `last_bits` long, 0 for whole) and return the
        answer, or None when nothing answered or the answer came garbled."""
        self.write(COMMAND, IDLE)
        self.write(COM_IRQ, 0x7F)  # clear every interrupt flag
        self.write(FIFO_LEVEL, 0x80)  # flush the FIFO
        self.write(FIFO_DATA, *frame)
        self.write(BIT_FRAMING, last_bits)
        self.write(COMMAND, TRANSCEIVE)
        self.write(BIT_FRAMING, START_SEND | last_bits)
        irq = self._wait_for(COM_IRQ, lambda value: bool(value & (RX_IRQ | IDLE_IRQ | TIMER_IRQ)))
        self.write(BIT_FRAMING, last_bits)
        if irq is None or not irq & (RX_IRQ | IDLE_IRQ):
            return None  # the timer ran out: no card answered
        error, level, control = self.read_many([ERROR, FIFO_LEVEL, CONTROL])
        if error & FRAME_ERRORS:
            log.debug("answer to %s unusable: ErrorReg 0x%02X", frame.hex(), error)
            return None
        if control & 0x07:
            log.debug("answer to %s ends in a partial byte", frame.hex())
            return None
        return bytes(self.read_many([FIFO_DATA] * (level & 0x7F))) or None

    def crc_a(self, data: bytes) -> bytes | None:
        """The CRC_A of `data` as sent (low byte first), computed by the chip."""
        self.write(COMMAND, IDLE)
        self.write(DIV_IRQ, CRC_IRQ)  # clear CRCIRq (Set2 = 0)
        self.write(FIFO_LEVEL, 0x80)
        self.write(FIFO_DATA, *data)
        self.write(COMMAND, CALC_CRC)
        done = self._wait_for(DIV_IRQ, lambda value: bool(value & CRC_IRQ))
        self.write(COMMAND, IDLE)
        if done is None:
            log.warning("the RC522 did not finish a CRC")
            return None
        low, high = self.read_many([CRC_RESULT_LOW, CRC_RESULT_HIGH])
        return bytes([low, high])

    def _wait_for(self, register: int, done: Callable[[int], bool]) -> int | None:
        """The register's value once `done(value)`, or None if the chip takes too long."""
        deadline = time.monotonic() + CHIP_DEADLINE_SECONDS
        while True:
            value = self.read(register)
            if done(value):
                return value
            if time.monotonic() > deadline:
                return None
            time.sleep(0.0005)  # the chip answers within a few ms: no need to spin


def checked_uid_part(answer: bytes | None) -> bytes | None:
    """The 4 UID bytes of an anticollision answer (4 bytes and their XOR, the BCC), or
    None when it is not one (collision, lost bits)."""
    if answer is None or len(answer) != 5:
        return None
    if answer[0] ^ answer[1] ^ answer[2] ^ answer[3] != answer[4]:
        return None
    return answer[:4]


def read_card(chip: Mfrc522) -> bytes | None:
    """One poll: the UID of a card that has come into the field (then halted, so that it
    stays silent while it lies there), or None."""
    atqa = chip.transceive(bytes([REQA]), last_bits=7)
    if atqa is None:
        return None
    if len(atqa) != 2:
        log.debug("ATQA %s is not 2 bytes", atqa.hex())
        return None
    uid = b""
    for level, select_code in enumerate(SELECT_CODES, start=1):
        answer = chip.transceive(bytes([select_code, ANTICOLLISION]))
        part = checked_uid_part(answer)
        if answer is None or part is None:
            log.debug("cascade level %d: no UID part in %s", level, answer and answer.hex())
            return None
        select = bytes([select_code, SELECT]) + answer
        select_crc = chip.crc_a(select)
        sak_frame = chip.transceive(select + select_crc) if select_crc else None
        if sak_frame is None or len(sak_frame) != 3:
            log.debug("cascade level %d: no SAK", level)
            return None
        if chip.crc_a(sak_frame[:1]) != sak_frame[1:]:
            log.debug("cascade level %d: SAK %s fails its CRC", level, sak_frame.hex())
            return None
        more = bool(sak_frame[0] & CASCADE_BIT)
        if more != (part[0] == CASCADE_TAG):
            log.debug(
                "cascade level %d: SAK 0x%02X and part %s disagree", level, sak_frame[0], part.hex()
            )
            return None
        if not more:
            halt(chip)
            return uid + part
        uid += part[1:]
    log.debug("a card claims more than three cascade levels")
    return None


def halt(chip: Mfrc522) -> None:
    """HLTA: the card stays silent to REQA until it leaves the field."""
    crc = chip.crc_a(HLTA)
    if crc is not None:
        chip.transceive(HLTA + crc)  # a halted card does not answer


class Rc522Reader:
    """A CardReader for an RC522 board. `open_spi` opens the SPI device (tests give a
    fake chip)."""

    def __init__(
        self,
        settings: Rc522ReaderSettings,
        open_spi: OpenSpi = open_spidev,
        pin_factory: Any = None,
    ) -> None:
        self.settings = settings
        self.open_spi = open_spi
        self.pin_factory = pin_factory  # gpiozero's; None: the machine's own
        self.chip_name = "RC522"
        self.gpio_missing = False  # gpiozero found no GPIO: soft reset only, said once

    @property
    def location(self) -> str:
        return f"SPI bus {self.settings.spi_bus} device {self.settings.spi_device}"

    def describe(self) -> str:
        reset = self.settings.reset_pin
        resetting = "soft reset" if reset is None or self.gpio_missing else f"reset pin {reset}"
        return (
            f"{self.chip_name} on {self.location} at {self.settings.spi_speed_hz} Hz, {resetting}"
        )

    def read(self) -> AsyncIterator[RawUid | ReaderOpened]:
        return read_in_thread(self._read_loop, self.settings.id)

    def _read_loop(
        self, emit: Callable[[RawUid | ReaderOpened], None], stopping: threading.Event
    ) -> None:
        settings = self.settings
        with ExitStack() as cleanup:
            reset_pin = self._take_reset_pin()
            if reset_pin is not None:
                cleanup.callback(reset_pin.close)
            try:
                spi = self.open_spi(settings.spi_bus, settings.spi_device, settings.spi_speed_hz)
                cleanup.callback(_close_quietly, spi)
                chip = Mfrc522(spi)
                version = self._start(chip, reset_pin, stopping)
                emit(OPENED)
                while not stopping.is_set():
                    self._check_chip(chip, version)
                    uid = read_card(chip)
                    if uid is not None:
                        emit(uid)
                    stopping.wait(settings.poll_interval)
            except OSError as error:
                raise ReaderError(
                    f"{self.location} failed ({error}): is the RC522 still connected?"
                ) from error

    def _take_reset_pin(self) -> DigitalOutputDevice | None:
        pin = self.settings.reset_pin
        if pin is None or self.gpio_missing:
            return None
        try:
            # Low holds the chip in power-down: start low, so opening is a hard reset.
            return DigitalOutputDevice(pin, initial_value=False, pin_factory=self.pin_factory)
        except BadPinFactory:
            self.gpio_missing = True
            log.warning(
                "no GPIO on this machine (gpiozero has no pin factory): the RC522 on %s "
                "gets a soft reset, its reset pin %s is not driven",
                self.location,
                pin,
            )
            return None
        except GPIOZeroError as error:
            raise ReaderError(f"cannot drive the RC522's reset pin {pin}: {error}") from error

    def _start(
        self, chip: Mfrc522, reset_pin: DigitalOutputDevice | None, stopping: threading.Event
    ) -> int:
        """Reset and set up the chip; its VersionReg."""
        if reset_pin is not None:
            reset_pin.on()
            stopping.wait(OSCILLATOR_START_SECONDS)
        version = chip.read(VERSION)
        if version in (0x00, 0xFF):
            raise ReaderError(
                f"no RC522 answers on {self.location}: check the wiring and that SPI is "
                "enabled (raspi-config → Interface Options → SPI)"
            )
        self.chip_name = KNOWN_VERSIONS.get(version, f"RC522 (version 0x{version:02X})")
        if version not in KNOWN_VERSIONS:
            log.warning(
                "%s: unknown RC522 version 0x%02X, trying it anyway", self.location, version
            )
        if not chip.reset():
            raise ReaderError(f"the RC522 on {self.location} does not come out of reset")
        chip.configure()
        return version

    def _check_chip(self, chip: Mfrc522, version: int) -> None:
        """Raise ReaderError if the chip went away or reset itself (its antenna is off)."""
        now_version, tx_control = chip.read_many([VERSION, TX_CONTROL])
        if now_version != version:
            raise ReaderError(
                f"the RC522 on {self.location} stopped answering: check its wiring and power"
            )
        if tx_control & ANTENNA_ON != ANTENNA_ON:
            raise ReaderError(f"the RC522 on {self.location} reset itself: check its 3.3 V supply")


def _close_quietly(spi: SpiDevice) -> None:
    with suppress(OSError):  # the device is already gone
        spi.close()
