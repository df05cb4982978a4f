"""ISO 14443-A frame checks: CRC_A (as the fake chip computes it) against the standard's
examples, the BCC check on anticollision answers, and the fake chip's register
semantics that the RC522 driver relies on."""

from __future__ import annotations

import pytest

from edge.readers.rc522 import checked_uid_part
from tests.doubles.mfrc522 import FakeMfrc522, crc_a, with_crc_a


def read_register(chip: FakeMfrc522, register: int) -> int:
    return chip.xfer2([0x80 | register << 1, 0])[1]


def write_register(chip: FakeMfrc522, register: int, *values: int) -> None:
    chip.xfer2([register << 1, *values])


@pytest.mark.parametrize(
    ("data", "sent_crc"),
    [
        (b"\x00\x00", b"\xa0\x1e"),  # ISO/IEC 14443-3 Annex B
        (b"\x12\x34", b"\x26\xcf"),  # ISO/IEC 14443-3 Annex B
        (b"\x50\x00", b"\x57\xcd"),  # HLTA as every reader sends it
    ],
)
def test_crc_a_matches_the_standard_examples(data: bytes, sent_crc: bytes) -> None:
    assert with_crc_a(data) == data + sent_crc


def test_crc_a_over_a_frame_and_its_crc_is_zero() -> None:
    frame = with_crc_a(bytes([0x93, 0x70, 0x04, 0xA2, 0xB3, 0xC4, 0x04 ^ 0xA2 ^ 0xB3 ^ 0xC4]))
    assert crc_a(frame) == 0
    assert crc_a(frame[:-1] + bytes([frame[-1] ^ 0x01])) != 0


def test_an_anticollision_answer_gives_its_uid_part_when_the_bcc_holds() -> None:
    assert checked_uid_part(bytes([0x04, 0xA2, 0xB3, 0xC4, 0x04 ^ 0xA2 ^ 0xB3 ^ 0xC4])) == bytes(
        [0x04, 0xA2, 0xB3, 0xC4]
    )


@pytest.mark.parametrize(
    "answer",
    [
        None,
        bytes([0x04, 0xA2, 0xB3, 0xC4, 0x00]),  # wrong BCC
        bytes([0x14, 0xA2, 0xB3, 0xC4, 0x04 ^ 0xA2 ^ 0xB3 ^ 0xC4]),  # one bit flipped
        bytes([0x04, 0xA2, 0xB3, 0xC4]),  # BCC missing
        bytes([0x04, 0xA2, 0xB3, 0xC4, 0xD1, 0x00]),  # too long
    ],
)
def test_an_anticollision_answer_that_fails_its_bcc_gives_nothing(answer: bytes | None) -> None:
    assert checked_uid_part(answer) is None


def test_fake_chip_reads_with_bit_7_set_and_answers_one_byte_later() -> None:
    chip = FakeMfrc522(version=0x91)
    write_register(chip, 0x2B, 0xA9)  # TPrescalerReg
    assert chip.xfer2([0x80 | 0x37 << 1, 0x80 | 0x2B << 1, 0]) == [0, 0x91, 0xA9]
    with pytest.raises(ValueError, match="bit 0"):
        chip.xfer2([0x6F, 0])


def test_fake_chip_fifo_fills_flushes_and_empties_on_read() -> None:
    chip = FakeMfrc522()
    write_register(chip, 0x09, 1, 2, 3)  # FIFODataReg
    assert read_register(chip, 0x0A) == 3  # FIFOLevelReg
    assert chip.xfer2([0x80 | 0x09 << 1] * 2 + [0]) == [0, 1, 2]
    assert read_register(chip, 0x0A) == 1
    write_register(chip, 0x0A, 0x80)  # FlushBuffer
    assert read_register(chip, 0x0A) == 0


def test_fake_chip_interrupt_flags_are_set_and_cleared_by_marked_bits() -> None:
    chip = FakeMfrc522()
    write_register(chip, 0x04, 0x7F)  # ComIrqReg: Set1 = 0 clears the marked bits
    assert read_register(chip, 0x04) == 0
    write_register(chip, 0x04, 0x80 | 0x21)  # Set1 = 1 sets them
    assert read_register(chip, 0x04) == 0x21


def test_fake_chip_calc_crc_uses_the_preset_of_mode_reg() -> None:
    chip = FakeMfrc522()
    write_register(chip, 0x11, 0x3D)  # ModeReg: CRC preset 0x6363
    write_register(chip, 0x09, 0x12, 0x34)
    write_register(chip, 0x01, 0x03)  # CalcCRC
    assert read_register(chip, 0x05) & 0x04  # DivIrqReg CRCIRq
    assert (read_register(chip, 0x22), read_register(chip, 0x21)) == (0x26, 0xCF)
    write_register(chip, 0x01, 0x0F)  # SoftReset: ModeReg back to preset 0xFFFF
    write_register(chip, 0x09, 0x12, 0x34)
    write_register(chip, 0x01, 0x03)
    assert read_register(chip, 0x21) << 8 | read_register(chip, 0x22) == crc_a(b"\x12\x34", 0xFFFF)
