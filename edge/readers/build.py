"""The driver for each configured reader. Drivers are imported only when a reader of
their kind is configured: nfcpy, evdev and spidev need not load on a site without them."""

from __future__ import annotations

from pathlib import Path

from edge.readers.simulated import SimulatedReader
from edge.readers.supervisor import UidRules
from edge.readers.taps import CardReader
from edge.settings import ReaderSettings, SimulatedReaderSettings


def uid_rules(settings: ReaderSettings) -> UidRules:
    return UidRules(settings.uid_format, settings.uid_byte_order, settings.decimal_bytes)


def open_reader(settings: ReaderSettings, tap_socket: Path) -> CardReader:
    if isinstance(settings, SimulatedReaderSettings):
        return SimulatedReader(settings.id, tap_socket)
    raise NotImplementedError(f"reader kind {settings.kind}")
