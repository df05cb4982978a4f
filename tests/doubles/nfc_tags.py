"""Cards for nfcpy's `udp` driver: a thread answers a reader's frames on a loopback UDP
port as an ISO 14443-A (Type 2, Type 4A), ISO 14443-B (Type 4B) or FeliCa (Type 3) card
would, so that the real nfcpy reader side runs without hardware.

The udp driver sends each frame as one datagram, "<bitrate+technology> <hex>" ("106A 26"),
and "RFOFF" when the reader switches its field off. The Type A anticollision is done here
rather than by nfcpy's own card side, whose udp `listen_tta` expects cascade level 3's
SEL_REQ to start with 0x95 instead of 0x97 and so never finishes a 10-byte UID.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import reduce
from operator import xor
from typing import Literal

import nfc.clf
import nfc.tag.tt3

TagKind = Literal["type2", "type4a", "type4b", "type3"]

UID_LENGTHS: dict[TagKind, tuple[int, ...]] = {
    "type2": (4, 7, 10),
    "type4a": (4, 7, 10),
    "type4b": (4,),
    "type3": (8,),
}

# ATS: FSCI 8 (256-byte frames), FWI 8 (77 ms frame waiting time), CID supported.
DEFAULT_ATS = bytes.fromhex("0578808002")
# FeliCa PMm: IC code 01 (FeliCa Standard RC-S915), slow response times so that nfcpy's
# presence checks wait long enough for a thread on a busy machine.
FELICA_PMM = bytes.fromhex("0001FFFFFFFFFFFF")
FELICA_SYSTEM_CODE = bytes.fromhex("0003")


class _TypeACard:
    """ISO 14443-3 A anticollision and selection, then Type 2 pages or Type 4A ISO-DEP."""

    technology = "106A"

    def __init__(self, kind: TagKind, uid: bytes, ats: bytes) -> None:
        self.kind = kind
        self.ats = ats
        size_bits = {4: 0x00, 7: 0x40, 10: 0x80}[len(uid)]
        self.sens_res = bytes([size_bits | 0x04, 0x00])
        self.final_sak = 0x20 if kind == "type4a" else 0x00
        if len(uid) == 4:
            chunks = [uid]
        elif len(uid) == 7:
            chunks = [b"\x88" + uid[0:3], uid[3:7]]
        else:
            chunks = [b"\x88" + uid[0:3], b"\x88" + uid[3:6], uid[6:10]]
        self.levels = [chunk + bytes([reduce(xor, chunk)]) for chunk in chunks]
        self.memory = (uid + bytes(12))[:12] + bytes.fromhex("E1100600") + bytes(48)
        self.selected = False
        self.presence_checks = 0

    def reset(self) -> None:
        self.selected = False

    def answer(self, frame: bytes) -> bytes | None:
        if frame in (b"\x26", b"\x52"):  # SENS_REQ, ALL_REQ
            self.selected = False
            return self.sens_res
        level = (0x93, 0x95, 0x97).index(frame[0]) if frame and frame[0] in b"\x93\x95\x97" else -1
        if 0 <= level < len(self.levels) and frame[1:] == b"\x20":  # SDD_REQ
            return self.levels[level]
        if 0 <= level < len(self.levels) and frame[1:] == b"\x70" + self.levels[level]:
            if level < len(self.levels) - 1:
                return b"\x04"  # SEL_RES: UID not complete
            self.selected = True
            return bytes([self.final_sak])
        if not self.selected:
            return None
        if self.kind == "type2":
            return self._type2_answer(frame)
        if frame[0] == 0xE0:  # RATS
            return self.ats
        return self._iso_dep_answer(frame)

    def _type2_answer(self, frame: bytes) -> bytes | None:
        if len(frame) == 2 and frame[0] == 0x30:  # READ four pages
            if frame[1] == 0:
                self.presence_checks += 1
            start = frame[1] * 4 % len(self.memory)
            return (self.memory + self.memory)[start : start + 16]
        self.selected = False  # a Type 2 tag goes mute after a command it does not know
        return None

    def _iso_dep_answer(self, frame: bytes) -> bytes | None:
        reply = iso_dep_answer(frame)
        if reply is not None and reply[0] & 0xF6 == 0xA2:
            self.presence_checks += 1
        return reply


class _TypeBCard:
    """ISO 14443-3 B: ATQB and ATTRIB, then ISO-DEP."""

    technology = "106B"

    def __init__(self, pupi: bytes) -> None:
        self.pupi = pupi
        # ATQB: PUPI, application data, bit rates, FSCI 8 / ISO 14443-4, FWI 8.
        self.atqb = b"\x50" + pupi + bytes(4) + bytes.fromhex("008180")
        self.selected = False
        self.presence_checks = 0

    def reset(self) -> None:
        self.selected = False

    def answer(self, frame: bytes) -> bytes | None:
        if len(frame) == 3 and frame[0] == 0x05:  # SENSB_REQ, ALLB_REQ
            self.selected = False
            return self.atqb
        if frame[:1] == b"\x1d" and frame[1:5] == self.pupi:  # ATTRIB
            self.selected = True
            return b"\x00"
        if not self.selected:
            return None
        reply = iso_dep_answer(frame)
        if reply is not None and reply[0] & 0xF6 == 0xA2:
            self.presence_checks += 1
        return reply


def iso_dep_answer(frame: bytes) -> bytes | None:
    """ISO 14443-4 blocks: R(ACK) to the reader's R(NAK) presence check, "no such file"
    to any APDU, and DESELECT acknowledged."""
    if not frame:
        return None
    block = frame[0]
    if block & 0xF6 == 0xB2:  # R(NAK)
        return bytes([0xA2 | block & 1])
    if block & 0xE6 == 0x02:  # I-block
        return bytes([0x02 | block & 1]) + b"\x6a\x82"
    if block == 0xC2:  # S(DESELECT)
        return b"\xc2"
    return None


class _FeliCaCard:
    """FeliCa answered by nfcpy's own Type 3 tag emulation."""

    technology = "212F"

    def __init__(self, idm: bytes) -> None:
        sensf_res = b"\x01" + idm + FELICA_PMM + FELICA_SYSTEM_CODE
        target = nfc.clf.LocalTarget("212F", sensf_res=bytearray(sensf_res), tt3_cmd=bytearray())
        self.emulation = nfc.tag.tt3.Type3TagEmulation(None, target)
        self.presence_checks = 0

    def reset(self) -> None:
        pass

    def answer(self, frame: bytes) -> bytes | None:
        if not frame or frame[0] != len(frame):
            return None
        wildcard_polling = frame[:4] == b"\x06\x00\xff\xff"
        if frame[1] in (0x00, 0x04) and not wildcard_polling:  # polling, request response
            self.presence_checks += 1
        reply = self.emulation.process_command(bytearray(frame))
        return None if reply is None else bytes(reply)


_Card = _TypeACard | _TypeBCard | _FeliCaCard


class EmulatedTag:
    """A card in front of a reader opened on `device_path`: `remove()` takes it away,
    `present()` puts it back, `put_card()` puts another one. Counts the frames the reader
    sent (card there or not), its presence checks of the card and the times it switched
    its field off (between polls, on close)."""

    def __init__(
        self, kind: TagKind, uid: bytes, *, ats: bytes = DEFAULT_ATS, present: bool = True
    ) -> None:
        self.changed = threading.Condition()
        self.card: _Card
        self.put_card(kind, uid, ats=ats)
        self.is_present = present
        self.frames_heard = 0
        self.fields_off = 0
        self.socket = _unnamed_udp_socket()
        self.address: tuple[str, int] = self.socket.getsockname()
        self.device_path = f"udp:127.0.0.1:{self.address[1]}"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name=f"nfc-tag-{kind}", daemon=True)

    def put_card(self, kind: TagKind, uid: bytes, *, ats: bytes = DEFAULT_ATS) -> None:
        """Take the card away and put another one in its place."""
        if len(uid) not in UID_LENGTHS[kind]:
            raise ValueError(f"a {kind} tag has a UID of {UID_LENGTHS[kind]} bytes, not {len(uid)}")
        with self.changed:
            self.kind = kind
            self.uid = uid
            if kind in ("type2", "type4a"):
                self.card = _TypeACard(kind, uid, ats)
            elif kind == "type4b":
                self.card = _TypeBCard(uid)
            else:
                self.card = _FeliCaCard(uid)

    @property
    def presence_checks(self) -> int:
        return self.card.presence_checks

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.socket.sendto(b"", self.address)  # wakes the thread from recvfrom
        self.thread.join(5.0)
        self.socket.close()

    def present(self) -> None:
        with self.changed:
            self.is_present = True

    def remove(self) -> None:
        with self.changed:
            self.is_present = False
            self.card.reset()

    def wait_until(self, condition: Callable[[EmulatedTag], bool], within: float = 5.0) -> None:
        """Block until `condition(self)` holds after some frame; AssertionError if not."""
        with self.changed:
            if not self.changed.wait_for(lambda: condition(self), within):
                raise AssertionError(f"{self.kind} tag: condition not met within {within} s")

    def _serve(self) -> None:
        while True:
            datagram, sender = self.socket.recvfrom(2048)
            if self.stopping.is_set():
                return
            reply = self._reply(datagram)
            if reply is not None:
                self.socket.sendto(reply, sender)

    def _reply(self, datagram: bytes) -> bytes | None:
        with self.changed:
            try:
                self.frames_heard += 1
                if datagram.startswith(b"RFOFF"):
                    self.fields_off += 1
                    self.card.reset()
                    return None
                technology, _, frame = datagram.partition(b" ")
                if not self.is_present or technology.decode() != self.card.technology:
                    return None
                answer = self.card.answer(bytes.fromhex(frame.decode()))
                return None if answer is None else technology + b" " + answer.hex().encode()
            finally:
                self.changed.notify_all()


@contextmanager
def emulated_tag(
    kind: TagKind, uid: bytes, *, ats: bytes = DEFAULT_ATS, present: bool = True
) -> Iterator[EmulatedTag]:
    """A card of `kind` with `uid` (the PUPI for type4b, the IDm for type3) for a reader
    opened on the yielded tag's `device_path`; gone when the block ends."""
    tag = EmulatedTag(kind, uid, ats=ats, present=present)
    tag.start()
    try:
        yield tag
    finally:
        tag.stop()


def _unnamed_udp_socket() -> socket.socket:
    """A loopback UDP socket on a port /etc/services gives no name: nfcpy's udp driver
    turns the port into a service name and back with int(), so "fido" (60179/tcp) fails."""
    while True:
        candidate = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        candidate.bind(("127.0.0.1", 0))
        port = candidate.getsockname()[1]
        try:  # getnameinfo without NI_DGRAM looks the port up as TCP
            socket.getservbyport(port, "tcp")
        except OSError:
            return candidate
        candidate.close()
