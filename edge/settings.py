"""Settings: one TOML file plus `OCPP_EDGE_*` environment overrides.

Environment variables win over the file, the file wins over defaults. Nested keys
use a double underscore: `OCPP_EDGE_OCPP__PORT=9100` overrides `[ocpp] port`.
A wrong value stops the daemon with the key, the value, the reason and, when it
came from the file, the line (contract/config_files.py does the reading).

`ocpp-edge enroll` writes this edge's fleet identity to `identity.toml` in
`[sync] identity_directory`; `load_settings` fills from it the `[sync]` keys the file does
not set. So the order is: environment, then the config file, then the identity, then
defaults.
"""

from __future__ import annotations

import base64
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from contract.config_files import (
    ConfigError,
    FileThenEnvironment,
    describe_errors,
    locate_config_file,
    read_settings,
)
from contract.http.limits import ApiServerSettings, HttpServerLimits
from contract.sections import Section as _Section
from contract.sections import ServiceSettings

CONFIG_ENV_VAR = "OCPP_EDGE_CONFIG"
DEFAULT_CONFIG_PATHS = (Path("config.toml"), Path("/etc/ocpp-edge/config.toml"))
IDENTITY_FILE = "identity.toml"
# The [sync] keys an identity file may hold: who this edge is and where its broker is.
IDENTITY_KEYS = frozenset(
    {
        "edge_id",
        "broker_host",
        "broker_port",
        "tls_ca",
        "tls_certificate",
        "tls_private_key",
        "topic_prefix",
        "firmware_public_key",
    }
)


class ChargerLimitsSettings(_Section):
    """What one charger's connection may use (`[ocpp.limits]`); see docs/security.md."""

    max_frame_bytes: int = Field(
        262_144,
        ge=16_384,
        le=16_777_216,
        description="Largest WebSocket message a charger may send; a bigger one closes the "
        "connection with 1009.",
    )
    max_queued_frames: int = Field(
        8, ge=1, le=1024, description="Frames received and not yet handled, per connection."
    )
    frames_per_second: float = Field(
        20.0, gt=0, le=100_000, description="Frames a charger may send per second, sustained."
    )
    frame_burst: int = Field(
        100, ge=1, le=1_000_000, description="Frames a charger may send at once, beyond the rate."
    )
    max_sampled_values: int = Field(
        1000, ge=1, le=100_000, description="Sampled values in one MeterValues or StopTransaction."
    )
    message_log_bytes_per_second: int = Field(
        16_384,
        ge=1024,
        le=100_000_000,
        description="Bytes of a charger's frames the message log keeps per second, sustained; "
        "frames beyond are answered but not logged.",
    )
    message_log_burst_bytes: int = Field(
        1_048_576,
        ge=262_144,
        le=1_000_000_000,
        description="Bytes of a charger's frames the message log keeps at once, beyond the rate.",
    )
    max_tasks_per_charger: int = Field(
        4, ge=1, le=100, description="Calls the edge runs on its own for one charger at once."
    )


class LocalListSettings(_Section):
    """How the edge fits its card table into each charger's OCPP local list
    (`[ocpp.local_list]`); see docs/ocpp.md, "Local lists"."""

    default_send_max_length: int = Field(
        50,
        ge=1,
        le=10_000,
        description="Entries per SendLocalList for a charger whose SendLocalListMaxLength is "
        "missing or not a whole number from 1 up.",
    )
    default_max_length: int = Field(
        100,
        ge=1,
        le=1_000_000,
        description="Entries a charger holds when its LocalAuthListMaxLength is missing or not "
        "a whole number from 1 up.",
    )
    max_entries_per_message: int = Field(
        1000,
        ge=1,
        le=10_000,
        description="Entries in one SendLocalList at most, whatever a charger's "
        "SendLocalListMaxLength says (bounds the frame the edge builds and sends).",
    )
    retry_seconds: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="Wait after a charger refuses its list (Failed, NotSupported, "
        "VersionMismatch, an error or no answer), doubled at each refusal in a row.",
    )
    retry_max_seconds: float = Field(
        3600.0, ge=1, le=604_800, description="Longest wait between two tries for one charger."
    )

    @model_validator(mode="after")
    def longest_wait_not_shorter(self) -> LocalListSettings:
        if self.retry_max_seconds < self.retry_seconds:
            raise ValueError("ocpp.local_list.retry_max_seconds is below retry_seconds")
        return self


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
    max_pending_chargers: int = Field(
        50, ge=1, le=10_000, description="Pending chargers at most; more are refused (503)."
    )
    pending_charger_days: int = Field(
        7, ge=1, le=3650, description="Days unseen after which a pending charger is forgotten."
    )
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
    max_connections_per_address: int = Field(
        64, ge=1, le=10_000, description="Connections and handshakes one source address may hold."
    )
    handshakes_per_minute_per_address: int = Field(
        120, ge=1, le=100_000, description="Handshakes one source address may start a minute."
    )
    max_handshakes_in_progress: int = Field(
        100, ge=1, le=10_000, description="Handshakes in progress at once, from all addresses."
    )
    handshake_timeout: float = Field(
        10.0, gt=0, le=300, description="Seconds a handshake (TLS, HTTP, password) may take."
    )
    handshake_max_bytes: int = Field(
        16384, ge=1024, le=1_048_576, description="Bytes a handshake request may have."
    )
    password_check_threads: int = Field(
        1, ge=1, le=8, description="Threads checking Basic-auth passwords (profiles 1, 2)."
    )
    password_check_queue: int = Field(
        8, ge=0, le=1000, description="Password checks waiting at most; more are refused (503)."
    )
    password_backoff_seconds: float = Field(
        1.0, ge=0, le=3600, description="First back-off after a failed login (0 = none)."
    )
    password_backoff_max_seconds: float = Field(
        60.0, ge=0, le=86400, description="Longest back-off of one source address."
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
    limits: ChargerLimitsSettings = ChargerLimitsSettings()
    local_list: LocalListSettings = LocalListSettings()

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


DEFAULT_STORE_PATH = Path("edge.db")
DEFAULT_IDENTITY_DIRECTORY = Path("sync-identity")


def identity_directory_of(store_path: Path, identity_directory: Path) -> Path:
    """`[sync] identity_directory`: a relative one is taken from the store's directory."""
    if identity_directory.is_absolute():
        return identity_directory
    return store_path.parent / identity_directory


class StoreSettings(_Section):
    path: Path = DEFAULT_STORE_PATH
    message_log_days: int = Field(
        30, ge=0, description="Days of OCPP frames kept in the message log (0 = forever)."
    )
    # A century at most: the cut-off is a date, and dates end at year 9999.
    command_history_days: int = Field(
        90, ge=0, le=36_500, description="Days of commands sent to chargers kept (0 = forever)."
    )


class ApiSettings(ApiServerSettings):
    host: str = Field("127.0.0.1", description="The local API binds here; loopback by default.")
    port: int = Field(8080, ge=0, le=65535, description="0 turns the API off.")
    allowed_hosts: list[str] = Field(
        [],
        description="Host names clients without the token may use besides loopback's "
        "(DNS rebinding): e.g. edge.local.",
    )


class FilesSettings(HttpServerLimits):
    directory: Path = Field(Path("files"), description="firmware/ and uploads/ live here.")
    host: str = Field("0.0.0.0", description="The chargers' file server binds here.")
    port: int = Field(8081, ge=0, le=65535, description="0 turns the HTTP file server off.")
    public_url: str = Field(
        "", description="How chargers reach the file server (default: http://<this host>:<port>)."
    )
    ftp_port: int = Field(0, ge=0, le=65535, description="FTP uploads; 0 = off.")
    upload_token_hours: float = Field(
        24.0,
        gt=0,
        le=24 * 30,
        description="Hours the upload location handed to a charger stays valid.",
    )
    max_upload_bytes: int = Field(
        104857600, ge=1024, description="The largest file one upload may bring, in bytes."
    )
    max_charger_bytes: int = Field(
        524288000, ge=1024, description="All files kept from one charger, in bytes."
    )
    max_charger_files: int = Field(100, ge=1, description="Files kept from one charger.")
    min_free_bytes: int = Field(
        209715200, ge=0, description="Uploads are refused when less disk than this would stay..."
    )
    min_free_percent: float = Field(
        5.0, ge=0, le=90, description="...or less than this share of the disk."
    )

    @model_validator(mode="before")
    @classmethod
    def no_shared_ftp_account(cls, values: Any) -> Any:
        if isinstance(values, dict):
            for key in ("ftp_user", "ftp_password"):
                if key in values:
                    raise ValueError(
                        f"files.{key} is gone: each charger now logs in with its own user and "
                        "password, which the edge puts in the location of GetDiagnostics/GetLog; "
                        "remove the key"
                    )
        return values

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


# Pins as gpiozero names them: a BCM number (17) or a name ("GPIO17", "BOARD11").
Pin = int | str


class FeedbackSettings(_Section):
    """What is wired to a reader for the driver to see and hear; every part optional."""

    green_led: Pin | None = Field(None, description="Lit for yes and while charging.")
    red_led: Pin | None = Field(None, description="Lit for no and for faults.")
    rgb_led: tuple[Pin, Pin, Pin] | None = Field(
        None, description="One RGB LED instead of green/red: [red pin, green pin, blue pin]."
    )
    buzzer: Pin | None = Field(None, description="An active buzzer.")
    relay: Pin | None = Field(None, description="Closed while this reader's car charges.")
    active_high: bool = Field(True, description="False when a pin drives its part when low.")
    lcd_i2c_bus: int | None = Field(
        None, ge=0, description="I2C bus of a 16x2 HD44780 display on a PCF8574 (1 on a Pi)."
    )
    lcd_address: int = Field(0x27, ge=0x03, le=0x77, description="Its I2C address.")
    lcd_columns: int = Field(16, ge=8, le=40)
    lcd_rows: int = Field(2, ge=1, le=4)

    @model_validator(mode="after")
    def one_kind_of_led(self) -> FeedbackSettings:
        if self.rgb_led is not None and (self.green_led is not None or self.red_led is not None):
            raise ValueError("use rgb_led or green_led/red_led, not both")
        return self


class _ReaderBase(_Section):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
    charger: str | None = Field(
        None, description="The charger this reader starts; taps on an unmapped reader are refused."
    )
    connector: int = Field(
        0, ge=0, description="0: the charger's first Available or Preparing connector."
    )
    uid_format: Literal["hex", "decimal"] = Field(
        "hex", description="How a text reader reports UIDs (decimal: the number printed on cards)."
    )
    uid_byte_order: Literal["as-read", "reversed"] = Field(
        "as-read", description="reversed: the reader reports the UID's bytes backwards."
    )
    decimal_bytes: int = Field(4, ge=1, le=10, description="Bytes in a decimal UID.")
    debounce_seconds: float = Field(
        2.0, ge=0, le=60, description="A card read again within this time is the same tap."
    )
    feedback: FeedbackSettings = FeedbackSettings()


class NfcReaderSettings(_ReaderBase):
    kind: Literal["nfc"]
    device: str = Field(
        "usb",
        description="nfcpy device path: usb, usb:072f:2200, tty:AMA0:pn532, udp:HOST:PORT.",
    )
    targets: list[Literal["106A", "106B", "212F", "424F"]] = Field(
        ["106A", "106B", "212F"], min_length=1, description="Card technologies polled for."
    )


class Rc522ReaderSettings(_ReaderBase):
    kind: Literal["rc522"]
    spi_bus: int = Field(0, ge=0)
    spi_device: int = Field(0, ge=0, description="Chip select: 0 for CE0, 1 for CE1.")
    spi_speed_hz: int = Field(1_000_000, ge=10_000, le=10_000_000)
    reset_pin: Pin | None = Field(25, description="GPIO wired to the RC522's RST.")
    poll_interval: float = Field(0.1, gt=0, le=5, description="Seconds between card polls.")


class SerialReaderSettings(_ReaderBase):
    kind: Literal["serial"]
    port: str = Field(description="The serial device, e.g. /dev/rfid-1 or /dev/ttyAMA0.")
    baud: int = Field(9600, ge=300, le=921600)
    protocol: Literal["rdm6300", "lines"] = Field(
        "rdm6300", description="rdm6300: STX, 10 hex, checksum, ETX; lines: one UID per line."
    )


class KeyboardReaderSettings(_ReaderBase):
    kind: Literal["keyboard"]
    device: str = Field(description="The input device, e.g. /dev/input/by-id/usb-...-event-kbd.")
    grab: bool = Field(True, description="Take the device so that its keys reach no console.")


class SimulatedReaderSettings(_ReaderBase):
    kind: Literal["simulated"]


ReaderSettings = Annotated[
    NfcReaderSettings
    | Rc522ReaderSettings
    | SerialReaderSettings
    | KeyboardReaderSettings
    | SimulatedReaderSettings,
    Field(discriminator="kind"),
]


class TapSettings(_Section):
    socket: Path = Field(
        Path("taps.sock"),
        description="Unix socket taking 'READER UID' lines for simulated readers "
        "(`ocpp-edge tap`); relative to the store's directory.",
    )
    start_timeout: float = Field(
        60.0, gt=0, le=600, description="Seconds a charger has to start after RemoteStart."
    )

    def socket_path(self, store_path: Path) -> Path:
        return self.socket if self.socket.is_absolute() else store_path.parent / self.socket


class AuthorizationSettings(_Section):
    unknown_cards: Literal["reject", "accept"] = Field(
        "reject",
        description="A card in neither the card table nor the cache while the cloud "
        "cannot be asked: reject it, or accept it and record it for review.",
    )
    cache_days: int = Field(
        30, ge=0, le=3650, description="Days a decision on a card outside the table is reused."
    )


class SyncSettings(_Section):
    """The link to the cloud aggregator over MQTT; off while broker_host is empty."""

    edge_id: str = Field(
        "", pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$", description="This site's id."
    )
    broker_host: str = Field("", description="The MQTT broker; empty: no cloud sync.")
    broker_port: int = Field(1883, ge=1, le=65535, description="8883 for TLS, usually.")
    username: str = Field("", description="Broker user (default: the edge id).")
    password: str = ""
    tls_ca: Path | None = Field(None, description="CA of the broker's certificate: turns TLS on.")
    tls_certificate: Path | None = Field(None, description="This edge's client certificate.")
    tls_private_key: Path | None = Field(None, description="Its private key.")
    topic_prefix: str = Field("ocpp-edge/v1", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
    keepalive: int = Field(30, ge=2, le=3600, description="Seconds; the cloud sees a drop.")
    batch_max_events: int = Field(1000, ge=1, le=10_000)
    ack_timeout: float = Field(10.0, gt=0, le=600, description="Seconds before resending.")
    status_interval: float = Field(60.0, gt=0, description="Seconds between presence updates.")
    firmware_public_key: str = Field(
        "",
        description="The fleet's Ed25519 public key (base64 of its 32 bytes); several, "
        "separated by commas, while the fleet's key is replaced.",
    )
    identity_directory: Path = Field(
        DEFAULT_IDENTITY_DIRECTORY,
        description="Where `ocpp-edge enroll` keeps this edge's key, certificate and "
        "identity.toml; relative to the store's directory.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.broker_host)

    def identity_path(self, store_path: Path) -> Path:
        return identity_directory_of(store_path, self.identity_directory)

    @model_validator(mode="after")
    def edge_id_when_enabled(self) -> SyncSettings:
        if self.broker_host and not self.edge_id:
            raise ValueError("sync.broker_host is set: set sync.edge_id too")
        if (self.tls_certificate is None) != (self.tls_private_key is None):
            raise ValueError("set both sync.tls_certificate and sync.tls_private_key, or neither")
        # Several keys (comma or space between) while the fleet's key is replaced.
        for key in self.firmware_public_key.replace(",", " ").split():
            try:
                raw = base64.b64decode(key, validate=True)
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise ValueError(
                    "sync.firmware_public_key is not an Ed25519 public key "
                    "(base64 of 32 bytes, as `ocpp-cloud key` prints it)"
                )
        return self


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class DemoSettings(_Section):
    chargers: int = Field(
        0, ge=0, le=50, description="Simulated chargers started inside the daemon (0 = none)."
    )


class Settings(FileThenEnvironment):
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
    service: ServiceSettings = ServiceSettings()
    readers: list[ReaderSettings] = []
    taps: TapSettings = TapSettings()
    authorization: AuthorizationSettings = AuthorizationSettings()
    sync: SyncSettings = SyncSettings()

    @model_validator(mode="after")
    def reader_ids_unique(self) -> Settings:
        seen: set[str] = set()
        for reader in self.readers:
            if reader.id in seen:
                raise ValueError(f"two readers have the id {reader.id!r}")
            seen.add(reader.id)
        return self


def find_config_file(explicit: Path | None) -> Path | None:
    """The file to read: `--config`, then $OCPP_EDGE_CONFIG, then the default paths."""
    return locate_config_file(explicit, CONFIG_ENV_VAR, DEFAULT_CONFIG_PATHS)


def load_settings(path: Path | None, *, with_identity: bool = True) -> Settings:
    """Settings from `path` (or defaults when None) and the environment, with the
    `[sync]` keys neither sets taken from the enrolled identity, when there is one
    (and `with_identity`)."""
    identity = _identity_file(path) if with_identity else None
    if identity is None:
        return read_settings(Settings, path, union_tags=_READER_KINDS)
    enrolled = read_identity(identity)
    return read_settings(Settings, path, union_tags=_READER_KINDS, beneath={"sync": enrolled})


class _Ignoring(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _StoreLocation(_Ignoring):
    path: Path = DEFAULT_STORE_PATH


class _IdentityLocation(_Ignoring):
    identity_directory: Path = DEFAULT_IDENTITY_DIRECTORY


class _WhereTheIdentityIs(FileThenEnvironment):
    """The two settings that locate the identity, read before the others, which may be
    incomplete without it (a broker_host in the file, the edge_id in the identity)."""

    model_config = SettingsConfigDict(
        env_prefix="OCPP_EDGE_", env_nested_delimiter="__", extra="ignore"
    )
    store: _StoreLocation = _StoreLocation()
    sync: _IdentityLocation = _IdentityLocation()


def _identity_file(path: Path | None) -> Path | None:
    """The identity file the settings at `path` point at, if it exists. A file that cannot
    say (bad TOML, a wrong store.path) has its error told by the full read instead."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8")) if path is not None else {}
        where = _WhereTheIdentityIs(**data)
    except (tomllib.TOMLDecodeError, ValidationError, OSError):
        return None
    directory = identity_directory_of(where.store.path, where.sync.identity_directory)
    identity = directory / IDENTITY_FILE
    return identity if identity.is_file() else None


def read_identity(path: Path) -> dict[str, Any]:
    """The `[sync]` values of an identity file written by `ocpp-edge enroll`, checked."""
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}; enroll again") from error
    values = data.get("sync")
    if set(data) != {"sync"} or not isinstance(values, dict):
        raise ConfigError(f"{path}: an identity file holds a [sync] section and nothing else")
    unknown = sorted(set(values) - IDENTITY_KEYS)
    if unknown:
        raise ConfigError(f"{path}: [sync] {', '.join(unknown)} cannot be set by an identity")
    try:
        SyncSettings(**values)
    except ValidationError as error:
        raise ConfigError(describe_errors(error, path, text, "", (), within=("sync",))) from error
    return values


_READER_KINDS = frozenset({"nfc", "rc522", "serial", "keyboard", "simulated"})
