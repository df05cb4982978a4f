"""The fleet's firmware: its Ed25519 signing key, offers of images to the edges, and the
chunks that answer an edge's requests.

An offer carries the image's SHA-256 and a signature by the fleet's key over the raw
32-byte digest; the edges hold the public key (`[sync] firmware_public_key`) and keep an
image only if both match. The signing key is a PEM file readable by its owner alone.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.sync.protocol import MAX_PAYLOAD_BYTES, FirmwareChunk, FirmwareOffer, FirmwareRequest

log = logging.getLogger(__name__)

# Base64 makes a chunk 4/3 larger; half the payload limit leaves room for the JSON.
LARGEST_CHUNK = MAX_PAYLOAD_BYTES // 2


class FirmwareError(Exception):
    """A firmware key, image or request the cloud cannot use; the message says why."""


class SigningKeyError(FirmwareError):
    pass


class ChunkRequestError(FirmwareError):
    pass


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The fleet's key from `path` (PEM, PKCS#8), created with mode 0600 if absent."""
    try:
        return _load_signing_key(path)
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked in: a second process creating the
    # key at the same moment finds either no file or a complete one, never half of one.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _load_signing_key(path)
    finally:
        os.unlink(temporary)
    log.info("created the fleet's firmware signing key at %s", path)
    return key


def _load_signing_key(path: Path) -> Ed25519PrivateKey:
    data = path.read_bytes()
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "the firmware signing key %s is readable by others (mode %o): chmod 600 it",
            path,
            mode,
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise SigningKeyError(
            f"{path} is not an unencrypted PEM private key ({error}); move it away to have "
            "a new key created, then give the edges the new public key"
        ) from error
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The public key as the edges' `[sync] firmware_public_key`: base64 of 32 bytes."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def sha256_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def sign_digest(key: Ed25519PrivateKey, digest: bytes) -> str:
    """The offer's signature: Ed25519 over the raw 32-byte SHA-256 digest, base64."""
    if len(digest) != 32:
        raise FirmwareError(f"a SHA-256 digest is 32 bytes, not {len(digest)}")
    return base64.b64encode(key.sign(digest)).decode("ascii")


def make_offer(
    image_path: Path,
    name: str,
    version: str,
    key: Ed25519PrivateKey,
    chunk_size: int = 65536,
) -> FirmwareOffer:
    """An offer of the image at `image_path`, served to edges as `name`."""
    if not 0 < chunk_size <= LARGEST_CHUNK:
        raise FirmwareError(f"chunk_size must be 1..{LARGEST_CHUNK} bytes, not {chunk_size}")
    size = image_path.stat().st_size
    if size == 0:
        raise FirmwareError(f"{image_path} is empty: there is no image to offer")
    digest = sha256_digest(image_path)
    return FirmwareOffer(
        image=name,
        version=version,
        size=size,
        sha256=digest.hex(),
        signature=sign_digest(key, digest),
        chunk_size=chunk_size,
    )


def answer_request(image_path: Path, request: FirmwareRequest, max_chunk: int) -> FirmwareChunk:
    """The bytes an edge asked for: from `request.offset`, at most `request.length` and
    `max_chunk` of them (and never more than fits in one MQTT payload)."""
    if max_chunk <= 0:
        raise FirmwareError(f"max_chunk must be positive, not {max_chunk}")
    length = min(request.length, max_chunk, LARGEST_CHUNK)
    with image_path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        if request.offset >= size:
            raise ChunkRequestError(
                f"{request.image}: offset {request.offset} is beyond the image's end "
                f"({size} bytes); the edge holds an offer for another file of that name"
            )
        file.seek(request.offset)
        data = file.read(length)
    return FirmwareChunk(
        image=request.image,
        offset=request.offset,
        data=base64.b64encode(data).decode("ascii"),
    )
