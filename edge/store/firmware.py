"""Firmware in the store: images the cloud offered (`firmware_downloads`, with the signed
manifest each was verified against), installs the edge started on its chargers
(`firmware_installs`) and the version each charger runs because the edge installed it
(`installed_firmware`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlite_utils import Database

from contract.protocol import FirmwareInstall, FirmwareManifest, FirmwareOffer
from edge.clock import utc_now_text

DownloadStatus = Literal["downloading", "verified", "rejected"]
InstallStatus = Literal["refused", "installing", "installed", "failed"]

# What a charger's FirmwareStatusNotification or SignedFirmwareStatusNotification says
# about an install under way; statuses not listed (Idle) say nothing about it.
_FAILED = frozenset(
    ("DownloadFailed", "InstallationFailed", "InstallVerificationFailed", "InvalidSignature")
)
_UNDER_WAY = frozenset(
    (
        "Downloading",
        "Downloaded",
        "DownloadScheduled",
        "DownloadPaused",
        "SignatureVerified",
        "InstallScheduled",
        "Installing",
        "InstallRebooting",
    )
)
_JOB_ACTIONS = {"firmware": "UpdateFirmware", "signed_firmware": "SignedUpdateFirmware"}


# -- downloads -------------------------------------------------------------------


def download_rows(db: Database) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM firmware_downloads ORDER BY image"))


def offer_of(row: dict[str, Any]) -> FirmwareOffer:
    return FirmwareOffer(
        image=row["image"],
        version=row["version"],
        size=row["size"],
        sha256=row["sha256"],
        signature=row["signature"],
        chunk_size=row["chunk_size"],
        manifest=row["manifest"],
        force=bool(row["forced"]),
    )


def record_offer(db: Database, offer: FirmwareOffer) -> None:
    """The offer as the image's row, starting over from no bytes and no verdict."""
    now = utc_now_text()
    db.conn.execute(
        "INSERT INTO firmware_downloads (image, version, size, sha256, signature, chunk_size, "
        "manifest, forced, status, bytes_received, detail, offered_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'downloading', 0, '', ?, ?) "
        "ON CONFLICT (image) DO UPDATE SET version = excluded.version, size = excluded.size, "
        "sha256 = excluded.sha256, signature = excluded.signature, "
        "chunk_size = excluded.chunk_size, manifest = excluded.manifest, "
        "forced = excluded.forced, status = excluded.status, bytes_received = 0, "
        "detail = '', offered_at = excluded.offered_at, updated_at = excluded.updated_at",
        (
            offer.image,
            offer.version,
            offer.size,
            offer.sha256,
            offer.signature,
            offer.chunk_size,
            offer.manifest,
            int(offer.force),
            now,
            now,
        ),
    )


def record_download_progress(db: Database, image: str, received: int) -> None:
    db.conn.execute(
        "UPDATE firmware_downloads SET bytes_received = ?, updated_at = ? WHERE image = ?",
        (received, utc_now_text(), image),
    )


def settle_download(
    db: Database, image: str, status: DownloadStatus, received: int, detail: str
) -> None:
    db.conn.execute(
        "UPDATE firmware_downloads SET status = ?, bytes_received = ?, detail = ?, "
        "updated_at = ? WHERE image = ?",
        (status, received, detail, utc_now_text(), image),
    )


# Refused offers kept for `ocpp-edge firmware list`; older ones are forgotten, so that
# offers under ever new names cannot grow the table without end.
KEEP_REFUSED = 100


def forget_old_refusals(db: Database, keep: int = KEEP_REFUSED) -> list[str]:
    """Delete refused offers beyond the newest `keep`; the image names forgotten."""
    names = [
        row[0]
        for row in db.conn.execute(
            "SELECT image FROM firmware_downloads WHERE status = 'rejected' "
            "ORDER BY updated_at DESC, rowid DESC LIMIT -1 OFFSET ?",
            (keep,),
        )
    ]
    db.conn.executemany("DELETE FROM firmware_downloads WHERE image = ?", [(n,) for n in names])
    return names


@dataclass(frozen=True)
class VerifiedImage:
    """An image the cloud offered, verified against its signed manifest, and served."""

    manifest: FirmwareManifest
    forced: bool


def verified_image(db: Database, name: str) -> VerifiedImage | str:
    """The verified image called `name`, or why there is none a charger may be sent to."""
    row = db.conn.execute(
        "SELECT d.status, d.manifest, d.forced, d.sha256, i.sha256 FROM firmware_downloads d "
        "LEFT JOIN firmware_images i ON i.name = d.image WHERE d.image = ?",
        (name,),
    ).fetchone()
    if row is None:
        return f"no image {name} was offered to this edge by the cloud"
    status, manifest, forced, sha256, served_sha256 = row
    if status != "verified":
        return f"the image {name} is not verified at this edge ({status})"
    if manifest is None:
        return (
            f"the image {name} was verified under the old format (no signed manifest): "
            "offer it again from the cloud"
        )
    if served_sha256 != sha256:
        return f"the file server does not serve the verified {name} (replaced locally?)"
    # Verified before it was stored: parsing it again cannot fail but for a damaged store.
    return VerifiedImage(FirmwareManifest.model_validate_json(manifest), bool(forced))


def held_version(db: Database, name: str) -> str | None:
    """The version of the image verified under `name` (with a manifest), if any."""
    row = db.conn.execute(
        "SELECT version FROM firmware_downloads WHERE image = ? AND status = 'verified' "
        "AND manifest IS NOT NULL",
        (name,),
    ).fetchone()
    return None if row is None else str(row[0])


# -- chargers and what they run ---------------------------------------------------


@dataclass(frozen=True)
class ChargerFirmware:
    charger_id: str
    registration: str
    vendor: str | None
    model: str | None
    # What the charger said at its last BootNotification, and what the edge installed.
    reported_version: str | None
    installed_version: str | None

    def versions(self) -> list[tuple[str, str]]:
        """Each version known to run here, with where it is known from."""
        known = []
        if self.installed_version:
            known.append((self.installed_version, "installed by this edge"))
        if self.reported_version:
            known.append((self.reported_version, "reported by the charger at boot"))
        return known


_CHARGER_FIRMWARE = (
    "SELECT c.id, c.registration, c.vendor, c.model, c.firmware_version, f.version "
    "FROM chargers c LEFT JOIN installed_firmware f ON f.charger_id = c.id"
)


def charger_firmware(db: Database, charger_id: str) -> ChargerFirmware | None:
    row = db.conn.execute(f"{_CHARGER_FIRMWARE} WHERE c.id = ?", (charger_id,)).fetchone()
    return None if row is None else ChargerFirmware(*row)


def accepted_chargers(db: Database) -> list[ChargerFirmware]:
    rows = db.conn.execute(f"{_CHARGER_FIRMWARE} WHERE c.registration = 'accepted' ORDER BY c.id")
    return [ChargerFirmware(*row) for row in rows]


# -- installs --------------------------------------------------------------------


@dataclass(frozen=True)
class Install:
    """One image on its way to one charger."""

    charger_id: str
    image: str
    version: str
    forced: bool
    cloud_command_id: str | None

    def event(self, status: InstallStatus, detail: str = "") -> FirmwareInstall:
        return FirmwareInstall(
            charger_id=self.charger_id,
            image=self.image,
            version=self.version,
            status=status,
            detail=detail,
            forced=self.forced,
            command_id=self.cloud_command_id,
        )


def record_install(
    db: Database, install: Install, status: InstallStatus, detail: str, now: str
) -> int | None:
    """A new install row (None when the charger is not known here: nothing to link it to)."""
    if db.conn.execute("SELECT 1 FROM chargers WHERE id = ?", (install.charger_id,)).fetchone():
        cursor = db.conn.execute(
            "INSERT INTO firmware_installs (charger_id, image, version, forced, "
            "cloud_command_id, status, detail, requested_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                install.charger_id,
                install.image,
                install.version,
                int(install.forced),
                install.cloud_command_id,
                status,
                detail,
                now,
                now,
            ),
        )
        return cursor.lastrowid
    return None


def command_answered(
    db: Database,
    install_id: int,
    command_id: int | None,
    failure: str | None,
    detail: str,
    now: str,
) -> FirmwareInstall | None:
    """The charger's answer to the install's command (`failure`: why it was not taken):
    linked to it, and the event to report, unless the charger's own reports came first
    and already finished the install."""
    row = db.conn.execute(
        "SELECT charger_id, image, version, forced, cloud_command_id, status "
        "FROM firmware_installs WHERE id = ?",
        (install_id,),
    ).fetchone()
    if row is None:
        return None
    install, status = Install(row[0], row[1], row[2], bool(row[3]), row[4]), row[5]
    db.conn.execute(
        "UPDATE firmware_installs SET command_id = coalesce(command_id, ?) WHERE id = ?",
        (command_id, install_id),
    )
    if status != "installing":
        return None
    if failure is not None:
        _set_install_status(db, install_id, "failed", failure, now)
        return install.event("failed", failure)
    return install.event("installing", detail)


def install_status_reported(
    db: Database, charger_id: str, kind: str, status: str, now: str
) -> FirmwareInstall | None:
    """A charger's firmware status notification (already recorded in charger_job_status,
    linked to the command it reports on): the install it concerns moves on, and an
    `Installed` records the version the charger now runs. An `Installed` for a command
    the edge did not start with a verified image makes that version unknown."""
    action = _JOB_ACTIONS.get(kind)
    if action is None or not (status in _FAILED or status in _UNDER_WAY or status == "Installed"):
        return None
    linked = db.conn.execute(
        "SELECT command_id FROM charger_job_status WHERE charger_id = ? AND kind = ? "
        "ORDER BY id DESC LIMIT 1",
        (charger_id, kind),
    ).fetchone()
    command_id = linked[0] if linked else None
    row = _install_for_command(db, charger_id, command_id)
    if row is None:
        if status == "Installed":
            db.conn.execute("DELETE FROM installed_firmware WHERE charger_id = ?", (charger_id,))
        return None
    install_id, install, current = row
    if current != "installing":
        return None
    if status == "Installed":
        _set_install_status(db, install_id, "installed", status, now)
        db.conn.execute(
            "INSERT INTO installed_firmware (charger_id, version, image, forced, installed_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (charger_id) DO UPDATE SET "
            "version = excluded.version, image = excluded.image, forced = excluded.forced, "
            "installed_at = excluded.installed_at",
            (charger_id, install.version, install.image, int(install.forced), now),
        )
        return install.event("installed", status)
    if status in _FAILED:
        _set_install_status(db, install_id, "failed", status, now)
        return install.event("failed", status)
    _set_install_status(db, install_id, "installing", status, now)
    return install.event("installing", status)


def _install_for_command(
    db: Database, charger_id: str, command_id: int | None
) -> tuple[int, Install, str] | None:
    """The install a status report is about: the one whose command it is linked to, else
    the charger's install still waiting for its command's answer (a charger may report
    before the edge has recorded that answer), which is then linked to it."""
    columns = "id, charger_id, image, version, forced, cloud_command_id, status"
    row = None
    if command_id is not None:
        row = db.conn.execute(
            f"SELECT {columns} FROM firmware_installs WHERE command_id = ?", (command_id,)
        ).fetchone()
    if row is None:
        row = db.conn.execute(
            f"SELECT {columns} FROM firmware_installs WHERE charger_id = ? "
            "AND command_id IS NULL AND status = 'installing' ORDER BY id DESC LIMIT 1",
            (charger_id,),
        ).fetchone()
        if row is not None and command_id is not None:
            db.conn.execute(
                "UPDATE firmware_installs SET command_id = ? WHERE id = ?", (command_id, row[0])
            )
    if row is None:
        return None
    return row[0], Install(row[1], row[2], row[3], bool(row[4]), row[5]), row[6]


def _set_install_status(
    db: Database, install_id: int, status: InstallStatus, detail: str, now: str
) -> None:
    db.conn.execute(
        "UPDATE firmware_installs SET status = ?, detail = ?, updated_at = ? WHERE id = ?",
        (status, detail, now, install_id),
    )


def recent_installs(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM firmware_installs ORDER BY id DESC LIMIT ?", [limit]))
