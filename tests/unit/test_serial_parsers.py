"""The serial readers' parsers on bytes alone: RDM6300 frames and UID lines."""

from __future__ import annotations

import errno

import pytest
import serial

from edge.readers.serial_port import LineParser, Rdm6300Parser, open_failure, parser_for
from edge.readers.uid import normalize_uid
from tests.doubles.serial_pty import rdm6300_frame

# Version byte 12, tag 00 AA BB CC (printed on the card as 0011189196), checksum CF.
FRAME = b"\x021200AABBCCCF\x03"
TAG = bytes.fromhex("00AABBCC")


def test_a_frame_gives_the_four_tag_bytes() -> None:
    assert Rdm6300Parser().feed(FRAME) == [TAG]


def test_the_helper_builds_the_same_frame() -> None:
    assert rdm6300_frame(TAG, version=0x12) == FRAME


def test_back_to_back_frames_of_a_card_held_on_the_reader_each_count() -> None:
    assert Rdm6300Parser().feed(FRAME * 3) == [TAG, TAG, TAG]


def test_a_frame_arriving_byte_by_byte() -> None:
    parser = Rdm6300Parser()
    uids = [uid for byte in FRAME for uid in parser.feed(bytes([byte]))]
    assert uids == [TAG]


def test_frames_read_through_a_serial_port_in_small_chunks() -> None:
    port = serial.serial_for_url("loop://", timeout=0)
    other = rdm6300_frame(bytes.fromhex("0077A1F3"), version=0x0A)
    port.write(FRAME + other)
    parser = Rdm6300Parser()
    uids = []
    while chunk := port.read(5):
        uids += parser.feed(chunk)
    assert uids == [TAG, bytes.fromhex("0077A1F3")]


def test_lower_case_hex_digits_are_read() -> None:
    assert Rdm6300Parser().feed(b"\x021200aabbcccf\x03") == [TAG]


def test_a_bad_checksum_is_rejected_and_the_next_frame_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parser = Rdm6300Parser()
    assert parser.feed(b"\x021200AABBCCCE\x03" + FRAME) == [TAG]
    assert "checksum CE, the data gives CF" in caplog.text


def test_a_frame_with_a_non_hex_digit_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    parser = Rdm6300Parser()
    assert parser.feed(b"\x021200AABBGCCF\x03" + FRAME) == [TAG]
    assert "not hexadecimal" in caplog.text


def test_a_frame_cut_off_by_the_next_stx_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    parser = Rdm6300Parser()
    assert parser.feed(b"\x021200AA" + FRAME) == [TAG]
    assert "cut off after 6 bytes" in caplog.text


def test_a_frame_ended_early_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    parser = Rdm6300Parser()
    assert parser.feed(b"\x021200AABB\x03" + FRAME) == [TAG]
    assert "8 digits between STX and ETX, not 12" in caplog.text


def test_a_frame_without_etx_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    parser = Rdm6300Parser()
    assert parser.feed(b"\x021200AABBCCCF00000000" + FRAME) == [TAG]
    assert "no ETX after 12 digits" in caplog.text


def test_bytes_between_frames_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    parser = Rdm6300Parser()
    assert parser.feed(b"\xff\x00noise\x03" + FRAME + b"\r\n" + FRAME) == [TAG, TAG]
    assert "skipped 8 bytes outside a frame" in caplog.text
    assert "skipped 2 bytes outside a frame" in caplog.text


def test_an_rdm6300_card_and_its_printed_number_are_the_same_uid() -> None:
    # A keyboard-wedge 125 kHz reader types the number printed on the card.
    [tag] = Rdm6300Parser().feed(FRAME)
    printed = "0011189196"
    assert normalize_uid(tag) == normalize_uid(printed, uid_format="decimal") == "00AABBCC"


def test_lines_ended_by_cr_lf_or_crlf() -> None:
    parser = LineParser()
    assert parser.feed(b"04A2B3C4\r0011189196\n  04:a2:b3 \r\n") == [
        "04A2B3C4",
        "0011189196",
        "04:a2:b3",
    ]


def test_empty_lines_are_ignored() -> None:
    assert LineParser().feed(b"\r\n\r\n   \n04A2\n\n") == ["04A2"]


def test_a_line_split_across_reads() -> None:
    parser = LineParser()
    assert parser.feed(b"04A2") == []
    assert parser.feed(b"B3C4\r") == ["04A2B3C4"]
    assert parser.feed(b"\n") == []


def test_an_overlong_line_is_rejected_and_the_next_read(caplog: pytest.LogCaptureFixture) -> None:
    parser = LineParser()
    assert parser.feed(b"1" * 64 + b"\n") == ["1" * 64]
    assert parser.feed(b"2" * 65 + b"\n04A2\n") == ["04A2"]
    assert "longer than 64 characters" in caplog.text


def test_a_line_that_is_not_text_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    assert LineParser().feed(b"04\xa2\n04A2\n") == ["04A2"]
    assert "not ASCII text" in caplog.text


def test_parser_for_each_protocol() -> None:
    assert isinstance(parser_for("rdm6300"), Rdm6300Parser)
    assert isinstance(parser_for("lines"), LineParser)
    with pytest.raises(ValueError, match="unknown serial reader protocol"):
        parser_for("wiegand")


def test_open_failures_tell_the_installer_what_to_do() -> None:
    missing = serial.SerialException(errno.ENOENT, "could not open port /dev/ttyUSB7")
    refused = serial.SerialException(errno.EACCES, "could not open port /dev/ttyAMA0")
    busy = serial.SerialException(errno.EWOULDBLOCK, "Could not exclusively lock port")
    assert "ls /dev/serial/by-id/" in str(open_failure("/dev/ttyUSB7", missing))
    assert "dialout group" in str(open_failure("/dev/ttyAMA0", refused))
    assert "in use by another program" in str(open_failure("/dev/ttyAMA0", busy))
