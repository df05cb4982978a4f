"""The NFC reader driver: any reader nfcpy drives (PN533, ACR122U and RC-S380 on USB, a
PN532 on a serial port) reading the UIDs of ISO 14443-A, ISO 14443-B and FeliCa cards,
and the list of NFC readers plugged into this machine."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import nfc
import nfc.clf
import nfc.clf.device
import nfc.clf.transport
import usb1  # type: ignore[import-untyped]

from edge.readers.taps import OPENED, RawUid, ReaderError, ReaderOpened, read_in_thread
from edge.settings import NfcReaderSettings

log = logging.getLogger(__name__)

# Pause between polls while no card is there: a card is still seen within a fraction of
# a second, and the reader is not kept switching its field on and off without rest.
POLL_PAUSE_SECONDS = 0.1

# What nfcpy reports as a tag's identifier: the ISO 14443-A UID (4, 7 or 10 bytes), the
# ISO 14443-B PUPI (4 bytes) or the FeliCa IDm (8 bytes).
UID_LENGTHS = frozenset({4, 7, 8, 10})

Emit = Callable[[RawUid | ReaderOpened], None]


class NfcReader:
    """Reads cards on an nfcpy reader; each card is read once while it stays on it."""

    def __init__(self, settings: NfcReaderSettings) -> None:
        self.device = settings.device
        self.targets = list(settings.targets)

    def describe(self) -> str:
        return f"nfcpy {self.device}"

    def read(self) -> AsyncIterator[RawUid | ReaderOpened]:
        return read_in_thread(self._read_loop, f"nfc-{self.device}")

    def _read_loop(self, emit: Emit, stopping: threading.Event) -> None:
        frontend = _open_frontend(self.device)
        try:
            emit(OPENED)

            def on_connect(tag: Any) -> bool:
                uid = card_uid(tag)
                if uid is not None:
                    emit(uid)
                return True  # nfcpy then waits until the card leaves: one read per card

            def terminate() -> bool:
                return stopping.wait(POLL_PAUSE_SECONDS)

            options = {
                "targets": self.targets,
                # One poll per round, so that `terminate` is asked between polls.
                "iterations": 1,
                "on-connect": on_connect,
            }
            last_problem = ""
            while not stopping.is_set():
                try:
                    result = frontend.connect(rdwr=options, terminate=terminate)
                except OSError as error:  # the device, not a card
                    raise ReaderError(_lost_device_message(self.device, error)) from error
                except Exception as error:  # a card answered what nfcpy cannot parse
                    problem = f"{type(error).__name__}: {error}"
                    # Once per kind of problem: a bad card left on the reader repeats it.
                    level = logging.DEBUG if problem == last_problem else logging.WARNING
                    log.log(
                        level,
                        "nfcpy %s: ignored a card that answered badly (%s)",
                        self.device,
                        problem,
                    )
                    last_problem = problem
                    continue
                # nfcpy returns False when the device failed (it only logs why).
                if result is False and not stopping.is_set():
                    raise ReaderError(_lost_device_message(self.device, frontend.failure))
        finally:
            frontend.close()


def card_uid(tag: Any) -> bytes | None:
    """The UID of an nfcpy tag, or None (logged) when its identifier is not one."""
    identifier = bytes(tag.identifier)
    if len(identifier) not in UID_LENGTHS:
        log.warning("%s: a %d-byte identifier is not a card UID, ignored", tag, len(identifier))
        return None
    return identifier


class _Frontend(nfc.ContactlessFrontend):  # type: ignore[misc]
    """nfcpy's frontend, keeping the device error that ends `connect()`: nfcpy only logs
    it and returns False."""

    failure: Exception | None = None

    def sense(self, *targets: Any, **options: Any) -> Any:
        try:
            return super().sense(*targets, **options)
        except (OSError, nfc.clf.UnsupportedTargetError) as error:
            self.failure = error
            raise

    def exchange(self, send_data: Any, timeout: float) -> Any:
        try:
            return super().exchange(send_data, timeout)
        except OSError as error:
            self.failure = error
            raise


def _open_frontend(device: str) -> _Frontend:
    if not device:  # nfcpy would leave the frontend closed without a word
        raise ReaderError('no NFC device set: give device = "usb" or another nfcpy path')
    try:
        return _Frontend(device)
    except OSError as error:
        raise ReaderError(_cannot_open_message(device, error)) from error


def _cannot_open_message(device: str, error: OSError) -> str:
    if device.startswith("usb"):
        if error.errno == errno.ENOENT:  # usb1 found no libusb to load
            return "libusb is not installed: install Debian's libusb-1.0-0 package"
        if error.errno == errno.EACCES:
            return (
                f"no permission to open the NFC reader at {device}: add the user to the "
                "plugdev group (with a udev rule for the reader) and log in again"
            )
        if error.errno == errno.EBUSY:
            return (
                f"the NFC reader at {device} is in use: stop pcscd, and blacklist the "
                "kernel's pn533_usb module if it holds the reader"
            )
        return f"no NFC reader at {device}: is it plugged in, and is the user in the plugdev group?"
    if device.startswith("tty"):
        port_name = device.split(":")[1] if ":" in device else ""
        port = f"/dev/tty{port_name}"
        if error.errno == errno.EACCES:
            return f"no permission to open {port}: add the user to the dialout group"
        if error.errno == errno.ETIMEDOUT:
            return (
                f"nothing answers as an NFC reader on {port}: check the wiring (TX to RX, "
                f"RX to TX), that the board is set to UART (HSU), and the driver in {device}"
            )
        if port_name.startswith(("AMA", "S")):
            return (
                f"no NFC reader on {port}: enable the serial port (raspi-config, Interface "
                "Options, Serial Port: no login shell, hardware enabled) and check the wiring"
            )
        return f"no NFC reader on {port}: is the USB serial adapter plugged in?"
    return f"no NFC reader at {device}: {error.strerror or error}"


def _lost_device_message(device: str, failure: Exception | None) -> str:
    if isinstance(failure, nfc.clf.UnsupportedTargetError):
        return f"the NFC reader at {device} cannot poll for the configured targets: {failure}"
    reason = f" ({failure})" if failure is not None else ""
    return f"the NFC reader at {device} stopped answering{reason}: is it still plugged in?"


def list_nfc_devices() -> list[str]:
    """The nfcpy device paths of the NFC readers plugged into USB. Serial ports are not
    probed: a PN532 on a UART cannot be told apart without talking to it, which would
    disturb whatever else is wired there."""
    try:
        found = nfc.clf.transport.USB.find("usb") or []
    except (OSError, usb1.USBError) as error:  # no libusb, or no USB on this machine
        log.debug("no USB devices listed: %s", error)
        return []
    return nfc_device_paths((vendor, product) for vendor, product, _bus, _address in found)


def nfc_device_paths(usb_ids: Iterable[tuple[int, int]]) -> list[str]:
    """The nfcpy paths (usb:vendor:product) of the USB devices nfcpy has a driver for."""
    paths: list[str] = []
    for vendor, product in usb_ids:
        path = f"usb:{vendor:04x}:{product:04x}"
        if (vendor, product) in nfc.clf.device.usb_device_map and path not in paths:
            paths.append(path)
    return paths
