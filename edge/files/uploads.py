"""Where chargers' uploads go, and how much they may bring (HTTP and FTP alike).

Each charger has its own folder, `uploads/<charger id>/` (the id percent-escaped where it
holds a character a file name should not), so no charger can touch another's files. An
upload is admitted when it fits: at most `max_upload_bytes`, the charger's files at most
`max_charger_bytes` and `max_charger_files` with it, and the disk keeps `min_free_bytes`
and `min_free_percent` free after it (so the store's disk never fills). It is written
to a temporary name in the folder, checked against the same limits as it grows (a body
of unknown length, or several uploads at once), hashed as it is written, then fsynced,
renamed into place and the folder fsynced: whole and on disk before anyone is told.

Every method blocks (disk): call them in a thread, never on the event loop.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from edge.settings import FilesSettings

PARTIAL_SUFFIX = ".part"
# Free disk is looked at again after this many bytes are written.
DISK_CHECK_BYTES = 1 << 20


class UploadRefused(Exception):
    """The upload does not fit; `status` is the HTTP answer, `errno` FTP's."""

    def __init__(self, message: str, status: int, error_number: int) -> None:
        super().__init__(message)
        self.status = status
        self.errno = error_number


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int
    max_charger_bytes: int
    max_charger_files: int
    min_free_bytes: int
    min_free_percent: float

    @classmethod
    def of(cls, settings: FilesSettings) -> UploadLimits:
        return cls(
            settings.max_upload_bytes,
            settings.max_charger_bytes,
            settings.max_charger_files,
            settings.min_free_bytes,
            settings.min_free_percent,
        )


def charger_folder_name(charger_id: str) -> str:
    """A folder name for a charger id: the id, with anything but letters, digits and
    `._-~` percent-escaped (charger ids start with a letter or digit: never hidden)."""
    return quote(charger_id, safe="")


class UploadArea:
    """`uploads/`: one folder per charger, and the bytes each is receiving right now."""

    def __init__(self, root: Path, limits: UploadLimits) -> None:
        self.root = root
        self.limits = limits
        self._lock = threading.Lock()
        # Bytes being received per charger folder, not yet in its files.
        self._receiving: dict[str, int] = {}

    def folder(self, charger_id: str) -> Path:
        return self.root / charger_folder_name(charger_id)

    def start(self, charger_id: str, name: str, declared: int | None = None) -> Upload:
        """An upload of `name` (a safe file name) into the charger's folder, admitted now;
        UploadRefused when it cannot fit."""
        folder = self.folder(charger_id)
        folder.mkdir(parents=True, exist_ok=True)
        limits = self.limits
        if declared is not None and declared > limits.max_upload_bytes:
            raise _too_large(limits.max_upload_bytes)
        kept = {
            entry.name: entry.stat().st_size
            for entry in os.scandir(folder)
            if entry.is_file() and not entry.name.startswith(".")
        }
        replaced = kept.pop(name, None)
        if replaced is None and len(kept) >= limits.max_charger_files:
            raise UploadRefused(
                f"this charger has {len(kept)} files here, the most it may keep "
                "(files.max_charger_files): remove some first",
                507,
                errno.EDQUOT,
            )
        upload = Upload(self, charger_id, folder, name, sum(kept.values()))
        upload.check(declared or 0)
        return upload

    def free_floor(self, path: Path) -> tuple[int, int]:
        """(bytes free, bytes that must stay free) on `path`'s disk."""
        stats = os.statvfs(path)
        free = stats.f_bavail * stats.f_frsize
        total = stats.f_blocks * stats.f_frsize
        return free, max(
            self.limits.min_free_bytes, int(total * self.limits.min_free_percent / 100)
        )

    def _receiving_by_others(self, folder: str, mine: int) -> int:
        return self._receiving.get(folder, 0) - mine

    def _note(self, folder: str, change: int) -> None:
        with self._lock:
            left = self._receiving.get(folder, 0) + change
            if left:
                self._receiving[folder] = left
            else:
                self._receiving.pop(folder, None)


class Upload:
    """One file being received: `write` chunks, then `finish` (or `abort`)."""

    def __init__(
        self, area: UploadArea, charger_id: str, folder: Path, name: str, kept_bytes: int
    ) -> None:
        self.area = area
        self.charger_id = charger_id
        self.folder = folder
        self.name = name
        self.target = folder / name
        self.kept_bytes = kept_bytes
        self.size = 0
        self._digest = hashlib.sha256()
        self._lock = threading.Lock()
        self._unchecked = 0
        descriptor, partial = tempfile.mkstemp(
            prefix=f".{name}.", suffix=PARTIAL_SUFFIX, dir=folder
        )
        self.partial = Path(partial)
        self._file = os.fdopen(descriptor, "wb")
        self._done = False

    def check(self, more: int) -> None:
        """UploadRefused unless `more` bytes beyond what came still fit every limit."""
        limits = self.area.limits
        after = self.size + more
        if after > limits.max_upload_bytes:
            raise _too_large(limits.max_upload_bytes)
        others = self.area._receiving_by_others(self.folder.name, self.size)
        if self.kept_bytes + others + after > limits.max_charger_bytes:
            raise UploadRefused(
                f"this charger's files would pass {limits.max_charger_bytes} bytes "
                "(files.max_charger_bytes): remove some first",
                507,
                errno.EDQUOT,
            )
        free, floor = self.area.free_floor(self.folder)
        if free - more < floor:
            raise UploadRefused(
                f"the disk would keep less than {floor} bytes free (files.min_free_bytes, "
                "min_free_percent): the edge's store needs them",
                507,
                errno.ENOSPC,
            )

    def write(self, chunk: bytes) -> None:
        with self._lock:
            if self._done:
                raise UploadRefused("the upload has ended", 409, errno.EBADF)
            limits = self.area.limits
            if self.size + len(chunk) > limits.max_upload_bytes:
                raise _too_large(limits.max_upload_bytes)
            self._unchecked += len(chunk)
            if self._unchecked >= DISK_CHECK_BYTES:
                self.check(len(chunk))
                self._unchecked = 0
            self._file.write(chunk)
            self._digest.update(chunk)
            self.size += len(chunk)
            self.area._note(self.folder.name, len(chunk))

    def finish(self) -> tuple[int, str]:
        """The file whole and durable under its name: (size, SHA-256)."""
        with self._lock:
            self.check(0)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.partial, self.target)
            _fsync_directory(self.folder)
            self._end()
            return self.size, self._digest.hexdigest()

    def abort(self) -> None:
        """Forget what came; idempotent."""
        with self._lock:
            if self._done:
                return
            self._file.close()
            self.partial.unlink(missing_ok=True)
            self._end()

    def _end(self) -> None:
        self._done = True
        self.area._note(self.folder.name, -self.size)


def _too_large(limit: int) -> UploadRefused:
    return UploadRefused(
        f"an upload may bring at most {limit} bytes (files.max_upload_bytes)", 413, errno.EFBIG
    )


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_partial_uploads(root: Path) -> int:
    """Delete what uploads cut off by a stop left behind; how many."""
    removed = 0
    for partial in root.glob(f"*/.*{PARTIAL_SUFFIX}"):
        partial.unlink(missing_ok=True)
        removed += 1
    return removed
