"""Enrolling this edge with the cloud: the wire contract of the exchange (shared with
cloud/enrollment.py), a new key and certificate request, the two HTTP calls, and the
identity files the settings loader reads (edge/settings.py, `[sync] identity_directory`).

The exchange: `POST /api/enroll/code {code}` answers the edge id the one-time code was
made for, and leaves the code unused; the edge makes an EC P-256 key and a CSR with that
id as its CN; `POST /api/enroll {code, csr}` uses the code and answers the certificate
signed by the fleet's edge CA, the broker's CA, address and port, the topic prefix and the
fleet's firmware key. Nothing is written before the second answer is checked.

The identity directory holds `identity.toml` and one subdirectory per enrollment with the
key (mode 0600), the certificate and the broker's CA. `identity.toml` names the files of
the current one and is replaced last, by rename: a crash leaves the old identity or the
new one, never a key of one with the certificate of the other.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.settings import IDENTITY_FILE
from edge.sync.protocol import EDGE_ID_PATTERN

CODE_PATH = "/api/enroll/code"
ENROLL_PATH = "/api/enroll"
# Codes are typed by people: generous, but bounded, room for separators and spaces.
MAX_CODE_LENGTH = 64
MAX_CSR_LENGTH = 16_384
KEY_FILE = "edge.key"
CERTIFICATE_FILE = "edge.crt"
BROKER_CA_FILE = "broker-ca.crt"


Answer = TypeVar("Answer", bound=BaseModel)


class EnrollmentError(Exception):
    """Enrolling did not happen; the message says what to do."""


# -- the wire contract ----------------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeQuery(_Message):
    code: str = Field(min_length=1, max_length=MAX_CODE_LENGTH)


class CodeAnswer(_Message):
    edge_id: str = Field(pattern=EDGE_ID_PATTERN)
    expires_at: datetime


class EnrollmentRequest(_Message):
    code: str = Field(min_length=1, max_length=MAX_CODE_LENGTH)
    csr: str = Field(min_length=1, max_length=MAX_CSR_LENGTH, description="PEM, CN = edge id")


class EnrollmentAnswer(_Message):
    edge_id: str = Field(pattern=EDGE_ID_PATTERN)
    certificate: str = Field(description="PEM: the edge's certificate, then the edge CA's")
    broker_ca: str = Field(description="PEM: the CA(s) of the broker's certificate")
    broker_host: str = Field(min_length=1)
    broker_port: int = Field(ge=1, le=65535)
    topic_prefix: str
    firmware_public_key: str = Field(description="base64 of the fleet's Ed25519 key")


# -- key and request ------------------------------------------------------------------


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def certificate_request(key: ec.EllipticCurvePrivateKey, edge_id: str) -> str:
    """A PEM CSR with CN = `edge_id`, signed by `key`."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, edge_id)])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


# -- the exchange -----------------------------------------------------------------------


def cloud_client(
    cloud_url: str, ca_file: Path | None = None, timeout: float = 30.0
) -> httpx.Client:
    """An HTTP client for the cloud's API. The code is a credential: https only, verified
    against the system's CAs or `ca_file`; plain http only to this machine (a tunnel)."""
    parts = urlsplit(cloud_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EnrollmentError(f"{cloud_url!r} is not the cloud's address: write https://HOST:PORT")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise EnrollmentError(
            f"{cloud_url} is plain http: the code would cross the network in clear; "
            "use the cloud's https address"
        )
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as error:
            raise EnrollmentError(
                f"--ca {ca_file}: not a readable PEM CA file ({error})"
            ) from error
    return httpx.Client(
        base_url=cloud_url.rstrip("/"), verify=verify, timeout=timeout, follow_redirects=False
    )


def edge_id_for_code(client: httpx.Client, code: str) -> CodeAnswer:
    """The edge id the code was made for; the code stays unused."""
    return _parse(CodeAnswer, _post(client, CODE_PATH, CodeQuery(code=code)))


def request_certificate(
    client: httpx.Client, code: str, key: ec.EllipticCurvePrivateKey, edge_id: str
) -> EnrollmentAnswer:
    """Use the code: the cloud's answer to a CSR for `key` with CN = `edge_id`, checked."""
    request = EnrollmentRequest(code=code, csr=certificate_request(key, edge_id))
    answer = _parse(EnrollmentAnswer, _post(client, ENROLL_PATH, request))
    check_answer(answer, key, edge_id)
    return answer


def check_answer(answer: EnrollmentAnswer, key: ec.EllipticCurvePrivateKey, edge_id: str) -> None:
    """The certificate must be for this key and this edge, the broker CA a certificate."""
    try:
        chain = x509.load_pem_x509_certificates(answer.certificate.encode())
        x509.load_pem_x509_certificates(answer.broker_ca.encode())
    except ValueError as error:
        raise EnrollmentError(
            f"the cloud answered a certificate that is not PEM: {error}"
        ) from error
    certificate = chain[0]
    if certificate.public_key() != key.public_key():
        raise EnrollmentError("the cloud answered a certificate for another key")
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if answer.edge_id != edge_id or [name.value for name in names] != [edge_id]:
        raise EnrollmentError(f"the cloud answered a certificate that is not for {edge_id}")


def _post(client: httpx.Client, path: str, body: BaseModel) -> bytes:
    try:
        response = client.post(
            path, content=body.model_dump_json(), headers={"content-type": "application/json"}
        )
    except httpx.TransportError as error:
        hint = " (a private CA? give it with --ca)" if "CERTIFICATE" in str(error).upper() else ""
        raise EnrollmentError(
            f"cannot reach the cloud at {client.base_url}: {error}{hint}"
        ) from error
    if response.status_code != 200:
        raise EnrollmentError(f"the cloud refused ({response.status_code}): {_detail(response)}")
    return response.content


def _parse(model: type[Answer], content: bytes) -> Answer:
    try:
        return model.model_validate_json(content)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise EnrollmentError(
            f"the cloud's answer is not what this edge expects ({where}: {problem['msg']}): "
            "is --cloud the fleet's ocpp-cloud?"
        ) from error


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str):
        return detail
    return json.dumps(detail) if detail is not None else response.text[:200]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the identity files -----------------------------------------------------------------


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
        if earlier.is_dir() and earlier != generation:
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
