"""The driver for each configured reader. Drivers whose libraries are heavy or
Linux-only (nfcpy, spidev, evdev) are imported only when a reader of their kind is
configured."""

from __future__ import annotations

from pathlib import Path

from edge.hardware import Hardware
from edge.readers.simulated import SimulatedReader
from edge.readers.supervisor import UidRules
from edge.readers.taps import CardReader
from edge.settings import (
    KeyboardReaderSettings,
    NfcReaderSettings,
    Rc522ReaderSettings,
    ReaderSettings,
    SerialReaderSettings,
    SimulatedReaderSettings,
)


def uid_rules(settings: ReaderSettings) -> UidRules:
    return UidRules(settings.uid_format, settings.uid_byte_order, settings.decimal_bytes)


def open_reader(settings: ReaderSettings, tap_socket: Path, hardware: Hardware) -> CardReader:
    if isinstance(settings, SimulatedReaderSettings):
        return SimulatedReader(settings.id, tap_socket)
    if isinstance(settings, NfcReaderSettings):
        from edge.readers.nfc import NfcReader

        return NfcReader(settings)
    if isinstance(settings, SerialReaderSettings):
        from edge.readers.serial_port import SerialReader

        return SerialReader(settings)
    if isinstance(settings, Rc522ReaderSettings):
        from edge.readers.rc522 import Rc522Reader, open_spidev

        return Rc522Reader(settings, hardware.open_spi or open_spidev, hardware.pin_factory)
    if isinstance(settings, KeyboardReaderSettings):
        from edge.readers.keyboard import KeyboardReader, open_input_device

        return KeyboardReader(settings, hardware.open_input_device or open_input_device)
    raise AssertionError(f"no driver for {settings}")
