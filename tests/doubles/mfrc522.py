"""A fake NXP MFRC522 reached through `xfer2`, the way spidev reaches the real chip,
with ISO 14443-A cards that tests place in and remove from its field.

It follows the datasheet (MFRC522 rev. 3.9) at register level: the SPI address byte
(bit 7 read, bits 6..1 address, bit 0 zero), the 64-byte FIFO, the interrupt registers'
Set1/Set2 write semantics, the commands Idle, CalcCRC, Transceive and SoftReset, the
CRC coprocessor with the preset chosen in ModeReg and the timer's TimerIRq when nothing
answers. Cards answer only while the antenna is on with 100 % ASK, and follow the ISO
14443-3 states IDLE, READY, ACTIVE and HALT: REQA/WUPA, anticollision and SELECT over
cascade levels 1-3 (a SELECT whose CRC_A is wrong goes unanswered), HLTA.

Not emulated: bit-oriented anticollision (NVB other than 0x20/0x70), Mem, Transmit,
Receive, MFAuthent, the chip's own TX/RX CRC (TxModeReg/RxModeReg), and timing: every
transfer takes effect at once.
"""

from __future__ import annotations

import errno
import threading
from enum import Enum

# Registers (datasheet section 9.2) and their values after reset.
COMMAND = 0x01
COM_IRQ_ENABLE = 0x02
COM_IRQ = 0x04
DIV_IRQ = 0x05
ERROR = 0x06
STATUS1 = 0x07
STATUS2 = 0x08
FIFO_DATA = 0x09
FIFO_LEVEL = 0x0A
CONTROL = 0x0C
BIT_FRAMING = 0x0D
COLLISION = 0x0E
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

RESET_VALUES = {
    COMMAND: 0x20,
    COM_IRQ_ENABLE: 0x80,
    COM_IRQ: 0x14,
    STATUS1: 0x21,
    CONTROL: 0x10,
    COLLISION: 0xA0,
    MODE: 0x3F,
    TX_CONTROL: 0x80,
    0x0B: 0x08,  # WaterLevelReg
    0x16: 0x10,  # TxSelReg
    0x17: 0x84,  # RxSelReg
    0x18: 0x84,  # RxThresholdReg
    0x19: 0x4D,  # DemodReg
    0x24: 0x26,  # ModWidthReg
    0x26: 0x48,  # RFCfgReg
    0x27: 0x88,  # GsNReg
    0x28: 0x20,  # CWGsPReg
    0x29: 0x20,  # ModGsPReg
    CRC_RESULT_HIGH: 0xFF,
    CRC_RESULT_LOW: 0xFF,
}

# Commands (section 10.3).
IDLE = 0x00
CALC_CRC = 0x03
TRANSCEIVE = 0x0C
SOFT_RESET = 0x0F
POWER_DOWN = 0x10

# Bits of ComIrqReg, DivIrqReg, ErrorReg.
TX_IRQ, RX_IRQ, ERROR_IRQ, TIMER_IRQ = 0x40, 0x20, 0x02, 0x01
CRC_IRQ = 0x04
BUFFER_OVERFLOW, COLLISION_ERROR = 0x10, 0x08

FIFO_SIZE = 64
CRC_PRESETS = {0: 0x0000, 1: 0x6363, 2: 0xA671, 3: 0xFFFF}

# ISO 14443-3 type A commands.
REQA, WUPA, HLTA = 0x26, 0x52, 0x50
SELECT_CODES = (0x93, 0x95, 0x97)
CASCADE_TAG = 0x88
CASCADE_BIT = 0x04


def crc_a(data: bytes, initial: int = 0x6363) -> int:
    """ISO 14443-3 CRC_A (x^16 + x^12 + x^5 + 1, bits reflected, no final XOR); it is
    sent low byte first."""
    crc = initial
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def with_crc_a(data: bytes) -> bytes:
    crc = crc_a(data)
    return data + bytes([crc & 0xFF, crc >> 8])


class CardState(Enum):
    IDLE = "idle"
    READY = "ready"
    ACTIVE = "active"
    HALT = "halt"


class Iso14443aCard:
    """A type A card in the field. `garbled` makes its anticollision answers carry one
    flipped UID bit (with the BCC of the true UID), as a noisy field could."""

    def __init__(self, uid: bytes, sak: int = 0x08, garbled: bool = False) -> None:
        if len(uid) not in (4, 7, 10):
            raise ValueError(f"a type A UID has 4, 7 or 10 bytes, not {len(uid)}")
        self.uid = uid
        self.sak = sak & ~CASCADE_BIT
        self.garbled = garbled
        self.state = CardState.IDLE
        self.level = 0  # the cascade level being selected, from 0
        tag = bytes([CASCADE_TAG])
        if len(uid) == 4:
            self.parts = [uid]
        elif len(uid) == 7:
            self.parts = [tag + uid[:3], uid[3:]]
        else:
            self.parts = [tag + uid[:3], tag + uid[3:6], uid[6:]]

    @property
    def atqa(self) -> bytes:
        size_bits = {4: 0x00, 7: 0x40, 10: 0x80}[len(self.uid)]
        return bytes([size_bits | 0x04, 0x00])

    def power_off(self) -> None:
        self.state = CardState.IDLE
        self.level = 0

    def receive(self, frame: bytes, last_bits: int) -> bytes | None:
        """The card's answer to a frame (None: silence), moving through its states."""
        if len(frame) == 1 and last_bits == 7:
            return self._short_frame(frame[0] & 0x7F)
        if last_bits == 0 and self.state is CardState.READY:
            return self._anticollision_or_select(frame)
        if last_bits == 0 and self.state is CardState.ACTIVE and frame == with_crc_a(b"\x50\x00"):
            self.state = CardState.HALT
            return None
        if self.state is not CardState.HALT:
            self.power_off()  # anything unexpected sends a card back to IDLE
        return None

    def _short_frame(self, command: int) -> bytes | None:
        woken = command == REQA and self.state is CardState.IDLE
        woken = woken or (command == WUPA and self.state in (CardState.IDLE, CardState.HALT))
        if woken:
            self.state = CardState.READY
            self.level = 0
            return self.atqa
        if self.state is not CardState.HALT:
            self.power_off()
        return None

    def _anticollision_or_select(self, frame: bytes) -> bytes | None:
        part = self.parts[self.level]
        answer = part + bytes([part[0] ^ part[1] ^ part[2] ^ part[3]])
        select_code = SELECT_CODES[self.level]
        if frame == bytes([select_code, 0x20]):
            if self.garbled:
                return bytes([answer[0] ^ 0x10]) + answer[1:]
            return answer
        if len(frame) == 9 and frame[:2] == bytes([select_code, 0x70]) and frame[2:7] == answer:
            if crc_a(frame) != 0:  # CRC over data and its CRC leaves 0
                self.power_off()
                return None
            if self.level == len(self.parts) - 1:
                self.state = CardState.ACTIVE
                return with_crc_a(bytes([self.sak]))
            self.level += 1
            return with_crc_a(bytes([CASCADE_BIT]))
        self.power_off()
        return None


class FakeMfrc522:
    """An MFRC522 behind an SPI device object. `present=False`: no chip on the bus (every
    byte reads 0x00); `fail()`: the device node is gone (xfer2 raises OSError)."""

    def __init__(self, version: int = 0x92, present: bool = True) -> None:
        self.version = version
        self.present = present
        self.closed = False
        self.requests = 0  # REQA frames sent into a live field
        self._failure: OSError | None = None
        self._lock = threading.Lock()
        self._cards: list[Iso14443aCard] = []
        self._registers: list[int] = []
        self._fifo: list[int] = []
        self._crc = 0xFFFF  # the CRC coprocessor's running value
        self._soft_reset()

    # What tests do.

    def place(self, uid: bytes, sak: int = 0x08, garbled: bool = False) -> Iso14443aCard:
        card = Iso14443aCard(uid, sak, garbled)
        with self._lock:
            self._cards.append(card)
        return card

    def remove(self, uid: bytes | None = None) -> None:
        """Take `uid`'s card (every card when None) out of the field."""
        with self._lock:
            self._cards = [card for card in self._cards if uid is not None and card.uid != uid]

    def power_dip(self) -> None:
        """The supply sagged: the chip is back in its reset state, antenna off."""
        with self._lock:
            self._soft_reset()

    def fail(self, error: OSError | None = None) -> None:
        self._failure = error or OSError(errno.ENODEV, "No such device")

    @property
    def antenna_on(self) -> bool:
        return bool(self._registers[TX_CONTROL] & 0x03)

    # The SPI side.

    def xfer2(self, data: list[int]) -> list[int]:
        if self._failure is not None:
            raise self._failure
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if not self.present or not data:
            return [0] * len(data)
        with self._lock:
            if data[0] & 0x01:
                raise ValueError(f"address byte 0x{data[0]:02X} has bit 0 set")
            if data[0] & 0x80:  # read: each byte names the register whose value comes next
                for address_byte in data[:-1]:
                    if not address_byte & 0x80:
                        raise ValueError("a read transfer mixes in a write address")
                return [0] + [self._read((byte >> 1) & 0x3F) for byte in data[:-1]]
            address = (data[0] >> 1) & 0x3F
            for value in data[1:]:
                self._write(address, value)
            return [0] * len(data)

    def close(self) -> None:
        self.closed = True

    # The chip.

    def _read(self, address: int) -> int:
        if address == VERSION:
            return self.version
        if address == FIFO_LEVEL:
            return len(self._fifo)
        if address == FIFO_DATA:
            return self._fifo.pop(0) if self._fifo else 0
        return self._registers[address]

    def _write(self, address: int, value: int) -> None:
        if address == COMMAND:
            self._command(value)
        elif address == COM_IRQ:
            self._registers[COM_IRQ] = _set_or_clear(self._registers[COM_IRQ], value)
        elif address == DIV_IRQ:
            self._registers[DIV_IRQ] = _set_or_clear(self._registers[DIV_IRQ], value)
        elif address == FIFO_LEVEL:
            if value & 0x80:
                self._fifo.clear()
                self._registers[ERROR] &= ~BUFFER_OVERFLOW
        elif address == FIFO_DATA:
            self._push_fifo(value)
        elif address == BIT_FRAMING:
            self._registers[BIT_FRAMING] = value
            if value & 0x80 and self._registers[COMMAND] & 0x0F == TRANSCEIVE:
                self._transceive(value & 0x07)
        elif address == TX_CONTROL:
            self._registers[TX_CONTROL] = value
            if not self.antenna_on:
                self._field_off()
        elif address not in (VERSION, ERROR, STATUS1, COLLISION, CRC_RESULT_HIGH, CRC_RESULT_LOW):
            self._registers[address] = value

    def _push_fifo(self, value: int) -> None:
        if self._registers[COMMAND] & 0x0F == CALC_CRC:
            self._crc = crc_a(bytes([value]), self._crc)  # the coprocessor takes it at once
            self._store_crc()
        elif len(self._fifo) < FIFO_SIZE:
            self._fifo.append(value)
        else:
            self._registers[ERROR] |= BUFFER_OVERFLOW

    def _command(self, value: int) -> None:
        command = value & 0x0F
        if command == SOFT_RESET:
            self._soft_reset()
            return
        if command not in (IDLE, CALC_CRC, TRANSCEIVE):
            raise ValueError(f"the fake MFRC522 does not emulate command 0x{command:02X}")
        self._registers[COMMAND] = value & 0x3F & ~POWER_DOWN
        if command == CALC_CRC:
            self._crc = CRC_PRESETS[self._registers[MODE] & 0x03]
            self._crc = crc_a(bytes(self._fifo), self._crc)
            self._fifo.clear()
            self._store_crc()

    def _store_crc(self) -> None:
        self._registers[CRC_RESULT_HIGH] = self._crc >> 8
        self._registers[CRC_RESULT_LOW] = self._crc & 0xFF
        self._registers[DIV_IRQ] |= CRC_IRQ
        self._registers[STATUS1] |= 0x20  # CRCReady

    def _transceive(self, last_bits: int) -> None:
        frame = bytes(self._fifo)
        self._fifo.clear()
        self._registers[ERROR] = 0
        self._registers[COM_IRQ] |= TX_IRQ
        answers = []
        if self.antenna_on and self._registers[TX_ASK] & 0x40:  # type A needs 100 % ASK
            if frame == bytes([REQA]) and last_bits == 7:
                self.requests += 1
            for card in self._cards:
                answer = card.receive(frame, last_bits)
                if answer is not None:
                    answers.append(answer)
        if not answers:
            timer_reload = (
                self._registers[TIMER_RELOAD_HIGH] << 8 | self._registers[TIMER_RELOAD_LOW]
            )
            if self._registers[TIMER_MODE] & 0x80 and timer_reload:  # TAuto: timer runs
                self._registers[COM_IRQ] |= TIMER_IRQ
            return
        received = bytearray(max(len(answer) for answer in answers))
        for answer in answers:
            for index, byte in enumerate(answer):
                received[index] |= byte  # overlapping answers: a 1 wins on the air
        collision_bit = _first_differing_bit(answers)
        if collision_bit is not None:
            self._registers[ERROR] |= COLLISION_ERROR
            self._registers[COLLISION] = (collision_bit + 1) & 0x1F
            self._registers[COM_IRQ] |= ERROR_IRQ
        self._fifo.extend(received[:FIFO_SIZE])
        self._registers[CONTROL] &= ~0x07  # RxLastBits 0: whole bytes
        self._registers[COM_IRQ] |= RX_IRQ

    def _field_off(self) -> None:
        for card in self._cards:
            card.power_off()

    def _soft_reset(self) -> None:
        self._registers = [RESET_VALUES.get(address, 0x00) for address in range(64)]
        self._fifo = []
        self._crc = 0xFFFF
        self._field_off()


def _set_or_clear(current: int, value: int) -> int:
    """ComIrqReg/DivIrqReg: bit 7 set writes 1s to the marked bits, clear writes 0s."""
    marked = value & 0x7F
    return current | marked if value & 0x80 else current & ~marked


def _first_differing_bit(answers: list[bytes]) -> int | None:
    """The first bit (from 0, LSB first as sent) where two answers differ."""
    length = max(len(answer) for answer in answers)
    padded = [answer.ljust(length, b"\x00") for answer in answers]
    for index in range(length):
        differing = 0
        for answer in padded[1:]:
            differing |= answer[index] ^ padded[0][index]
        if differing:
            return index * 8 + (differing & -differing).bit_length() - 1
    return None
