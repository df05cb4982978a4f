"""Password hashes for web users: argon2id with the library's defaults (RFC 9106's
second recommendation: 64 MiB, 3 passes, 4 lanes). Kept apart from the web app so that
`ocpp-cloud users add` hashes without loading it."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
# Longer passwords are refused, not truncated: the hash's input stays bounded.
MAX_LENGTH = 1024

_hasher = PasswordHasher()
# Checked against when the user is unknown, so that the answer takes as long as for a
# known user with a wrong password (no telling which addresses have accounts).
_UNKNOWN_USER_HASH = _hasher.hash("no user has this password, it only costs time")


class WeakPassword(ValueError):
    """A password the view does not take; the message says what it needs."""


def check_password_rules(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password has at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_LENGTH} characters")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password_rules(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; for an unknown user (None) it takes as long, and fails."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        matched = _hasher.verify(password_hash or _UNKNOWN_USER_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return matched and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    """The hash was made with weaker parameters than today's: rehash at the next sign-in."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False
