"""The file directory: firmware images to serve, files chargers uploaded."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from sqlite_utils import Database

from edge.clock import utc_now_text
from edge.store import files

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class FileNameError(ValueError):
    pass


def safe_name(name: str) -> str:
    """A file name with no path in it: chargers choose upload names."""
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        raise FileNameError(f"{name!r}: a file name is 1-128 of A-Z a-z 0-9 . _ - with no path")
    return name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileDirectory:
    def __init__(self, root: Path) -> None:
        self.firmware = root / "firmware"
        self.uploads = root / "uploads"
        self.firmware.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)

    def add_firmware(
        self, db: Database, source: Path, name: str | None = None
    ) -> tuple[str, int, str]:
        """Copy an image into the directory and record its size and SHA-256."""
        name = safe_name(name or source.name)
        target = self.firmware / name
        shutil.copyfile(source, target)
        size, digest = target.stat().st_size, sha256_of(target)
        files.record_firmware_image(db, name, size, digest, utc_now_text())
        return name, size, digest
