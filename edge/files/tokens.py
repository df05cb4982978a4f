"""Upload tokens: the credential a charger finds in the upload location the edge hands it
(GetDiagnostics/GetLog), so that only chargers the edge asked can upload, each into its
own folder.

A token says which charger it is for and until when, signed with a key only the edge
holds (`upload-token.key` in the files directory, made at first start, mode 0600):
`<charger id, base64url>.<expiry, Unix seconds>.<HMAC-SHA256, 128 bits, base64url>`.
Nothing is stored per token; the key is the only secret. Checking one costs an HMAC,
nothing an attacker can make expensive.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

KEY_FILE = "upload-token.key"
KEY_BYTES = 32
MAC_BYTES = 16


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UploadTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def load_or_create(cls, directory: Path) -> UploadTokens:
        """The key in `directory`, made (readable by this user only) when absent."""
        path = directory / KEY_FILE
        directory.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "wb") as file:
                file.write(secrets.token_bytes(KEY_BYTES))
                file.flush()
                os.fsync(file.fileno())
        key = path.read_bytes()
        if len(key) < KEY_BYTES:
            raise ValueError(f"{path} is not an upload token key: remove it to make a new one")
        return cls(key)

    def issue(self, charger_id: str, valid_for_s: float, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + valid_for_s)
        who = _encode(charger_id.encode())
        return f"{who}.{expires}.{_encode(self._mac(who, expires))}"

    def charger_of(self, token: str, now: float | None = None) -> str | None:
        """The charger a valid, unexpired token is for; None otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[0]) > 256:
            return None
        who, expires_text, mac_text = parts
        expires = int(expires_text)
        try:
            mac = _decode(mac_text)
            charger_id = _decode(who).decode()
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(mac, self._mac(who, expires)):
            return None
        if expires < (time.time() if now is None else now):
            return None
        return charger_id

    def _mac(self, who: str, expires: int) -> bytes:
        message = f"{who}.{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()[:MAC_BYTES]
