"""Files the edge serves and receives: the firmware images in its file directory (the
file server serves only these) and the files chargers uploaded."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database


def record_firmware_image(db: Database, name: str, size: int, sha256: str, now: str) -> None:
    db.execute(
        "INSERT INTO firmware_images (name, size, sha256, added_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, "
        "added_at = excluded.added_at",
        [name, size, sha256, now],
    )


def firmware_image_sha256(db: Database, name: str) -> str | None:
    """The SHA-256 (hex) of the image `name`; None if the directory holds no such image."""
    row = db.execute("SELECT sha256 FROM firmware_images WHERE name = ?", [name]).fetchone()
    return None if row is None else str(row[0])


def list_firmware_images(db: Database) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM firmware_images ORDER BY name"))


def record_received_file(
    db: Database, charger_id: str, name: str, size: int, sha256: str, via: str, now: str
) -> None:
    db.execute(
        "INSERT INTO received_files (charger_id, name, size, sha256, via, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [charger_id, name, size, sha256, via, now],
    )
