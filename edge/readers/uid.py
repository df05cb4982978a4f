"""One canonical form for card UIDs, so that a card enrolled at one reader works at
every other: upper-case hex, no separators, most significant byte first.

Readers differ: NFC readers give bytes; serial and keyboard-wedge readers send text,
in hex or in decimal (the number printed on many 125 kHz cards), and some report the
bytes in reverse order. Each reader's settings say which, and this module undoes it.
"""

from __future__ import annotations

import re
from typing import Literal

from edge.readers.taps import RawUid

UidFormat = Literal["hex", "decimal"]
ByteOrder = Literal["as-read", "reversed"]

# OCPP 1.6 idTags are at most 20 characters: 10 bytes of hex.
MAX_UID_BYTES = 10
_SEPARATORS = re.compile(r"[\s:\-.]")


class UidError(ValueError):
    """What a reader sent is not a card UID; the message says why."""


def normalize_uid(
    raw: RawUid,
    *,
    uid_format: UidFormat = "hex",
    byte_order: ByteOrder = "as-read",
    decimal_bytes: int = 4,
) -> str:
    """The canonical UID of `raw`.

    bytes are taken as they are; text is hex ("04:a2:b3", "04A2B3") or decimal
    ("0011189196"), which becomes `decimal_bytes` bytes (more if the number needs them).
    """
    if isinstance(raw, bytes):
        data = raw
    else:
        text = _SEPARATORS.sub("", raw)
        if not text:
            raise UidError("empty UID")
        data = _from_decimal(text, decimal_bytes) if uid_format == "decimal" else _from_hex(text)
    if not data:
        raise UidError("empty UID")
    if len(data) > MAX_UID_BYTES:
        raise UidError(f"{len(data)} bytes is longer than any card UID ({MAX_UID_BYTES})")
    if byte_order == "reversed":
        data = data[::-1]
    return data.hex().upper()


def _from_hex(text: str) -> bytes:
    if len(text) % 2:
        text = "0" + text
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UidError(f"{text!r} is not hexadecimal") from None


def _from_decimal(text: str, decimal_bytes: int) -> bytes:
    if not text.isdigit():
        raise UidError(f"{text!r} is not a decimal number")
    number = int(text)
    length = max(decimal_bytes, (number.bit_length() + 7) // 8)
    return number.to_bytes(length, "big")
