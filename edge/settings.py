"""Settings: one TOML file plus `OCPP_EDGE_*` environment overrides.

Environment variables win over the file, the file wins over defaults. Nested keys
use a double underscore: `OCPP_EDGE_OCPP__PORT=9100` overrides `[ocpp] port`.
A wrong value stops the daemon with the key, the value, the reason and, when it
came from the file, the line.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV_VAR = "OCPP_EDGE_CONFIG"
DEFAULT_CONFIG_PATHS = (Path("config.toml"), Path("/etc/ocpp-edge/config.toml"))


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OcppSettings(_Section):
    host: str = Field("0.0.0.0", description="Address the OCPP WebSocket server binds to.")
    port: int = Field(9000, ge=1, le=65535)
    path_prefix: str = Field("/ocpp", pattern=r"^(/[A-Za-z0-9._~-]+)*$")
    heartbeat_interval: int = Field(300, ge=10, le=86400, description="Seconds.")
    heartbeat_grace: int = Field(
        60, ge=0, le=86400, description="Seconds a charger may be late before it is stale."
    )
    boot_retry_interval: int = Field(
        60, ge=10, le=3600, description="Seconds a pending or rejected charger waits to boot again."
    )
    unknown_chargers: Literal["reject", "pending", "accept"] = "pending"
    push_local_list: bool = Field(
        True, description="Keep every charger's OCPP local list equal to the card table."
    )
    security_profile: Literal[0, 1, 2, 3] = Field(
        0,
        description="OCPP 1.6 security profile: 0 none, 1 Basic auth, 2 TLS + Basic auth, "
        "3 TLS with client certificates.",
    )
    tls_certificate: Path | None = Field(None, description="Server certificate (profiles 2, 3).")
    tls_private_key: Path | None = Field(None, description="Its private key (profiles 2, 3).")
    tls_client_ca: Path | None = Field(
        None, description="CA that signs chargers' client certificates (profile 3)."
    )
    response_timeout: float = Field(
        30.0, gt=0, le=600, description="Seconds to wait for a charger's answer to our call."
    )
    websocket_ping_interval: float = Field(
        30.0, ge=1, le=3600, description="Seconds between WebSocket pings (dead link detection)."
    )
    websocket_compression: bool = Field(
        False, description="permessage-deflate: less traffic for more CPU per frame."
    )

    @model_validator(mode="after")
    def tls_files_for_profile(self) -> OcppSettings:
        needed = []
        if self.security_profile >= 2:
            needed += ["tls_certificate", "tls_private_key"]
        if self.security_profile == 3:
            needed.append("tls_client_ca")
        for key in needed:
            path = getattr(self, key)
            if path is None:
                raise ValueError(f"security_profile {self.security_profile} needs ocpp.{key}")
            if not Path(path).is_file():
                raise ValueError(f"ocpp.{key}: no file at {path}")
        return self


class StoreSettings(_Section):
    path: Path = Path("edge.db")
    message_log_days: int = Field(
        30, ge=0, description="Days of OCPP frames kept in the message log (0 = forever)."
    )


class ApiSettings(_Section):
    host: str = Field("127.0.0.1", description="The local API binds here; loopback by default.")
    port: int = Field(8080, ge=0, le=65535, description="0 turns the API off.")
    token: str = Field("", description="Bearer token; required when host is not loopback.")

    @model_validator(mode="after")
    def token_when_exposed(self) -> ApiSettings:
        loopback = self.host in ("127.0.0.1", "::1", "localhost")
        if self.port and not loopback and not self.token:
            raise ValueError(f"the API binds to {self.host}, beyond this machine: set api.token")
        return self


class FilesSettings(_Section):
    directory: Path = Field(Path("files"), description="firmware/ and uploads/ live here.")
    host: str = Field("0.0.0.0", description="The chargers' file server binds here.")
    port: int = Field(8081, ge=0, le=65535, description="0 turns the HTTP file server off.")
    public_url: str = Field(
        "", description="How chargers reach the file server (default: http://<this host>:<port>)."
    )
    ftp_port: int = Field(0, ge=0, le=65535, description="FTP uploads; 0 = off.")
    ftp_user: str = "ocpp"
    ftp_password: str = ""

    @model_validator(mode="after")
    def ftp_needs_a_password(self) -> FilesSettings:
        if self.ftp_port and len(self.ftp_password) < 8:
            raise ValueError("files.ftp_port is set: set files.ftp_password (8 characters or more)")
        return self

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostbyname(socket.gethostname())
        return f"http://{host}:{self.port}"


class CertificateSettings(_Section):
    ca_certificate: Path | None = Field(
        None, description="The site CA's certificate (PEM); default: made beside the store."
    )
    ca_private_key: Path | None = Field(None, description="Its EC private key (PEM).")
    validity_days: int = Field(730, ge=1, le=3650, description="Of chargers' certificates.")

    def paths(self, store_path: Path) -> tuple[Path, Path]:
        directory = store_path.parent
        return (
            self.ca_certificate or directory / "site-ca.crt",
            self.ca_private_key or directory / "site-ca.key",
        )


class SmartChargingSettings(_Section):
    site_limit_w: int = Field(
        0, ge=0, description="Power the whole site may draw, in W; 0 = no limit."
    )
    connector_max_w: int = Field(
        22000, ge=1, description="The most one connector can draw, in W (used to share)."
    )
    profile_stack_level: int = Field(
        10, ge=0, le=99, description="Stack level of the TxProfiles that hold the site limit."
    )


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class DemoSettings(_Section):
    chargers: int = Field(
        0, ge=0, le=50, description="Simulated chargers started inside the daemon (0 = none)."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OCPP_EDGE_", env_nested_delimiter="__", extra="forbid"
    )

    ocpp: OcppSettings = OcppSettings()
    store: StoreSettings = StoreSettings()
    api: ApiSettings = ApiSettings()
    files: FilesSettings = FilesSettings()
    certificates: CertificateSettings = CertificateSettings()
    smart_charging: SmartChargingSettings = SmartChargingSettings()
    log: LogSettings = LogSettings()
    demo: DemoSettings = DemoSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init arguments; the environment overrides it.
        return env_settings, init_settings


def find_config_file(explicit: Path | None) -> Path | None:
    """The file to read: `--config`, then $OCPP_EDGE_CONFIG, then the default paths."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return explicit
    from_env = os.environ.get(CONFIG_ENV_VAR)
    if from_env:
        if not Path(from_env).is_file():
            raise ConfigError(f"config file {from_env} (from ${CONFIG_ENV_VAR}) does not exist")
        return Path(from_env)
    return next((path for path in DEFAULT_CONFIG_PATHS if path.is_file()), None)


def load_settings(path: Path | None) -> Settings:
    """Settings from `path` (or defaults when None) and the environment."""
    text = ""
    data: dict[str, Any] = {}
    if path is not None:
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from error
    try:
        return Settings(**data)
    except ValidationError as error:
        raise ConfigError(_describe(error, path, text)) from error


def _describe(error: ValidationError, path: Path | None, text: str) -> str:
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        where = _line_of(text, problem["loc"]) if text else None
        origin = f"{path}:{where}: " if where else (f"{path}: " if path else "")
        env_name = "OCPP_EDGE_" + "__".join(str(part).upper() for part in problem["loc"])
        if env_name in os.environ:
            origin = f"${env_name}: "
        value = problem.get("input")
        shown = "" if problem["type"] == "missing" else f" = {value!r}"
        lines.append(f"{origin}{key}{shown}: {problem['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Line number of `[section] key` in a TOML text, for error messages."""
    if not loc:
        return None
    section, key = (str(loc[0]), str(loc[1])) if len(loc) > 1 else ("", str(loc[0]))
    current = ""
    section_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.fullmatch(r"\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1)
            if current == section or (len(loc) == 1 and current == key):
                section_line = number
            continue
        if current == section and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    return section_line
