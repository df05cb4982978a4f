"""The fleet's firmware: its Ed25519 signing key, images kept by their content, signed
manifests, offers of images to the edges, and the chunks that answer an edge's requests.

Each image gets a manifest when it is added (name, version, targets, size, SHA-256,
creation time, key id), signed whole by the fleet's key in its canonical form
(contract.protocol.canonical_manifest). An offer carries the manifest and signature;
the edges hold the public key (`[sync] firmware_public_key`) and take an image only if
the manifest verifies and describes the offer and the bytes. The signing key is a PEM
file readable by its owner alone.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import stat
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from contract.firmware import key_id_of
from contract.protocol import (
    MANIFEST_FORMAT,
    MAX_PAYLOAD_BYTES,
    FirmwareChunk,
    FirmwareManifest,
    FirmwareOffer,
    FirmwareRequest,
    FirmwareTarget,
    canonical_manifest,
)

log = logging.getLogger(__name__)

# Base64 makes a chunk 4/3 larger; half the payload limit leaves room for the JSON.
LARGEST_CHUNK = MAX_PAYLOAD_BYTES // 2


class FirmwareError(Exception):
    """A firmware key, image or request the cloud cannot use; the message says why."""


class SigningKeyError(FirmwareError):
    pass


class ChunkRequestError(FirmwareError):
    pass


class ImageTooLarge(FirmwareError):
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


def key_id(key: Ed25519PrivateKey) -> str:
    """The id manifests give the key: 16 hex digits of the SHA-256 of its public key."""
    return key_id_of(key.public_key())


def make_manifest(
    name: str,
    version: str,
    targets: list[FirmwareTarget],
    size: int,
    sha256: str,
    key: Ed25519PrivateKey,
    created_at: datetime | None = None,
) -> FirmwareManifest:
    """The manifest of an image; FirmwareError with the reasons when a field is wrong."""
    created = (created_at or datetime.now(UTC)).astimezone(UTC)
    try:
        return FirmwareManifest(
            format=MANIFEST_FORMAT,
            name=name,
            version=version,
            targets=targets,
            size=size,
            sha256=sha256,
            created_at=created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            key_id=key_id(key),
        )
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors(include_url=False)
        )
        raise FirmwareError(f"firmware image {name!r} cannot be signed: {problems}") from None


def sign_manifest(key: Ed25519PrivateKey, manifest: FirmwareManifest) -> tuple[str, str]:
    """The manifest's canonical text and the Ed25519 signature over its bytes (base64)."""
    text = canonical_manifest(manifest)
    return text, base64.b64encode(key.sign(text.encode("ascii"))).decode("ascii")


def resign(key: Ed25519PrivateKey, manifest: FirmwareManifest) -> tuple[str, str]:
    """The same manifest signed now by `key` (its key id and time renewed)."""
    renewed = make_manifest(
        manifest.name, manifest.version, manifest.targets, manifest.size, manifest.sha256, key
    )
    return sign_manifest(key, renewed)


def make_offer(
    image_path: Path,
    name: str,
    version: str,
    key: Ed25519PrivateKey,
    *,
    targets: list[FirmwareTarget],
    chunk_size: int = 65536,
    force: bool = False,
) -> FirmwareOffer:
    """An offer of the image at `image_path`, served to edges as `name`, with its manifest
    signed now."""
    if not 0 < chunk_size <= LARGEST_CHUNK:
        raise FirmwareError(f"chunk_size must be 1..{LARGEST_CHUNK} bytes, not {chunk_size}")
    size = image_path.stat().st_size
    if size == 0:
        raise FirmwareError(f"{image_path} is empty: there is no image to offer")
    digest = sha256_digest(image_path).hex()
    manifest = make_manifest(name, version, targets, size, digest, key)
    text, signature = sign_manifest(key, manifest)
    return FirmwareOffer(
        image=name,
        version=version,
        size=size,
        sha256=digest,
        signature=signature,
        chunk_size=chunk_size,
        manifest=text,
        force=force,
    )


@dataclass(frozen=True)
class StoredImage:
    path: Path
    size: int
    sha256: str

    def keep_if(self, registered_path: str) -> None:
        """Remove this file unless it is the one registered (blocking)."""
        if registered_path != str(self.path):
            self.path.unlink(missing_ok=True)


# Images on their way in, in `firmware.directory`: `.upload-XXXXXXXX`.
UPLOAD_PREFIX = ".upload-"


class ImageUpload:
    """An image arriving in pieces (blocking calls: run them off the event loop): written
    to a temporary file and hashed as it comes, at most `max_bytes`, then kept in
    `directory` under its SHA-256 and a name of its own, fsynced. A file of its own
    never replaces another image's bytes; `StoredImage.discard` removes it when it is
    not registered (refused, or the same image was there already)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.max_bytes = max_bytes
        self.size = 0
        self._digest = hashlib.sha256()
        while True:
            descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=UPLOAD_PREFIX)
            try:
                # Held while the image arrives: remove_abandoned_uploads leaves it be.
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A start's sweep took it in the instant before: it is removing it.
                os.close(descriptor)
        self._file = os.fdopen(descriptor, "wb")
        self._temporary = Path(temporary)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise ImageTooLarge(
                f"the image is larger than firmware.max_image_bytes ({self.max_bytes} bytes)"
            )
        self._digest.update(data)
        self._file.write(data)

    def finish(self) -> StoredImage:
        if self.size == 0:
            raise FirmwareError("the image is empty")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = self._digest.hexdigest()
        path = self.directory / f"{digest}.{uuid.uuid4().hex[:12]}.bin"
        os.replace(self._temporary, path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return StoredImage(path, self.size, digest)

    def discard(self) -> None:
        self._file.close()
        self._temporary.unlink(missing_ok=True)


def remove_abandoned_uploads(directory: Path) -> int:
    """Remove uploads no process is receiving any more (cut off by a forced stop or a
    crash: their process, and so its lock, is gone); those another replica sharing the
    directory is receiving are locked, and kept. How many were removed (blocking)."""
    removed = 0
    for path in directory.glob(f"{UPLOAD_PREFIX}*"):
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # finished or discarded meanwhile
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # being received
        else:
            path.unlink(missing_ok=True)
            removed += 1
        finally:
            os.close(descriptor)
    return removed


def store_image_file(source: Path, directory: Path, max_bytes: int) -> StoredImage:
    """Copy an image file into `directory` (see ImageUpload)."""
    upload = ImageUpload(directory, max_bytes)
    try:
        with source.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                upload.write(block)
        return upload.finish()
    except BaseException:
        upload.discard()
        raise


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
