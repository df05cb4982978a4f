"""The enrolled identity's files (`ocpp-edge enroll`): the key, certificate and broker CA
the cloud's answer brings, and `identity.toml`, whose [sync] values the settings loader
puts under the config file's (edge/settings.py, `[sync] identity_directory`).

The identity directory holds `identity.toml` and one subdirectory per enrollment with the
key (mode 0600), the certificate and the broker's CA. `identity.toml` names the files of
the current one and is replaced last, by rename: a crash leaves the old identity or the
new one, never a key of one with the certificate of the other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contract.enrollment import EnrollmentAnswer
from edge.settings import IDENTITY_FILE

KEY_FILE = "edge.key"
CERTIFICATE_FILE = "edge.crt"
BROKER_CA_FILE = "broker-ca.crt"
# One directory per enrollment: EDGE-ID-20260102T030405Z-<random>.
_GENERATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}-\d{8}T\d{6}Z-[a-z0-9_]+")


@dataclass(frozen=True)
class WrittenIdentity:
    identity_file: Path
    private_key: Path
    certificate: Path
    broker_ca: Path
    not_after: datetime
    values: dict[str, str | int]  # the [sync] values identity_file holds


def existing_identity(directory: Path) -> Path | None:
    """The identity file already in `directory`, if any."""
    path = directory / IDENTITY_FILE
    return path if path.exists() else None


def write_identity(
    directory: Path,
    key: ec.EllipticCurvePrivateKey,
    answer: EnrollmentAnswer,
    source: str,
    now: datetime | None = None,
) -> WrittenIdentity:
    """Write the key, certificate and broker CA into a new subdirectory of `directory`,
    then `identity.toml` naming them (by rename), then remove earlier enrollments' files.
    Run as root, every file gets the owner of `directory`'s parent (the store's
    directory), so that the daemon's user can read its key."""
    now = now or datetime.now(UTC)
    owner = _owner_of(directory.parent) if os.geteuid() == 0 else None
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _give(directory, owner)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    generation = Path(tempfile.mkdtemp(dir=directory, prefix=f"{answer.edge_id}-{stamp}-"))
    _give(generation, owner)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files = {
        KEY_FILE: (key_pem, 0o600),
        CERTIFICATE_FILE: (answer.certificate.encode(), 0o644),
        BROKER_CA_FILE: (answer.broker_ca.encode(), 0o644),
    }
    for name, (content, mode) in files.items():
        _write_file(generation / name, content, mode, owner)
    _fsync_directory(generation)
    values: dict[str, str | int] = {
        "edge_id": answer.edge_id,
        "broker_host": answer.broker_host,
        "broker_port": answer.broker_port,
        "tls_ca": str((generation / BROKER_CA_FILE).resolve()),
        "tls_certificate": str((generation / CERTIFICATE_FILE).resolve()),
        "tls_private_key": str((generation / KEY_FILE).resolve()),
        "topic_prefix": answer.topic_prefix,
        "firmware_public_key": answer.firmware_public_key,
    }
    text = (
        f"# This edge's identity in its fleet, written by `ocpp-edge enroll` from {source}\n"
        f"# at {now.isoformat(timespec='seconds')}. A key set in the config file's [sync]\n"
        "# section wins over the same key here.\n[sync]\n"
        + "".join(f"{name} = {_toml_value(value)}\n" for name, value in values.items())
    )
    identity_file = directory / IDENTITY_FILE
    _write_file(identity_file, text.encode(), 0o644, owner)
    _fsync_directory(directory)
    for earlier in directory.iterdir():
        # Only earlier enrollments' own directories, whatever else shares the directory.
        if earlier != generation and _GENERATION.fullmatch(earlier.name) and earlier.is_dir():
            shutil.rmtree(earlier)
    certificate = x509.load_pem_x509_certificates(answer.certificate.encode())[0]
    return WrittenIdentity(
        identity_file,
        generation / KEY_FILE,
        generation / CERTIFICATE_FILE,
        generation / BROKER_CA_FILE,
        certificate.not_valid_after_utc,
        values,
    )


def _write_file(path: Path, content: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """Write whole under a temporary name in the same directory, then rename into place."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), mode)
            if owner is not None:
                os.fchown(file.fileno(), *owner)
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _owner_of(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_uid, status.st_gid


def _give(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.chown(path, *owner)


def _toml_value(value: str | int) -> str:
    # A JSON string is a TOML basic string: the same quotes and escapes.
    return str(value) if isinstance(value, int) else json.dumps(value, ensure_ascii=False)
