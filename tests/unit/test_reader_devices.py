"""Which configured reader uses each device found on the machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from edge.readers.devices import I2C, INPUT, SERIAL, SPI, USB_NFC, FoundDevice, readers_using
from edge.settings import ReaderSettings

READERS = TypeAdapter(list[ReaderSettings])


def readers(*tables: dict[str, Any]) -> list[ReaderSettings]:
    return READERS.validate_python(list(tables))


def test_nfc_readers_by_usb_path() -> None:
    acr122u = FoundDevice(USB_NFC, "usb:072f:2200", node="usb:072f:2200")
    configured = readers(
        {"id": "any", "kind": "nfc", "device": "usb"},
        {"id": "vendor", "kind": "nfc", "device": "usb:072f"},
        {"id": "exact", "kind": "nfc", "device": "usb:072f:2200"},
        {"id": "sony", "kind": "nfc", "device": "usb:054c:06c1"},
    )
    assert readers_using(acr122u, configured) == ["any", "vendor", "exact"]


def test_serial_and_input_devices_by_the_node_their_links_point_to(tmp_path: Path) -> None:
    node = tmp_path / "ttyUSB0"
    node.touch()
    link = tmp_path / "usb-FTDI_FT232R-if00-port0"
    link.symlink_to(node)
    keyboard_node = tmp_path / "event3"
    keyboard_node.touch()
    keyboard_link = tmp_path / "usb-RFID_Reader-event-kbd"
    keyboard_link.symlink_to(keyboard_node)
    configured = readers(
        {"id": "gate", "kind": "serial", "port": str(link)},
        {"id": "pn532", "kind": "nfc", "device": "tty:AMA0:pn532"},
        {"id": "desk", "kind": "keyboard", "device": str(keyboard_link)},
    )
    port = FoundDevice(SERIAL, str(link), "FT232R USB UART", str(node))
    assert readers_using(port, configured) == ["gate"]
    uart = FoundDevice(SERIAL, "/dev/ttyAMA0", node="/dev/ttyAMA0")
    assert readers_using(uart, configured) == ["pn532"]
    keys = FoundDevice(INPUT, str(keyboard_link), "RFID Reader", str(keyboard_node))
    assert readers_using(keys, configured) == ["desk"]


def test_spi_readers_and_i2c_displays() -> None:
    configured = readers(
        {"id": "bay-3", "kind": "rc522", "spi_bus": 0, "spi_device": 1},
        {"id": "bay-4", "kind": "simulated", "feedback": {"lcd_i2c_bus": 1}},
    )
    assert readers_using(FoundDevice(SPI, "/dev/spidev0.1", node="/dev/spidev0.1"), configured) == [
        "bay-3"
    ]
    assert (
        readers_using(FoundDevice(SPI, "/dev/spidev0.0", node="/dev/spidev0.0"), configured) == []
    )
    assert readers_using(FoundDevice(I2C, "/dev/i2c-1", node="/dev/i2c-1"), configured) == [
        "display of bay-4"
    ]
