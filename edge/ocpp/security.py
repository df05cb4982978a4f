"""OCPP 1.6 security profiles at the WebSocket handshake.

1: HTTP Basic auth (user = charger id) over ws://; 2: the same over TLS (wss://);
3: TLS with a client certificate whose CN is the charger id. Passwords are kept as
scrypt hashes. A check costs ~50 ms of a core and 16 MiB (scrypt is slow on purpose), so
`PasswordChecker` runs checks on a small pool of their own with a bounded queue, never on
the default thread pool where the store's COMMIT waits, and makes a source address that
failed wait before its next try.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

from edge.settings import OcppSettings

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def _scrypt_parts(stored: str | None) -> tuple[bytes, str] | None:
    """(salt, expected hex digest) of a stored hash, or None if it is not one of ours."""
    if not stored:
        return None
    try:
        scheme, salt, expected = stored.split("$")
        salt_bytes = bytes.fromhex(salt)
    except ValueError:
        return None
    return (salt_bytes, expected) if scheme == "scrypt" else None


def password_matches(password: str, stored: str | None) -> bool:
    parts = _scrypt_parts(stored)
    if parts is None:
        return False
    salt, expected = parts
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return hmac.compare_digest(digest.hex(), expected)


def _timed_match(password: str, stored: str | None) -> tuple[bool, float]:
    started = time.perf_counter()
    return password_matches(password, stored), time.perf_counter() - started


class Verdict(StrEnum):
    MATCH = "match"
    WRONG = "wrong"
    BACKING_OFF = "backing off"
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    verdict: Verdict
    retry_after: float = 0.0


class BackOff:
    """Per source address: after n failures in a row, refuse it for
    min(first * 2**(n-1), longest) seconds. Forgotten once it has been quiet that long
    again; at most `max_addresses` remembered (the least recent are dropped first)."""

    def __init__(self, first: float, longest: float, max_addresses: int = 4096) -> None:
        self.first = first
        self.longest = max(first, longest)
        self.max_addresses = max_addresses
        # address -> (failures in a row, refused until, monotonic seconds)
        self._addresses: dict[str, tuple[int, float]] = {}

    def remaining(self, address: str) -> float:
        """Seconds `address` must still wait (0: it may try now)."""
        entry = self._addresses.get(address)
        return max(0.0, entry[1] - time.monotonic()) if entry else 0.0

    def failed(self, address: str) -> None:
        if not self.first:
            return
        now = time.monotonic()
        failures, until = self._addresses.pop(address, (0, now))
        if now - until > self.longest:
            failures = 0  # quiet for long enough: start again from the first step
        failures += 1
        wait = min(self.first * 2 ** min(failures - 1, 32), self.longest)
        self._addresses[address] = (failures, now + wait)
        if len(self._addresses) > self.max_addresses:
            self._forget(now)

    def succeeded(self, address: str) -> None:
        self._addresses.pop(address, None)

    def _forget(self, now: float) -> None:
        for address, (_, until) in list(self._addresses.items()):
            if now - until > self.longest:
                del self._addresses[address]
        while len(self._addresses) > self.max_addresses:
            del self._addresses[next(iter(self._addresses))]


class PasswordChecker:
    """Basic-auth password checks for profiles 1 and 2.

    - On `password_check_threads` threads of their own; at most `password_check_queue`
      more checks wait, and beyond them a login is refused at once (BUSY).
    - A source address whose login failed is refused without a check (BACKING_OFF) for
      an exponentially growing time.
    - Nothing to check against (an unknown charger id, no password set, a user name that
      is not the charger id, no password given): no scrypt is run, but the answer comes
      after about as long as a check would take, from a timer, and costs a place in the
      queue like a check. So neither the timing nor a 401-versus-503 difference tells
      which charger ids exist, and such guesses cost the edge no CPU.
    """

    def __init__(self, settings: OcppSettings) -> None:
        self.threads = settings.password_check_threads
        self.capacity = settings.password_check_threads + settings.password_check_queue
        self.backoff = BackOff(
            settings.password_backoff_seconds, settings.password_backoff_max_seconds
        )
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="password-check")
        self._in_progress = 0
        # A running estimate of one check's duration, for the answers without one.
        self._check_seconds = 0.05
        self.checks_run = 0

    async def check(self, address: str, password: str | None, stored: str | None) -> PasswordCheck:
        """Whether `password` matches `stored`; None for either means no check is possible."""
        wait = self.backoff.remaining(address)
        if wait:
            return PasswordCheck(Verdict.BACKING_OFF, wait)
        if self._in_progress >= self.capacity:
            return PasswordCheck(Verdict.BUSY, 1.0)
        ahead = self._in_progress
        self._in_progress += 1
        try:
            if password is None or _scrypt_parts(stored) is None:
                await asyncio.sleep(self._check_seconds * (1 + ahead // self.threads))
                matched = False
            else:
                loop = asyncio.get_running_loop()
                matched, took = await loop.run_in_executor(
                    self._pool, _timed_match, password, stored
                )
                self.checks_run += 1
                self._check_seconds = 0.8 * self._check_seconds + 0.2 * took
        finally:
            self._in_progress -= 1
        if matched:
            self.backoff.succeeded(address)
            return PasswordCheck(Verdict.MATCH)
        self.backoff.failed(address)
        return PasswordCheck(Verdict.WRONG)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header, if well formed."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, separator, password = decoded.partition(":")
    return (user, password) if separator else None


def server_tls_context(settings: OcppSettings) -> ssl.SSLContext | None:
    """The TLS context for profiles 2 and 3 (None for 0 and 1)."""
    if settings.security_profile < 2:
        return None
    assert settings.tls_certificate and settings.tls_private_key  # checked by the settings
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # The whitepaper asks for TLS 1.2 or newer.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_certificate, settings.tls_private_key)
    if settings.security_profile == 3:
        assert settings.tls_client_ca
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(settings.tls_client_ca))
    return context


def certificate_common_name(certificate: dict[str, object] | None) -> str | None:
    """The subject CN of a peer certificate as `SSLSocket.getpeercert()` returns it."""
    if not certificate:
        return None
    for relative_name in certificate.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in relative_name:
            if key == "commonName":
                return str(value)
    return None
