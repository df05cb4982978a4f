"""Which USB devices the installer lists as NFC readers."""

from __future__ import annotations

from edge.readers.nfc import nfc_device_paths


def test_usb_devices_nfcpy_drives_are_listed_once_by_vendor_and_product() -> None:
    usb_ids = [
        (0x1D6B, 0x0002),  # a root hub
        (0x072F, 0x2200),  # ACS ACR122U
        (0x054C, 0x06C3),  # Sony RC-S380
        (0x072F, 0x2200),  # a second ACR122U
        (0x0403, 0x6001),  # an FTDI serial adapter: maybe a PN532, maybe not
    ]
    assert nfc_device_paths(usb_ids) == ["usb:072f:2200", "usb:054c:06c3"]
