"""Firmware words both sides speak: a target written `VENDOR/MODEL` (the cloud's command
line and API read it, the edge prints it) and a signing key's id in manifests."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from pydantic import ValidationError

from contract.protocol import FirmwareTarget

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A key's id in manifests: the first 8 bytes of the SHA-256 of its 32 raw bytes, hex."""
    # Imported here: a caller that has a key has cryptography; the contract does not need it.
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def target_text(target: FirmwareTarget) -> str:
    return f"{target.vendor}/{target.model}"


def parse_target(text: str) -> FirmwareTarget:
    """`VENDOR/MODEL` (shell patterns, split at the first slash) as a target; ValueError
    with a sentence otherwise."""
    vendor, separator, model = text.partition("/")
    if not separator:
        raise ValueError(f"target {text!r}: write VENDOR/MODEL, e.g. 'ACME/AC22*' or '*/*'")
    try:
        return FirmwareTarget(vendor=vendor.strip(), model=model.strip())
    except ValidationError:
        raise ValueError(
            f"target {text!r}: vendor and model are 1-64 characters each, no control "
            "characters, and the vendor has no '/'"
        ) from None
