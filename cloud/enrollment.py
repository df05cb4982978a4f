"""Enrolling edges: one-time codes an operator makes for an edge id, and the edge CA that
signs an edge's certificate request in exchange for one (edge/enrollment.py is the other
side and holds the wire contract).

A code is 120 random bits, shown once as 24 base32 characters in groups of four
(`ABCD-EFGH-...`), and stored as its SHA-256 only. It is looked up by that digest, so the
time a lookup takes says nothing about the code (an attacker cannot choose digests). It is
used by one conditional UPDATE (unused and unexpired → used), so only one request wins.
Wrong codes are counted per client address (the real client's, behind a trusted reverse
proxy: contract/http/access.py): past `max_failed_attempts` within the window, that address is
turned away until the window has passed.

An edge id with a live identity (a certificate issued by enrollment that has not expired,
or an edge that has been in touch with this cloud) is never given another certificate by
a code made without `replaces_identity`: neither when the code is made, nor when it is
used (two codes made for a new edge id enrol one device, not two). Replacing an identity
(a new device for a site, a lost key) is an operator's explicit act; the old certificate
stays valid until it expires or is revoked (a CRL on the broker).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import Engine

from cloud.settings import CloudSettings, EnrollmentSettings
from cloud.store import enrollment_codes
from cloud.store.times import iso, utc_now
from contract.config_files import ConfigError
from contract.enrollment import CodeAnswer, EnrollmentAnswer
from contract.protocol import EDGE_ID_PATTERN

log = logging.getLogger(__name__)

CODE_BYTES = 15  # 120 bits: 24 base32 characters, no padding
CODE_GROUP = 4
_CODE = re.compile(r"[A-Z2-7]{24}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
LONGEST_VALIDITY = timedelta(days=30)
# Past this many addresses with failures, the expired ones are swept at each new failure.
MAX_ADDRESSES_KEPT = 10_000
# The broker's ACL gives this name the aggregator's rights (cloud/mosquitto/acl).
AGGREGATOR_USERNAME = "ocpp-cloud"


class EnrollmentError(Exception):
    """Enrolling cannot go on; the message says why."""


class EnrollmentNotConfigured(EnrollmentError):
    pass


class CodeRefused(EnrollmentError):
    """The code is wrong, used or expired."""


class CertificateRequestRefused(EnrollmentError):
    """The CSR is malformed, badly signed, of a weak key, or names another edge."""


class IdentityExists(EnrollmentError):
    """The edge id has a live identity and the code was not made to replace it."""


class TooManyFailures(EnrollmentError):
    """This client address sent too many wrong codes lately."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# -- codes ------------------------------------------------------------------------


def new_code() -> str:
    """A fresh code, e.g. `K7QX-2MZD-...` (6 groups of 4)."""
    text = base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode("ascii")
    return "-".join(text[i : i + CODE_GROUP] for i in range(0, len(text), CODE_GROUP))


def normalize_code(text: str) -> str | None:
    """The code as typed, without case, spaces and dashes; None when it cannot be one."""
    compact = re.sub(r"[\s-]", "", text).upper()
    return compact if _CODE.fullmatch(compact) else None


def code_digest(code: str) -> str:
    """What the store keeps of a (normalized) code. A plain SHA-256 suffices: the code has
    120 random bits, nothing to guess from a dictionary."""
    return hashlib.sha256(code.encode("ascii")).hexdigest()


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `24h`, `7d` or seconds; ValueError with what to write."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: write e.g. 30m, 24h or 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


# -- failed attempts --------------------------------------------------------------------


class FailedAttempts:
    """Wrong codes per client address within a sliding window (in memory: per replica,
    forgotten at restart)."""

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> float:
        """Seconds until `address` may try again; 0 when it may now."""
        with self._lock:
            failures = self._recent(address)
            if len(failures) < self.limit:
                return 0.0
            return max(failures[0] + self.window_s - self._clock(), 0.0)

    def record(self, address: str) -> None:
        with self._lock:
            self._failures.setdefault(address, deque()).append(self._clock())
            if len(self._failures) > MAX_ADDRESSES_KEPT:
                for other in list(self._failures):
                    self._recent(other)

    def _recent(self, address: str) -> deque[float]:
        """The address's failures within the window; an address with none is forgotten."""
        failures = self._failures.get(address, deque())
        horizon = self._clock() - self.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            self._failures.pop(address, None)
        return failures


# -- the edge CA ------------------------------------------------------------------------


class EdgeCertificateAuthority:
    """The CA the broker takes edges' certificates from: signs a CSR whose CN is the
    edge id, with a certificate for TLS client authentication only."""

    def __init__(
        self,
        certificate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
        validity: timedelta,
    ) -> None:
        self.certificate = certificate
        self.key = key
        self.validity = validity

    @classmethod
    def load(
        cls, certificate_path: Path, key_path: Path, validity: timedelta
    ) -> EdgeCertificateAuthority:
        """The CA from its files; ConfigError naming the setting when they cannot serve."""
        try:
            certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as error:
            raise ConfigError(
                f"enrollment.ca_certificate, ca_private_key: the edge CA ({certificate_path}, "
                f"{key_path}) cannot be read as PEM without a password: {error}"
            ) from error
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ConfigError(f"enrollment.ca_private_key {key_path}: must be an EC or RSA key")
        if certificate.public_key() != key.public_key():
            raise ConfigError(
                f"enrollment.ca_private_key {key_path} is not the key of {certificate_path}"
            )
        return cls(certificate, key, validity)

    def sign(self, csr_pem: str, edge_id: str) -> x509.Certificate:
        request = _checked_request(csr_pem, edge_id)
        now = utc_now()
        public_key = request.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, edge_id)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(min(now + self.validity, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def _checked_request(csr_pem: str, edge_id: str) -> x509.CertificateSigningRequest:
    try:
        request = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as error:
        raise CertificateRequestRefused(f"not a PEM certificate request: {error}") from error
    if not request.is_signature_valid:
        raise CertificateRequestRefused("the request's signature does not verify")
    key = request.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < 256:
            raise CertificateRequestRefused("an EC key needs 256 bits or more (P-256)")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CertificateRequestRefused("an RSA key needs 2048 bits or more")
    else:
        raise CertificateRequestRefused("the request's key must be EC (P-256) or RSA")
    names = [
        str(name.value) for name in request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    if names != [edge_id]:
        shown = ", ".join(names) or "none"
        raise CertificateRequestRefused(
            f"the request's CN is {shown}, but this code is for edge {edge_id}: "
            f"make the request with CN={edge_id}"
        )
    return request


# -- the service ------------------------------------------------------------------------


@dataclass(frozen=True)
class NewCode:
    code: str
    edge_id: str
    expires_at: datetime


class Enrollment:
    """Codes and enrollments of one cloud; every method blocks (database, signing)."""

    def __init__(self, settings: CloudSettings, engine: Engine, firmware_public_key: str) -> None:
        self.settings = settings.enrollment
        self.engine = engine
        self.topic_prefix = settings.mqtt.topic_prefix
        self.firmware_public_key = firmware_public_key
        self.reserved_ids = {AGGREGATOR_USERNAME, settings.mqtt.username} - {""}
        self.failures = FailedAttempts(
            self.settings.max_failed_attempts, self.settings.failed_attempts_window
        )
        self._authority: EdgeCertificateAuthority | None = None
        self._broker_ca = ""
        if self.settings.enabled:
            self._authority, self._broker_ca = _load_authority(self.settings)

    def create_code(
        self, edge_id: str, valid_for: timedelta, replaces_identity: bool = False
    ) -> NewCode:
        """A code for `edge_id`; for an edge id with a live identity, only one made to
        replace it (IdentityExists otherwise)."""
        self._configured()
        if re.fullmatch(EDGE_ID_PATTERN, edge_id) is None:
            raise EnrollmentError(
                f"{edge_id!r} is not an edge id: 1-64 letters, digits, '.', '_', '-', "
                "starting with a letter or digit"
            )
        if edge_id in self.reserved_ids:
            raise EnrollmentError(f"{edge_id} is the aggregator's broker user, not an edge id")
        if not timedelta(minutes=1) <= valid_for <= LONGEST_VALIDITY:
            raise EnrollmentError("a code is valid for 1 minute to 30 days")
        now = utc_now()
        if not replaces_identity:
            live = enrollment_codes.live_identity(self.engine, edge_id, now)
            if live is not None:
                raise IdentityExists(_identity_refusal(edge_id, live))
        code = new_code()
        expires_at = now + valid_for
        enrollment_codes.add_code(
            self.engine,
            code_digest(normalize_code(code) or ""),
            edge_id,
            now,
            expires_at,
            replaces_identity,
        )
        log.info(
            "enrollment code made for edge %s, valid until %s%s",
            edge_id,
            iso(expires_at),
            ", to replace its identity" if replaces_identity else "",
        )
        return NewCode(code, edge_id, expires_at)

    def edge_for_code(self, code: str, client: str) -> CodeAnswer:
        """The edge id `code` is for, without using it."""
        self._configured()
        _, found = self._valid_code(code, client)
        return CodeAnswer(edge_id=found.edge_id, expires_at=found.expires_at)

    def enroll(self, code: str, csr_pem: str, client: str) -> EnrollmentAnswer:
        """Use `code` for a certificate from `csr_pem`: the edge's identity."""
        authority = self._configured()
        digest, found = self._valid_code(code, client)
        if not found.replaces_identity:
            # Told before signing; checked again where the code is used, atomically.
            live = enrollment_codes.live_identity(self.engine, found.edge_id, utc_now())
            if live is not None:
                self._refuse_identity(client, found.edge_id, live)
        certificate = authority.sign(csr_pem, found.edge_id)
        serial = format(certificate.serial_number, "x")
        outcome, live = enrollment_codes.use_code(
            self.engine, digest, utc_now(), client, serial, certificate.not_valid_after_utc
        )
        if outcome == "identity":
            self._refuse_identity(client, found.edge_id, live or "")
        if outcome == "gone":
            # Used or expired since it was read: another request won.
            self._refuse(client, f"the code for {found.edge_id} was used a moment ago")
        log.info("edge %s enrolled from %s: certificate serial %s", found.edge_id, client, serial)
        chain = certificate.public_bytes(serialization.Encoding.PEM).decode()
        return EnrollmentAnswer(
            edge_id=found.edge_id,
            certificate=chain + authority.certificate_pem,
            broker_ca=self._broker_ca,
            broker_host=self.settings.broker_host,
            broker_port=self.settings.broker_port,
            topic_prefix=self.topic_prefix,
            firmware_public_key=self.firmware_public_key,
        )

    def _configured(self) -> EdgeCertificateAuthority:
        if self._authority is None:
            raise EnrollmentNotConfigured(
                "this cloud does not enroll edges: set [enrollment] ca_certificate, "
                "ca_private_key, broker_ca and broker_host (docs/cloud.md)"
            )
        return self._authority

    def _valid_code(self, code: str, client: str) -> tuple[str, enrollment_codes.EnrollmentCode]:
        wait = self.failures.retry_after(client)
        if wait:
            log.warning("enrollment from %s turned away: too many wrong codes", client)
            raise TooManyFailures(
                f"too many wrong codes from {client}: try again in {wait / 60:.0f} min", wait
            )
        normalized = normalize_code(code)
        if normalized is None:
            self._refuse(client, "that is not an enrollment code (24 letters A-Z and digits 2-7)")
        digest = code_digest(normalized)
        found = enrollment_codes.find_code(self.engine, digest)
        if found is None:
            self._refuse(client, "no such enrollment code: check it, or ask for a new one")
        if found.used_at is not None:
            self._refuse(
                client,
                f"this code was used at {iso(found.used_at)}: ask the fleet operator for a new one",
            )
        if found.expires_at <= utc_now():
            self._refuse(client, f"this code expired at {iso(found.expires_at)}: ask for a new one")
        return digest, found

    def _refuse_identity(self, client: str, edge_id: str, live: str) -> NoReturn:
        # A right code (not counted as a failure) for an identity it may not replace.
        log.warning("enrollment of %s from %s refused: %s", edge_id, client, live)
        raise IdentityExists(_identity_refusal(edge_id, live))

    def _refuse(self, client: str, reason: str) -> NoReturn:
        self.failures.record(client)
        # The reason, never the code: a wrong code is often a typo of a good one.
        log.warning("enrollment refused for %s: %s", client, reason)
        raise CodeRefused(reason)


def _identity_refusal(edge_id: str, live: str) -> str:
    return (
        f"edge {edge_id} already has an identity ({live}): to give it a new one (a "
        "replaced device, a lost key), make a code that replaces it (`ocpp-cloud "
        'enroll-code --replace`, or "replaces_identity": true); the old certificate stays '
        "valid until it expires or is revoked"
    )


def _load_authority(settings: EnrollmentSettings) -> tuple[EdgeCertificateAuthority, str]:
    assert settings.ca_certificate and settings.ca_private_key and settings.broker_ca
    authority = EdgeCertificateAuthority.load(
        settings.ca_certificate,
        settings.ca_private_key,
        timedelta(days=settings.certificate_days),
    )
    try:
        broker_ca = settings.broker_ca.read_text()
        x509.load_pem_x509_certificates(broker_ca.encode())
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"enrollment.broker_ca {settings.broker_ca}: not a PEM certificate ({error})"
        ) from error
    return authority, broker_ca
