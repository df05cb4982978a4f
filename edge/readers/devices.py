"""The reader devices plugged into this machine (USB NFC readers, serial ports, input
devices that type like keyboard-wedge readers, SPI and I2C buses), which configured
reader uses each, and whether a configured reader's device is there and opens, checked
without holding it: opened and closed at once, never read from."""

from __future__ import annotations

import errno
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge.readers.keyboard import open_input_device
from edge.settings import (
    KeyboardReaderSettings,
    NfcReaderSettings,
    Rc522ReaderSettings,
    ReaderSettings,
    SerialReaderSettings,
)

if TYPE_CHECKING:
    # Annotations only: listing devices needs no driver (gpiozero loads with the hardware).
    from edge.hardware import Hardware

USB_NFC = "USB NFC reader"
SERIAL = "serial port"
INPUT = "input device"
SPI = "SPI bus"
I2C = "I2C bus"


@dataclass(frozen=True)
class FoundDevice:
    """A device on this machine. `path` is what a reader's settings name it by;
    `node` is the file it resolves to (for matching), or the nfcpy path."""

    kind: str
    path: str
    description: str = ""
    node: str = ""


@dataclass
class FoundDevices:
    devices: list[FoundDevice] = field(default_factory=list)
    # What could not be looked at, and why ("3 input devices are not readable ...").
    notes: list[str] = field(default_factory=list)


def find_devices(dev: Path = Path("/dev")) -> FoundDevices:
    found = FoundDevices()
    from edge.readers.nfc import list_nfc_devices

    for path in list_nfc_devices():
        found.devices.append(FoundDevice(USB_NFC, path, "nfcpy has a driver for it", path))
    found.devices.extend(_serial_ports(dev))
    _input_devices(dev, found)
    for pattern, kind in (("spidev*", SPI), ("i2c-*", I2C)):
        for path in sorted(glob.glob(str(dev / pattern))):
            found.devices.append(FoundDevice(kind, path, node=path))
    return found


def _links(directory: Path) -> dict[str, str]:
    """Stable names (/dev/serial/by-id/...) by the node they point to."""
    if not directory.is_dir():
        return {}
    return {os.path.realpath(link): str(link) for link in sorted(directory.iterdir())}


def _serial_ports(dev: Path) -> list[FoundDevice]:
    from serial.tools import list_ports

    by_id = _links(dev / "serial" / "by-id")
    ports = []
    for port in sorted(list_ports.comports(), key=lambda port: port.device):
        node = os.path.realpath(port.device)
        description = port.description if port.description != "n/a" else ""
        ports.append(FoundDevice(SERIAL, by_id.get(node, port.device), description, node))
    return ports


def _input_devices(dev: Path, found: FoundDevices) -> None:
    """Input devices with digit keys and Enter: keyboard-wedge readers, and keyboards."""
    nodes = sorted(glob.glob(str(dev / "input" / "event*")))
    if not nodes:
        return
    try:
        import evdev
    except ImportError:
        found.notes.append("input devices not listed: the evdev package is missing")
        return
    by_id = _links(dev / "input" / "by-id")
    unreadable = 0
    for node in nodes:
        try:
            device = evdev.InputDevice(node)
        except PermissionError:
            unreadable += 1
            continue
        except OSError:
            continue
        try:
            keys = set(device.capabilities().get(evdev.ecodes.EV_KEY, []))
            if {evdev.ecodes.KEY_ENTER, evdev.ecodes.KEY_1} <= keys:
                found.devices.append(FoundDevice(INPUT, by_id.get(node, node), device.name, node))
        finally:
            device.close()
    if unreadable:
        found.notes.append(
            f"{unreadable} input devices are not readable by this user: run as the edge's "
            "user (in the input group) or as root to see keyboard-wedge readers"
        )


def readers_using(device: FoundDevice, readers: list[ReaderSettings]) -> list[str]:
    """What each configured reader that uses `device` calls it ("bay-1", "display of bay-2")."""
    users = []
    for reader in readers:
        if device.kind == I2C:
            bus = reader.feedback.lcd_i2c_bus
            if bus is not None and device.node == f"/dev/i2c-{bus}":
                users.append(f"display of {reader.id}")
        elif _uses(reader, device):
            users.append(reader.id)
    return users


def _uses(reader: ReaderSettings, device: FoundDevice) -> bool:
    if isinstance(reader, NfcReaderSettings):
        if device.kind == USB_NFC:
            return reader.device == "usb" or device.path.startswith(reader.device)
        port = _nfc_serial_port(reader.device)
        return device.kind == SERIAL and port is not None and os.path.realpath(port) == device.node
    if isinstance(reader, SerialReaderSettings):
        return device.kind == SERIAL and os.path.realpath(reader.port) == device.node
    if isinstance(reader, KeyboardReaderSettings):
        return device.kind == INPUT and os.path.realpath(reader.device) == device.node
    if isinstance(reader, Rc522ReaderSettings):
        return device.kind == SPI and device.node == _spi_node(reader)
    return False


def _nfc_serial_port(path: str) -> str | None:
    """/dev/ttyAMA0 for nfcpy's "tty:AMA0:pn532"."""
    parts = path.split(":")
    return f"/dev/tty{parts[1]}" if parts[0] == "tty" and len(parts) > 1 else None


def _spi_node(reader: Rc522ReaderSettings) -> str:
    return f"/dev/spidev{reader.spi_bus}.{reader.spi_device}"


@dataclass(frozen=True)
class DeviceCheck:
    """Whether a configured reader's device is usable: how it is ("opens"), or what is
    wrong with it and what the installer should do."""

    usable: bool
    summary: str
    fix: str = ""
    # In use by another program (the daemon, when it runs).
    held: bool = False


def describe_reader(reader: ReaderSettings) -> str:
    """The reader's kind and device, as the installer wrote them ("nfc usb:072f:2200")."""
    if isinstance(reader, NfcReaderSettings | KeyboardReaderSettings):
        return f"{reader.kind} {reader.device}"
    if isinstance(reader, SerialReaderSettings):
        return f"{reader.kind} {reader.port}"
    if isinstance(reader, Rc522ReaderSettings):
        return f"{reader.kind} {_spi_node(reader)}"
    return reader.kind


def check_reader_device(reader: ReaderSettings, hardware: Hardware) -> DeviceCheck:
    """Is the device of `reader` there, and may this user open it? Opened and closed at
    once (never read), so a reader in use by the daemon is reported as in use."""
    if isinstance(reader, NfcReaderSettings):
        return _check_nfc(reader.device)
    if isinstance(reader, SerialReaderSettings):
        return _check_serial(reader.port)
    if isinstance(reader, KeyboardReaderSettings):
        return _check_input(reader, hardware)
    if isinstance(reader, Rc522ReaderSettings):
        return _check_spi(reader, hardware)
    return DeviceCheck(True, "taps come from the daemon's tap socket")


def _check_nfc(device: str) -> DeviceCheck:
    port = _nfc_serial_port(device)
    if port is not None:
        return _check_node(
            port,
            "dialout",
            "enable the serial port (raspi-config, Interface Options, Serial Port) and check "
            "the PN532's wiring",
        )
    if not device.startswith("usb"):
        return DeviceCheck(True, "not a local device, not checked")
    import nfc.clf.device
    import nfc.clf.transport
    import usb1  # type: ignore[import-untyped]

    try:
        # nfcpy's own path check: the USB devices the path designates, not opened.
        matching = nfc.clf.transport.USB.find(device) or []
    except (OSError, usb1.USBError) as error:
        return DeviceCheck(
            False, f"cannot list USB devices: {error}", "install Debian's libusb-1.0-0 package"
        )
    readers = [
        (vendor, product, bus, address)
        for vendor, product, bus, address in matching
        if (vendor, product) in nfc.clf.device.usb_device_map
    ]
    if not readers:
        return DeviceCheck(
            False,
            f"no NFC reader nfcpy knows at {device}",
            "plug the reader in and check that lsusb lists it (ACR122U 072f:2200, "
            "RC-S380 054c:06c1); set device to its usb:vendor:product",
        )
    vendor, product, bus, address = readers[0]
    node = f"/dev/bus/usb/{bus:03d}/{address:03d}"
    where = f"usb:{vendor:04x}:{product:04x} on bus {bus} device {address}"
    if os.path.exists(node) and not os.access(node, os.R_OK | os.W_OK):
        return DeviceCheck(
            False,
            f"{where}: no permission to open {node}",
            "add the edge's user to the plugdev group and install a udev rule for the reader",
        )
    return DeviceCheck(True, f"plugged in ({where})")


def _check_node(path: str, group: str, missing_hint: str) -> DeviceCheck:
    if not os.path.exists(path):
        return DeviceCheck(False, f"{path} does not exist", missing_hint)
    if not os.access(path, os.R_OK | os.W_OK):
        return DeviceCheck(
            False,
            f"no permission to open {path}",
            f"add the edge's user to the {group} group (sudo usermod -aG {group} USER)",
        )
    return DeviceCheck(True, "present")


def _check_serial(port: str) -> DeviceCheck:
    import serial

    if "://" in port:
        return DeviceCheck(True, "a pyserial URL, not checked")
    try:
        serial.Serial(port, timeout=0, exclusive=True).close()
    except OSError as error:  # pyserial's SerialException is an OSError
        return _open_failure(port, error, "dialout", "ls -l /dev/serial/by-id/")
    except ValueError as error:
        return DeviceCheck(False, f"{port}: {error}", "check the port and baud settings")
    return DeviceCheck(True, "opens")


def _check_input(reader: KeyboardReaderSettings, hardware: Hardware) -> DeviceCheck:
    path = reader.device
    try:
        device = (hardware.open_input_device or open_input_device)(path)
    except OSError as error:
        return _open_failure(path, error, "input", "ls -l /dev/input/by-id/")
    name = device.name
    try:
        if reader.grab:
            # Whoever grabbed it gets its keys alone: the daemon, or a program that should not.
            device.grab()
            device.ungrab()
    except OSError as error:
        return _open_failure(path, error, "input", "ls -l /dev/input/by-id/")
    finally:
        device.close()
    return DeviceCheck(True, f"opens ({name})")


def _check_spi(reader: Rc522ReaderSettings, hardware: Hardware) -> DeviceCheck:
    node = _spi_node(reader)
    if hardware.open_spi is None:
        return _check_node(
            node, "spi", "enable SPI (raspi-config, Interface Options, SPI) and check spi_bus"
        )
    try:
        hardware.open_spi(reader.spi_bus, reader.spi_device, reader.spi_speed_hz).close()
    except OSError as error:
        return _open_failure(node, error, "spi", "raspi-config, Interface Options, SPI")
    return DeviceCheck(True, "opens")


def _open_failure(path: str, error: OSError, group: str, listing: str) -> DeviceCheck:
    if error.errno == errno.ENOENT:
        return DeviceCheck(
            False, f"{path} does not exist", f"plug the reader in and check the path ({listing})"
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        return DeviceCheck(
            False,
            f"no permission to open {path}",
            f"add the edge's user to the {group} group (sudo usermod -aG {group} USER)",
        )
    if error.errno in (errno.EBUSY, errno.EWOULDBLOCK):
        return DeviceCheck(
            False,
            f"{path} is held by another program",
            "stop the program that holds it (the daemon: sudo systemctl stop ocpp-edge)",
            held=True,
        )
    return DeviceCheck(False, f"cannot open {path}: {error}", f"check the device ({listing})")
