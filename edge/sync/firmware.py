"""Firmware images the cloud offers this edge: taken only with a manifest signed by
the fleet's key that names the offered image, version, size and SHA-256, and not older
than what is held or installed (unless the operator forced it); then fetched in chunks
into a partial file, resumed from that file after any interruption, and moved where the
chargers' file server serves them only once their size and SHA-256 match the manifest.

`FirmwareDownloads` holds that state (durable in the `firmware_downloads` table and the
partial files); the MQTT link feeds it offers and chunks and publishes the requests it
returns. Nothing here talks to the broker.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlite_utils

from contract.protocol import (
    FirmwareChunk,
    FirmwareManifest,
    FirmwareOffer,
    FirmwareProgress,
    FirmwareRequest,
)
from edge.clock import utc_now_text
from edge.files.store import FileDirectory, FileNameError, safe_name
from edge.store import files as file_store
from edge.store import firmware as firmware_store
from edge.store.writer import StoreWriter
from edge.sync.manifest import (
    FirmwarePublicKeyError,
    ManifestRefused,
    is_older,
    is_target,
    parse_public_key,
    parse_public_keys,
    printable,
    verified_manifest,
)

log = logging.getLogger(__name__)

# Called inside the unit of work that records the change it reports (the sync link
# appends it to the outbox there), so the change and its event commit together.
Report = Callable[[sqlite_utils.Database, FirmwareProgress], None]
Status = Literal["downloading", "fetched", "verified", "rejected"]
# A `downloading` progress event each time another tenth of an image has arrived.
PROGRESS_STEPS = 10


class FirmwareError(Exception):
    """Firmware cannot be fetched as configured; the message says what to change."""


__all__ = [
    "FirmwareDownloads",
    "FirmwareError",
    "FirmwarePublicKeyError",
    "next_request",
    "parse_public_key",
]


def next_request(offer: FirmwareOffer, received: int) -> FirmwareRequest | None:
    """What to ask for after the first `received` bytes; None once the image is whole."""
    if received >= offer.size:
        return None
    length = min(offer.chunk_size, offer.size - received)
    return FirmwareRequest(image=offer.image, offset=received, length=length)


def _same_offer(one: FirmwareOffer, other: FirmwareOffer) -> bool:
    # The chunk size only shapes the requests, and `force` only lets an offer in: an
    # offer repeated with another of either is still the same image.
    return (one.version, one.size, one.sha256, one.signature, one.manifest) == (
        other.version,
        other.size,
        other.sha256,
        other.signature,
        other.manifest,
    )


@dataclass
class _Download:
    offer: FirmwareOffer
    status: Status
    received: int = 0
    # Tenths of the image reported so far as `downloading`.
    reported_steps: int = 0


class FirmwareDownloads:
    """The images this edge is fetching, has verified, or refused.

    `await offered(offer)` and `await chunk(chunk)` return the request to publish next
    (None: nothing to ask); `await pending_requests()` gives what to ask again after a
    reconnection or when no chunk came for a while. `report` receives progress events for
    the cloud. Calls are serialised: one chunk is written and fsynced before the next.
    """

    def __init__(
        self,
        store: StoreWriter,
        files: FileDirectory,
        public_key: str,
        report: Report | None = None,
    ) -> None:
        self._store = store
        self._files = files
        self._keys = parse_public_keys(public_key)
        self._report = report or (lambda db, progress: None)
        self._downloads: dict[str, _Download] | None = None
        self._lock = asyncio.Lock()

    def partial_path(self, image: str) -> Path:
        """Where an image's bytes gather. The leading dot keeps it out of the file
        server's reach: a served name starts with a letter or digit."""
        return self._files.firmware / f".{image}.part"

    def served_path(self, image: str) -> Path:
        return self._files.firmware / image

    async def offered(self, offer: FirmwareOffer) -> FirmwareRequest | None:
        """Record an offer and return the first request for it, or None.

        The same offer again is a no-op once verified (reported again, for a cloud that
        missed it), and resumes from the partial file while it is being fetched; a new
        version of an image name (or an offer refused before) starts over. An offer that
        cannot be accepted (no trusted signature over a manifest that names this image,
        an unsafe name, older than held or installed and not forced, no room) is
        refused at once, before any byte moves.
        """
        async with self._lock:
            downloads = await self._loaded()
            known = downloads.get(offer.image)
            if known is not None and _same_offer(known.offer, offer):
                if known.status == "verified":
                    await self._store.run(
                        lambda db: self._report(db, self._progress_event(known, "verified"))
                    )
                    return None
                if known.status == "downloading":
                    return next_request(known.offer, known.received)
            # Whatever was gathered for another offer of this name is of no use now.
            await asyncio.to_thread(_remove, self.partial_path(offer.image))
            download = _Download(offer, "downloading")
            refusal = self._manifest_refusal(offer)
            if refusal is None:
                refusal = await self._store.run(lambda db: _version_refusal(db, offer))
            if refusal is None:
                refusal = await asyncio.to_thread(self._disk_refusal, offer)
            if refusal is not None:
                await self._settle(download, "rejected", refusal, new_offer=True)
                downloads[offer.image] = download
                for name in await self._store.run(firmware_store.forget_old_refusals):
                    downloads.pop(name, None)
                return None
            starting = self._progress_event(
                download, "downloading", "forced by the operator" if offer.force else ""
            )

            def record(db: sqlite_utils.Database) -> None:
                firmware_store.record_offer(db, offer)
                self._report(db, starting)

            await self._store.run(record)
            downloads[offer.image] = download
            log.info(
                "fetching firmware %s version %s (%d bytes)%s",
                offer.image,
                offer.version,
                offer.size,
                ", forced" if offer.force else "",
            )
            return next_request(offer, 0)

    async def chunk(self, chunk: FirmwareChunk) -> FirmwareRequest | None:
        """Write a chunk if it is the next one expected and return the next request.

        A chunk for an image not being fetched, at another offset (a repeat, or one
        arriving late) or past the offered size is ignored: the request that is due
        is asked again by `pending_requests`. The last chunk completes the image:
        verified and served, or deleted and refused; either way None is returned.
        """
        async with self._lock:
            download = (await self._loaded()).get(chunk.image)
            if download is None or download.status != "downloading":
                log.info("firmware chunk for %s, which is not being fetched: ignored", chunk.image)
                return None
            if chunk.offset != download.received:
                log.debug(
                    "firmware chunk %s@%d ignored: expecting offset %d",
                    chunk.image,
                    chunk.offset,
                    download.received,
                )
                return None
            try:
                data = base64.b64decode(chunk.data, validate=True)
            except binascii.Error:
                log.warning(
                    "firmware chunk %s@%d is not base64: ignored", chunk.image, chunk.offset
                )
                return None
            if not data or chunk.offset + len(data) > download.offer.size:
                log.warning(
                    "firmware chunk %s@%d of %d bytes does not fit the offered %d: ignored",
                    chunk.image,
                    chunk.offset,
                    len(data),
                    download.offer.size,
                )
                return None
            partial = self.partial_path(chunk.image)
            try:
                await asyncio.to_thread(_write_at, partial, chunk.offset, data)
            except OSError as error:  # a full or failing disk: free it, say so
                await asyncio.to_thread(_remove, partial)
                await self._settle(download, "rejected", f"cannot write {partial}: {error}")
                return None
            download.received += len(data)
            if download.received < download.offer.size:
                await self._progress(download)
                return next_request(download.offer, download.received)
            await self._complete(download)
            return None

    async def pending_requests(self) -> list[FirmwareRequest]:
        """The request due for every image being fetched, from where each stopped."""
        async with self._lock:
            downloads = await self._loaded()
            return [
                request
                for download in downloads.values()
                if download.status == "downloading"
                and (request := next_request(download.offer, download.received)) is not None
            ]

    # -- inside ----------------------------------------------------------------------

    def _manifest_refusal(self, offer: FirmwareOffer) -> str | None:
        """Why the offer's name or manifest cannot be taken, or None."""
        try:
            safe_name(offer.image)
            verified_manifest(offer, self._keys)
        except (FileNameError, ManifestRefused) as error:
            return str(error)
        return None

    def _disk_refusal(self, offer: FirmwareOffer) -> str | None:
        """Why there is no room for the image (blocking: asks the disk), or None."""
        free = shutil.disk_usage(self._files.firmware).free
        if free < offer.size:
            return f"not enough disk space: {offer.size} bytes offered, {free} free"
        return None

    def _manifest(self, offer: FirmwareOffer) -> FirmwareManifest | None:
        try:
            return verified_manifest(offer, self._keys)
        except ManifestRefused:
            return None

    async def _loaded(self) -> dict[str, _Download]:
        """Every image's state, read once from the store and the partial files."""
        if self._downloads is not None:
            return self._downloads
        rows = await self._store.run(firmware_store.download_rows)
        downloads: dict[str, _Download] = {}
        for row in rows:
            offer = firmware_store.offer_of(row)
            download = _Download(offer, row["status"])
            if download.status == "downloading":
                # The partial file, fsynced chunk by chunk, is the truth about progress.
                download.received = await asyncio.to_thread(
                    _usable_size, self.partial_path(offer.image), offer.size
                )
                download.reported_steps = download.received * PROGRESS_STEPS // offer.size
            downloads[offer.image] = download
        self._downloads = downloads
        for download in downloads.values():
            if download.status != "downloading":
                continue
            if download.received == download.offer.size:
                # Stopped between the last write and the check: check now.
                await self._complete(download)
            elif download.received == 0:
                await self._recover_installed(download)
        return downloads

    async def _recover_installed(self, download: _Download) -> None:
        """Record an image moved in place just before a stop that left it unrecorded
        (the file server would otherwise announce the previous image's digest)."""
        served = self.served_path(download.offer.image)
        if not served.is_file() or served.stat().st_size != download.offer.size:
            return
        download.received = download.offer.size
        failure = await asyncio.to_thread(
            _verification_failure, served, download.offer, self._manifest(download.offer)
        )
        if failure is None:
            await self._settle(download, "verified", "")
        else:
            download.received = 0

    async def _progress(self, download: _Download) -> None:
        steps = download.received * PROGRESS_STEPS // download.offer.size
        if steps <= download.reported_steps:
            return
        download.reported_steps = steps
        image, received = download.offer.image, download.received
        progress = self._progress_event(download, "downloading")

        def record(db: sqlite_utils.Database) -> None:
            firmware_store.record_download_progress(db, image, received)
            self._report(db, progress)

        await self._store.run(record)

    async def _complete(self, download: _Download) -> None:
        offer = download.offer
        fetched = self._progress_event(download, "fetched")
        await self._store.run(lambda db: self._report(db, fetched))
        partial = self.partial_path(offer.image)
        # The manifest again: the key may have left the settings while this was fetched.
        manifest = self._manifest(offer)
        refusal = await asyncio.to_thread(_verification_failure, partial, offer, manifest)
        if refusal is None:
            try:
                await asyncio.to_thread(_install, partial, self.served_path(offer.image))
            except OSError as error:
                refusal = f"cannot move the image in place: {error}"
        if refusal is not None:
            await asyncio.to_thread(_remove, partial)
            await self._settle(download, "rejected", refusal)
            return
        await self._settle(download, "verified", "")

    async def _settle(
        self, download: _Download, status: Status, detail: str, *, new_offer: bool = False
    ) -> None:
        """Record the outcome (and a verified image for the file server) in one commit:
        an offer refused at once is never on disk as one being fetched."""
        offer, received = download.offer, download.received
        progress = self._progress_event(download, status, detail)
        assert status in ("verified", "rejected")

        def record(db: sqlite_utils.Database) -> None:
            self._report(db, progress)
            if new_offer:
                firmware_store.record_offer(db, offer)
            firmware_store.settle_download(
                db,
                offer.image,
                "verified" if status == "verified" else "rejected",
                received,
                detail,
            )
            if status == "verified":
                file_store.record_firmware_image(
                    db, offer.image, offer.size, offer.sha256, utc_now_text()
                )

        await self._store.run(record)
        download.status = status
        if status == "verified":
            log.info("firmware %s version %s verified", offer.image, offer.version)
        else:
            log.warning("firmware %s version %s refused: %s", offer.image, offer.version, detail)

    @staticmethod
    def _progress_event(download: _Download, status: Status, detail: str = "") -> FirmwareProgress:
        return FirmwareProgress(
            image=download.offer.image, status=status, bytes=download.received, detail=detail
        )


def _version_refusal(db: sqlite_utils.Database, offer: FirmwareOffer) -> str | None:
    """Why the offered version would go back (and the operator did not force it): older
    than the image verified under the same name, or than what every charger it targets
    at this site runs. None when it may be taken."""
    if offer.force or offer.manifest is None:
        return None
    manifest = FirmwareManifest.model_validate_json(offer.manifest)  # verified just before
    held = firmware_store.held_version(db, offer.image)
    if held is not None and is_older(manifest.version, held):
        return (
            f"version {manifest.version} is older than the {held} held under the name "
            f"{offer.image}; offer it with force=true to go back"
        )
    newer: list[str] = []
    for charger in firmware_store.accepted_chargers(db):
        if not is_target(manifest.targets, charger.vendor, charger.model):
            continue
        runs = [version for version, _ in charger.versions() if is_older(manifest.version, version)]
        if not runs:
            return None  # at least one charger it is meant for can take it
        newer.append(f"{charger.charger_id} runs {printable(runs[0])}")
    if newer:
        return (
            f"version {manifest.version} is older than what every charger it targets runs "
            f"({', '.join(newer)}); offer it with force=true to go back"
        )
    return None


# -- blocking file work, run in a thread ------------------------------------------------


def _write_at(path: Path, offset: int, data: bytes) -> None:
    """Write `data` at `offset`, cut anything after it, and wait for the disk."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(descriptor, data, offset)
        os.ftruncate(descriptor, offset + len(data))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _usable_size(path: Path, size: int) -> int:
    """How many bytes of a partial file can be kept: all of them, unless it outgrew the
    offer (then it is not this offer's file and is removed)."""
    try:
        held = path.stat().st_size
    except FileNotFoundError:
        return 0
    if held > size:
        path.unlink()
        return 0
    return held


def _verification_failure(
    path: Path, offer: FirmwareOffer, manifest: FirmwareManifest | None
) -> str | None:
    """Why the received file is not the image the signed manifest describes; None when
    it is. `manifest` is None when the offer's manifest no longer verifies."""
    if manifest is None:
        return (
            "the manifest no longer verifies with [sync] firmware_public_key "
            "(the key changed while the image was fetched, or an offer of the old format)"
        )
    size = path.stat().st_size
    if size != manifest.size:
        return f"received {size} bytes, the signed manifest says {manifest.size}"
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != manifest.sha256:
        return (
            f"SHA-256 {digest.hexdigest()} is not the signed {manifest.sha256}: the image "
            "changed in the cloud after it was offered, or was damaged on the way"
        )
    return None


def _install(partial: Path, target: Path) -> None:
    """Move a verified image in place in one step and make the rename durable."""
    os.replace(partial, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
