"""OCPP 1.6 security profiles at the WebSocket handshake.

1: HTTP Basic auth (user = charger id) over ws://; 2: the same over TLS (wss://);
3: TLS with a client certificate whose CN is the charger id. Passwords are kept as
scrypt hashes, checked in a thread (scrypt is deliberately slow).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import ssl

from edge.settings import OcppSettings

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, salt, expected = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), expected)


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
