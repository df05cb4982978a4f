"""Signed firmware manifests on the edge's side, as plain functions: the fleet's keys
from the settings, an offer's manifest checked against them and against the offer, and
the rules an image must pass before a charger gets it (its targets, its version against
the one installed). docs/security.md ("Firmware") states the rules."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from contract.firmware import key_id_of
from contract.protocol import (
    MANIFEST_FORMAT,
    FirmwareManifest,
    FirmwareOffer,
    FirmwareTarget,
    canonical_manifest,
)

# Several keys may be trusted at once (while the fleet's key is being replaced):
# separated by commas or white space in `[sync] firmware_public_key`.
_KEY_SEPARATORS = re.compile(r"[\s,]+")
_VERSION_PARTS = re.compile(r"[0-9]+|[A-Za-z]+")


class FirmwarePublicKeyError(ValueError):
    """`[sync] firmware_public_key` does not hold Ed25519 public keys; says why."""


class ManifestRefused(Exception):
    """An offer whose manifest cannot be taken; the message is the reason reported."""


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public_key: Ed25519PublicKey


def parse_public_key(text: str) -> Ed25519PublicKey | None:
    """One key (base64 of its 32 raw bytes); None when `text` is blank."""
    keys = parse_public_keys(text)
    if len(keys) > 1:
        raise FirmwarePublicKeyError("sync.firmware_public_key: one key expected here")
    return keys[0].public_key if keys else None


def parse_public_keys(text: str) -> list[TrustedKey]:
    """The fleet keys this edge trusts, from `[sync] firmware_public_key`."""
    keys: list[TrustedKey] = []
    for item in _KEY_SEPARATORS.split(text.strip()):
        if not item:
            continue
        try:
            raw = base64.b64decode(item, validate=True)
        except binascii.Error as error:
            raise FirmwarePublicKeyError(
                f"sync.firmware_public_key is not base64 ({error}): set it to the fleet's "
                "firmware public key, 44 characters ending in '=' (`ocpp-cloud key`)"
            ) from error
        if len(raw) != 32:
            raise FirmwarePublicKeyError(
                f"sync.firmware_public_key holds {len(raw)} bytes; an Ed25519 public key is 32"
            )
        public_key = Ed25519PublicKey.from_public_bytes(raw)
        keys.append(TrustedKey(key_id_of(public_key), public_key))
    return keys


def verified_manifest(offer: FirmwareOffer, keys: list[TrustedKey]) -> FirmwareManifest:
    """The offer's manifest once its signature, form and content hold; otherwise
    ManifestRefused. The signature is checked over the exact bytes received before
    anything in them is read."""
    if offer.manifest is None:
        raise ManifestRefused(
            "an offer of the old format: its signature covers only the image's SHA-256, "
            "not its name, version and targets. Add the image to the cloud again "
            "(ocpp-cloud firmware add ... --target VENDOR/MODEL) to have a manifest signed"
        )
    if not keys:
        raise ManifestRefused(
            "no firmware public key is configured ([sync] firmware_public_key): "
            "this edge accepts only firmware signed by the fleet's key"
        )
    try:
        signature = base64.b64decode(offer.signature, validate=True)
    except binascii.Error:
        raise ManifestRefused("the manifest's signature is not base64") from None
    signed_by = _signer(keys, signature, offer.manifest.encode("utf-8"))
    if signed_by is None:
        raise ManifestRefused(
            "the manifest's signature is not by a key this edge trusts: the image was "
            "signed with another key, or this edge has another fleet's "
            "[sync] firmware_public_key"
        )
    try:
        manifest = FirmwareManifest.model_validate_json(offer.manifest)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'manifest'}: {problem['msg']}"
            for problem in error.errors(include_url=False)[:3]
        )
        raise ManifestRefused(
            f"the signed manifest is not a {MANIFEST_FORMAT}: {problems}"
        ) from None
    if canonical_manifest(manifest) != offer.manifest:
        raise ManifestRefused("the signed manifest is not in canonical form")
    if manifest.key_id != signed_by.key_id:
        raise ManifestRefused(
            f"the manifest names key {manifest.key_id} but was signed by key {signed_by.key_id}"
        )
    claimed = (offer.image, offer.version, offer.size, offer.sha256)
    signed = (manifest.name, manifest.version, manifest.size, manifest.sha256)
    if claimed != signed:
        raise ManifestRefused(
            f"the signed manifest is for {manifest.name} version {manifest.version} "
            f"({manifest.size} bytes, SHA-256 {manifest.sha256[:16]}…), not the offered "
            f"{offer.image} version {offer.version} ({offer.size} bytes, SHA-256 "
            f"{offer.sha256[:16]}…): an image offered under another name or version"
        )
    return manifest


def _signer(keys: list[TrustedKey], signature: bytes, message: bytes) -> TrustedKey | None:
    for key in keys:
        try:
            key.public_key.verify(signature, message)
        except InvalidSignature:
            continue
        return key
    return None


# -- targets ---------------------------------------------------------------------


def printable(text: str, limit: int = 64) -> str:
    """A charger's own words (vendor, model, version) fit for a reason sent to the cloud:
    control characters replaced, at most `limit` characters."""
    cleaned = "".join(character if character.isprintable() else "?" for character in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def is_target(targets: list[FirmwareTarget], vendor: str | None, model: str | None) -> bool:
    """Whether a charger of `vendor` and `model` is among `targets` (case ignored)."""
    if not vendor or not model:
        return False
    vendor, model = vendor.casefold(), model.casefold()
    return any(
        fnmatch.fnmatchcase(vendor, target.vendor.casefold())
        and fnmatch.fnmatchcase(model, target.model.casefold())
        for target in targets
    )


# -- versions --------------------------------------------------------------------

VersionKey = tuple[tuple[int, int, str], ...]


def version_key(text: str) -> VersionKey | None:
    """An order on version texts: from the first digit (so 'V3.1', 'fw-3.1' and '3.1'
    are alike), parts compared one by one, numbers as numbers and letters as text
    (case ignored); a version that goes on with a number is newer (3.1.1 > 3.1), with
    letters older (3.1-rc1 < 3.1). None for a text without digits: it cannot be ordered."""
    start = next(
        (
            index
            for index, character in enumerate(text)
            if character.isascii() and character.isdigit()
        ),
        None,
    )
    if start is None:
        return None
    parts: list[tuple[int, int, str]] = []
    for part in _VERSION_PARTS.findall(text[start:]):
        if part.isdigit():
            digits = part.lstrip("0") or "0"
            # Compared by length then text: any number of digits, no int() of a huge one.
            parts.append((2, len(digits), digits))
        else:
            parts.append((0, 0, part.casefold()))
    parts.append((1, 0, ""))
    return tuple(parts)


def is_older(version: str, than: str) -> bool:
    """Whether `version` is older than `than`; False when either cannot be ordered."""
    key, other = version_key(version), version_key(than)
    return key is not None and other is not None and key < other
