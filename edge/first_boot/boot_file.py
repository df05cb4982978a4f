"""`ocpp-edge.toml` on the boot partition: the few settings an installer writes from a
laptop (image/ocpp-edge.toml is the documented example), checked as a whole before
anything is applied, and rewritten without its secrets once they have been moved.

The file is hostile until read: bounded in size, every key known, every value checked.
A wrong value names the key, the value and the line, as the daemon's own loader does.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import tempfile
import tomllib
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from contract.config_files import ConfigError, describe_errors
from contract.enrollment import MAX_CODE_LENGTH

BOOT_FILE = "ocpp-edge.toml"
MAX_BOOT_FILE_BYTES = 256 * 1024
MAX_CA_BYTES = 64 * 1024
# The keys whose values must not stay on a FAT partition anyone can read.
SECRET_KEYS = (("cloud", "enrollment_code"), ("network", "wifi_password"), ("cloud", "ca"))
_FILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteSection(_Section):
    name: str = Field("", max_length=100)
    # One DNS label (RFC 1123): what /etc/hostname and mDNS accept.
    hostname: str = Field("ocpp-edge", pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
    time_zone: str = "Etc/UTC"

    @field_validator("name")
    @classmethod
    def printable_name(cls, value: str) -> str:
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise ValueError("the name may not hold control characters")
        return value

    @field_validator("time_zone")
    @classmethod
    def known_time_zone(cls, value: str) -> str:
        # A name, never a path: it becomes the target of /etc/localtime.
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}", value):
            raise ValueError("not a time zone name such as Europe/Berlin")
        if value == "Etc/UTC":
            return value  # the default, also where no tzdata is installed
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("not a known time zone (e.g. Europe/Berlin, Etc/UTC)") from None
        return value


class CloudSection(_Section):
    url: str | None = Field(None, max_length=300, pattern=r"^https?://[^\s/?#]+/?$")
    enrollment_code: str | None = Field(
        None, min_length=1, max_length=MAX_CODE_LENGTH, pattern=r"^[A-Za-z0-9 -]+$"
    )
    ca: str | None = Field(None, max_length=MAX_CA_BYTES)

    @field_validator("ca")
    @classmethod
    def pem_or_file_name(cls, value: str | None) -> str | None:
        if value is None or is_pem(value) or re.fullmatch(_FILE_NAME, value):
            return value
        raise ValueError(
            "give the PEM text (-----BEGIN CERTIFICATE-----...) or the name of a file "
            "next to this one"
        )

    @field_validator("enrollment_code")
    @classmethod
    def code_needs_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("url") is None:
            raise ValueError("an enrollment_code needs the cloud's url too")
        return value


class NetworkSection(_Section):
    wifi_ssid: str | None = Field(None, min_length=1, max_length=32)
    # WPA2-Personal: 8 to 63 printable ASCII characters.
    wifi_password: str | None = Field(None, pattern=r"^[\x20-\x7e]{8,63}$")
    wifi_country: str | None = Field(None, pattern=r"^[A-Z]{2}$", validate_default=True)
    # Kept as the text written, each checked (and normalised) by the ipaddress module.
    address: str | None = Field(None, max_length=50)
    gateway: str | None = Field(None, max_length=50)
    dns: list[str] = Field([], max_length=4, validate_default=True)

    @field_validator("address")
    @classmethod
    def address_with_prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            interface = ipaddress.ip_interface(value)
        except ValueError:
            raise ValueError(
                "not an address with its prefix length, e.g. 192.168.1.50/24"
            ) from None
        if "/" not in value:
            raise ValueError("give the prefix length too, e.g. 192.168.1.50/24")
        return str(interface)

    @field_validator("wifi_ssid")
    @classmethod
    def ssid_bytes(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > 32:
            raise ValueError("a Wi-Fi name has at most 32 bytes")
        return value

    # Checks across keys are made on the later key, so that the error names a line.
    @field_validator("wifi_password")
    @classmethod
    def password_needs_ssid(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("wifi_ssid") is None:
            raise ValueError("a wifi_password needs the wifi_ssid too")
        return value

    @field_validator("wifi_country")
    @classmethod
    def country_for_wifi(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("wifi_ssid") is not None:
            raise ValueError(
                "Wi-Fi needs wifi_country (two letters, e.g. DE): radios stay off without it"
            )
        return value

    @field_validator("gateway", "dns")
    @classmethod
    def fixed_address_first(cls, value: Any, info: ValidationInfo) -> Any:
        if value and info.data.get("address") is None and "address" not in _failed(info):
            raise ValueError("a gateway or dns needs a fixed address too")
        try:
            if isinstance(value, list):
                return [str(ipaddress.ip_address(item)) for item in value]
            return None if value is None else str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("not an IP address, e.g. 192.168.1.1") from None


class ChargersSection(_Section):
    unknown: Literal["pending", "accept", "reject"] = "pending"


class CardsSection(_Section):
    csv: str | None = Field(None, pattern=_FILE_NAME)


class BootFile(_Section):
    site: SiteSection = SiteSection()
    cloud: CloudSection = CloudSection()
    network: NetworkSection = NetworkSection()
    chargers: ChargersSection = ChargersSection()
    cards: CardsSection = CardsSection()

    def without_secrets(self) -> dict[str, Any]:
        """The values a record may keep: everything but the secrets."""
        values = self.model_dump(mode="json")
        for section, key in SECRET_KEYS:
            values[section].pop(key, None)
        return dict(values)


def _failed(info: ValidationInfo) -> set[str]:
    """Earlier keys that failed their own check (info.data leaves them out)."""
    return set() if info.data is None else set(NetworkSection.model_fields) - set(info.data)


def is_pem(text: str) -> bool:
    return "-----BEGIN CERTIFICATE-----" in text


def read_boot_file(path: Path) -> tuple[BootFile, str]:
    """The boot file at `path`, checked, and its text. Raises ConfigError naming the key,
    the value and the line of every problem."""
    try:
        if path.stat().st_size > MAX_BOOT_FILE_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_BOOT_FILE_BYTES // 1024} KiB")
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror or error}") from error
    try:
        # Windows' Notepad may save with a BOM; TOML itself has none.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}): save it as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    try:
        return BootFile(**data), text
    except ValidationError as error:
        message = describe_errors(error, path, text, "", ())
        raise ConfigError(_hidden_secrets(message, data)) from error


def _hidden_secrets(message: str, data: dict[str, Any]) -> str:
    """`message` without the secrets' values: it goes to the status file and the log."""
    for section, key in SECRET_KEYS:
        values = data.get(section)
        secret = values.get(key) if isinstance(values, dict) else None
        if isinstance(secret, str) and len(secret) >= 4:
            for form in (repr(secret), secret):
                message = message.replace(form, "'(hidden)'" if form[0] == "'" else "(hidden)")
    return message


def without_keys(text: str, replaced: Mapping[tuple[str, str], str]) -> str:
    """`text` with the assignment of each (section, key) of `replaced` (over one or more
    lines) swapped for a comment line: `# key: <note>`."""
    lines = text.splitlines(keepends=True)
    section = ""
    output: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.split("#", 1)[0].strip()
        header = re.fullmatch(r"\[\s*([A-Za-z0-9_-]+)\s*\]", stripped)
        if header:
            section = header.group(1)
        assignment = re.match(r"\s*([A-Za-z0-9_-]+)\s*=", line)
        if assignment and (section, assignment.group(1)) in replaced:
            key = assignment.group(1)
            end = _assignment_end(lines, index)
            output.append(f"# {key}: {replaced[(section, key)]}\n")
            index = end
            continue
        output.append(line)
        index += 1
    return "".join(output)


def rewritten_without_secrets(rewritten: str, before: BootFile) -> bool:
    """Whether `rewritten` holds none of the secrets and every other value of `before`."""
    try:
        after = BootFile(**tomllib.loads(rewritten))
    except (tomllib.TOMLDecodeError, ValidationError):
        return False
    no_secrets = all(
        getattr(getattr(after, section), key) is None for section, key in SECRET_KEYS[:2]
    )
    inline_ca = before.cloud.ca is not None and is_pem(before.cloud.ca)
    return (
        no_secrets
        and not (inline_ca and after.cloud.ca is not None)
        and after.without_secrets() == before.without_secrets()
    )


def _assignment_end(lines: list[str], start: int) -> int:
    """The index after the last line of the assignment starting at `start` (a multi-line
    string spans several): the first prefix of lines that TOML reads whole."""
    for end in range(start + 1, len(lines) + 1):
        try:
            tomllib.loads("".join(lines[start:end]))
        except tomllib.TOMLDecodeError:
            continue
        return end
    return start + 1


def write_on_boot_partition(path: Path, text: str) -> None:
    """Replace `path` with `text`, durably: a temporary file beside it, fsynced,
    renamed over it, and the directory fsynced (the FAT partition may lose power)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".ocpp-edge-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    except OSError as error:
        # A file system that cannot sync a directory has written the rename with the file.
        if error.errno != errno.EINVAL:
            raise
    finally:
        os.close(directory)
