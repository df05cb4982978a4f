"""The cloud aggregator's settings: one TOML file plus `OCPP_CLOUD_*` environment overrides.

Read like the edge's (edge/settings.py): `--config`, else $OCPP_CLOUD_CONFIG, else
./cloud.toml, else /etc/ocpp-cloud/cloud.toml; `OCPP_CLOUD_MQTT__BROKER_PORT=8883`
overrides `[mqtt] broker_port`. A wrong value names the key, the value, the reason and the
file line or variable. cloud.example.toml documents every key with its default.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from contract.config_files import FileThenEnvironment, locate_config_file, read_settings
from contract.http.limits import ApiServerSettings
from contract.protocol import DEFAULT_TOPIC_PREFIX, MAX_EVENT_BYTES, MAX_PAYLOAD_BYTES
from contract.sections import Section as _Section
from contract.sections import ServiceSettings

CONFIG_ENV_VAR = "OCPP_CLOUD_CONFIG"
DEFAULT_CONFIG_PATHS = (Path("cloud.toml"), Path("/etc/ocpp-cloud/cloud.toml"))
# The largest payload MQTT can carry at all.
MQTT_MAX_PAYLOAD_BYTES = 268_435_455
_STORE_DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg")


class StoreSettings(_Section):
    url: str = Field(
        "sqlite:///cloud.db",
        description="sqlite:///PATH (one process) or postgresql+psycopg://USER:PASSWORD@HOST/DB.",
    )

    @field_validator("url")
    @classmethod
    def known_database(cls, url: str) -> str:
        try:
            parsed = make_url(url)
        except ArgumentError as error:
            raise ValueError(f"not a database URL: {error}") from error
        if parsed.drivername not in _STORE_DRIVERS:
            raise ValueError("use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB")
        if parsed.drivername.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
            raise ValueError("SQLite needs a file: sqlite:///cloud.db")
        return url

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.url).drivername.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        """The SQLite file, or None for PostgreSQL."""
        return Path(str(make_url(self.url).database)) if self.is_sqlite else None


class MqttSettings(_Section):
    broker_host: str = Field("127.0.0.1", description="The MQTT broker the edges publish to.")
    broker_port: int = Field(1883, ge=1, le=65535, description="8883 for TLS, usually.")
    username: str = ""
    password: str = ""
    tls_ca: Path | None = Field(None, description="CA of the broker's certificate: turns TLS on.")
    tls_certificate: Path | None = Field(None, description="The aggregator's client certificate.")
    tls_private_key: Path | None = Field(None, description="Its private key.")
    topic_prefix: str = Field(DEFAULT_TOPIC_PREFIX, pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
    share_group: str = Field(
        "ocpp-cloud",
        pattern=r"^([A-Za-z0-9._-]+)?$",
        description="Replicas in one shared-subscription group split the edges' messages; "
        "empty: a plain subscription (one replica only).",
    )
    client_id: str = Field("", description="MQTT client id; empty: HOSTNAME-PID.")
    keepalive: int = Field(30, ge=5, le=3600, description="Seconds.")

    @model_validator(mode="after")
    def certificate_with_key(self) -> MqttSettings:
        if (self.tls_certificate is None) != (self.tls_private_key is None):
            raise ValueError("set both mqtt.tls_certificate and mqtt.tls_private_key, or neither")
        return self

    def effective_client_id(self) -> str:
        """Each replica needs its own client id, or the broker drops one for the other."""
        return self.client_id or f"{socket.gethostname()}-{os.getpid()}"


class ApiSettings(ApiServerSettings):
    """The REST API: who may use it (cloud/api.py, contract/http/access.py) and how much."""

    host: str = Field("127.0.0.1", description="The REST API binds here.")
    port: int = Field(8090, ge=0, le=65535, description="0 turns the API off.")
    token: str = Field(
        "",
        description="Bearer token every client sends (edges enrolling excepted); the API "
        "refuses to start without one unless trust_loopback is on.",
    )
    trust_loopback: bool = Field(
        False,
        description="Serve clients on this machine without the token. Never with a reverse "
        "proxy on this machine that is not in trusted_proxies.",
    )
    max_body_bytes: int = Field(
        1048576,
        ge=1024,
        description="The largest request body, in bytes (413 beyond); a firmware image's "
        "is firmware.max_image_bytes...",
    )
    max_enrollment_body_bytes: int = Field(
        65536, ge=1024, description="...and an enrolling edge's (a code and a CSR)."
    )
    max_connections: int = Field(1000, ge=1, description="Open connections, all clients.")
    max_connections_per_source: int = Field(
        32,
        ge=1,
        description="Open connections from one client address (trusted proxies excepted).",
    )

    def required_token_missing(self) -> str | None:
        """Why the API cannot start as set, naming the key; None when it can."""
        if self.port and not self.token and not self.trust_loopback:
            return (
                "api.token is empty: the cloud API authenticates every client (behind a "
                "reverse proxy on this machine, everyone would otherwise be served). Set "
                "api.token, or api.trust_loopback = true to serve this machine's own "
                "clients without it (docs/security.md)"
            )
        return None


class DesiredSettings(_Section):
    resend_interval: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds between sends of desired state an edge has not reported yet.",
    )


class FirmwareSettings(_Section):
    directory: Path = Field(Path("firmware"), description="Where firmware images are kept.")
    signing_key: str = Field(
        "",
        description="The fleet's Ed25519 private key (PEM); empty: made at first start "
        "beside the SQLite store.",
    )
    max_image_bytes: int = Field(
        268_435_456,
        ge=1024,
        le=17_179_869_184,
        description="A larger firmware upload is refused (413) before it fills the disk.",
    )


class LimitSettings(_Section):
    max_payload_bytes: int = Field(
        MAX_PAYLOAD_BYTES,
        ge=1024,
        le=MQTT_MAX_PAYLOAD_BYTES,
        description="A larger MQTT payload from an edge is refused unread.",
    )
    max_event_bytes: int = Field(
        MAX_EVENT_BYTES,
        ge=1024,
        le=MQTT_MAX_PAYLOAD_BYTES,
        description="One event larger than this (as JSON) is quarantined, not stored.",
    )
    quarantine_sample_bytes: int = Field(
        16_384,
        ge=256,
        le=MQTT_MAX_PAYLOAD_BYTES,
        description="How much of a quarantined event is kept (its JSON, cut).",
    )
    inbound_queue: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Messages from edges waiting to be handled, all edges together; "
        "beyond it new ones are dropped (edges send unacknowledged batches again).",
    )
    inbound_per_edge: int = Field(
        8,
        ge=1,
        le=10_000,
        description="Messages from one edge waiting to be handled; beyond it that edge's "
        "new ones are dropped, so one edge cannot hold up the others.",
    )
    status_history_per_charger: int = Field(
        200,
        ge=1,
        le=100_000,
        description="Connector statuses kept per charger for its page's history (the "
        "latest; older ones are dropped as new ones arrive).",
    )
    inbound_workers: int = Field(
        4,
        ge=1,
        le=256,
        description="Messages handled at once (each edge's in order, edges in turn).",
    )
    presence_history_per_edge: int = Field(
        1000,
        ge=2,
        le=1_000_000,
        description="Changes of presence kept per edge (online, offline): an edge that "
        "flaps loses its oldest.",
    )


class AlertSettings(_Section):
    """What the alerts engine watches (cloud/alerts.py) and where it sends them. Each
    threshold set to 0 turns its alert off (and clears those open)."""

    interval: float = Field(
        15.0, gt=0, le=3600, description="Seconds between two looks at the fleet."
    )
    edge_offline_after: float = Field(
        600.0, ge=0, description="Seconds an edge is offline before it is an alert."
    )
    backlog_older_than: float = Field(
        900.0,
        ge=0,
        description="Seconds: an edge online at least this long whose oldest unsynced event "
        "is older than this is an alert.",
    )
    faulted_after: float = Field(
        600.0,
        ge=0,
        description="Seconds a connector is Faulted (as the edge's synced data shows) before "
        "it is an alert; never judged while its edge is offline.",
    )
    boot_grace: float = Field(
        120.0,
        ge=0,
        le=86400,
        description="Seconds after a charger's boot in which a Faulted it reports does not "
        "count yet (chargers that report Faulted while starting).",
    )
    refusals_count: int = Field(
        100,
        ge=0,
        description="More payloads than this refused from one edge in refusals_window is "
        "an alert; it clears at half as many.",
    )
    refusals_window: float = Field(600.0, ge=10, le=86400, description="Seconds.")
    max_open_per_edge: int = Field(
        100, ge=1, le=100_000, description="Open alerts per edge; beyond, none is raised."
    )
    keep_cleared_days: float = Field(
        90.0, gt=0, le=36500, description="Days a cleared alert is kept."
    )
    webhook_url: str = Field(
        "", description="Where each alert raised and cleared is POSTed (JSON); empty: none."
    )
    webhook_secret: str = Field(
        "", description="Signs each POST (HMAC-SHA256, header X-Ocpp-Cloud-Signature)."
    )
    webhook_timeout: float = Field(
        10.0, gt=0, le=300, description="Seconds one POST may take, all of it."
    )
    webhook_attempts: int = Field(
        12, ge=1, le=100, description="Attempts at one notice before it is given up."
    )
    webhook_retry_first: float = Field(
        5.0, gt=0, le=86400, description="Seconds before the second attempt, doubled..."
    )
    webhook_retry_longest: float = Field(1800.0, gt=0, le=86400, description="...up to this many.")
    fleet_webhooks_private: bool = Field(
        False,
        description="Let the webhooks fleets' admins set reach loopback and private "
        "addresses (off: only public ones; this setting's own webhook_url is trusted).",
    )

    @field_validator("webhook_url")
    @classmethod
    def http_url(cls, url: str) -> str:
        return check_webhook_url(url)


def check_webhook_url(url: str) -> str:
    """`url` when it is an http:// or https:// URL with a host (or empty); ValueError
    saying what is wrong else."""
    if not url:
        return url
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises for a port that is no port
    except ValueError as error:
        raise ValueError(f"{error}: give an http:// or https:// URL") from error
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(character.isspace() for character in url)
    ):
        raise ValueError("give an http:// or https:// URL with a host, or leave it empty")
    return url


class EnrollmentSettings(_Section):
    """Edges enrolling with a one-time code (cloud/enrollment.py); off while
    ca_certificate is empty."""

    ca_certificate: Path | None = Field(
        None, description="The edge CA (PEM): the CA the broker takes edges' certificates from."
    )
    ca_private_key: Path | None = Field(None, description="Its private key (PEM, EC or RSA).")
    broker_ca: Path | None = Field(
        None, description="The CA of the broker's own certificate, handed to edges (PEM)."
    )
    broker_host: str = Field("", description="The broker as edges reach it (DNS name).")
    broker_port: int = Field(8883, ge=1, le=65535, description="Its TLS port for edges.")
    certificate_days: int = Field(
        730, ge=1, le=3650, description="Days an edge's certificate is valid."
    )
    max_failed_attempts: int = Field(
        10, ge=1, description="Wrong codes from one address before it is turned away..."
    )
    failed_attempts_window: float = Field(
        900.0, gt=0, le=86400, description="...for this many seconds."
    )

    @property
    def enabled(self) -> bool:
        return self.ca_certificate is not None

    @model_validator(mode="after")
    def complete_when_enabled(self) -> EnrollmentSettings:
        if self.ca_certificate is None:
            return self
        needed = {
            "ca_private_key": self.ca_private_key,
            "broker_ca": self.broker_ca,
            "broker_host": self.broker_host,
        }
        for key, value in needed.items():
            if not value:
                raise ValueError(f"enrollment.ca_certificate is set: set enrollment.{key} too")
        return self


class WebSettings(_Section):
    """The fleet web view (cloud/web/): sessions, sign-in limits, live updates."""

    enabled: bool = Field(True, description="Serve the fleet web view under /web/.")
    session_key: Path | None = Field(
        None,
        description="A file holding the secret that signs session cookies; unset: a secret "
        "made at first start and kept in the store, which every replica shares.",
    )
    secure_cookies: bool = Field(
        False, description="Mark cookies Secure: on whenever users reach the view over https."
    )
    idle_timeout: float = Field(
        1800.0, ge=60, le=7 * 86400, description="Seconds without a request that end a session."
    )
    session_lifetime: float = Field(
        43200.0, ge=300, le=30 * 86400, description="Seconds after which a session ends anyway."
    )
    max_login_failures: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Failed sign-ins from one address within the window (on every replica "
        "together) before it waits for the window's end...",
    )
    max_login_failures_per_account: int = Field(
        20,
        ge=1,
        le=10_000,
        description="...and failed sign-ins to one account (email) within it, from anywhere.",
    )
    login_failure_window: float = Field(
        900.0, gt=0, le=86400, description="Seconds of the window failed sign-ins count in."
    )
    max_sessions_per_user: int = Field(
        10,
        ge=1,
        le=1000,
        description="Sessions a user may have at once; signing in once more ends the oldest.",
    )
    overview_page_size: int = Field(
        100,
        ge=10,
        le=5000,
        description="Sites per page of the fleet overview (those needing attention first).",
    )
    live_poll_interval: float = Field(
        2.0,
        ge=0.2,
        le=60,
        description="Seconds between looks at the store's change marker for live pages.",
    )
    max_live_streams: int = Field(
        200, ge=1, le=100_000, description="Live pages open at once on this replica..."
    )
    max_live_streams_per_user: int = Field(8, ge=1, le=1000, description="...and per user.")


class SessionSettings(_Section):
    """Charging sessions as the API and the fleet view show them (cloud/store/sessions.py)."""

    time_zone: str = Field(
        "UTC",
        description="IANA time zone of the months sessions are summed and closed by.",
    )
    offline_after_s: float = Field(
        300.0,
        gt=0,
        le=86400,
        description="A session one of whose events reached the cloud later than this "
        "after it happened is marked recorded offline.",
    )
    max_meter_samples: int = Field(
        10_080,
        ge=2,
        le=1_000_000,
        description="Meter samples kept per session (its curve); later ones are not kept.",
    )
    reprice_batch: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Sessions priced again per transaction after a tariff changes, at most "
        "(ingest waits on SQLite's write lock for one such batch at most)...",
    )
    reprice_batch_seconds: float = Field(
        0.25,
        gt=0,
        le=60,
        description="...and fewer when a batch takes longer than this many seconds.",
    )
    reprice_pause: float = Field(
        0.15,
        ge=0,
        le=60,
        description="Seconds between two re-pricing batches: the store's other writers' "
        "turn (SQLite's waiting writers look every 0.1 s).",
    )
    reprice_poll: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Seconds between looks for re-pricing queued by another replica.",
    )

    @field_validator("time_zone")
    @classmethod
    def known_time_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError("not a time zone: e.g. UTC or Europe/Berlin") from error
        return name

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


class CardSettings(_Section):
    """The fleet web view's card pages (cloud/web/cards_pages.py, card_import.py)."""

    max_import_bytes: int = Field(
        4_194_304,
        ge=1024,
        le=64 * 1_048_576,
        description="The largest CSV file of cards an import takes, in bytes.",
    )
    max_import_rows: int = Field(
        50_000, ge=1, le=1_000_000, description="The most cards (lines) one import takes."
    )
    import_preview_lifetime: float = Field(
        3600.0,
        ge=60,
        le=7 * 86400,
        description="Seconds a previewed import can be applied; then it is uploaded again.",
    )


class CloudSettings(FileThenEnvironment):
    model_config = SettingsConfigDict(
        env_prefix="OCPP_CLOUD_", env_nested_delimiter="__", extra="forbid"
    )

    store: StoreSettings = StoreSettings()
    mqtt: MqttSettings = MqttSettings()
    api: ApiSettings = ApiSettings()
    desired: DesiredSettings = DesiredSettings()
    firmware: FirmwareSettings = FirmwareSettings()
    limits: LimitSettings = LimitSettings()
    enrollment: EnrollmentSettings = EnrollmentSettings()
    alerts: AlertSettings = AlertSettings()
    service: ServiceSettings = ServiceSettings()
    web: WebSettings = WebSettings()
    sessions: SessionSettings = SessionSettings()
    cards: CardSettings = CardSettings()

    @model_validator(mode="after")
    def shared_signing_key(self) -> CloudSettings:
        # Replicas on one PostgreSQL must sign with one key: a key made by each would
        # give edges signatures that only some of them match.
        if not self.store.is_sqlite and not self.firmware.signing_key:
            raise ValueError(
                "the store is PostgreSQL: set firmware.signing_key to the fleet's key file, "
                "shared by every replica"
            )
        return self

    def signing_key_path(self) -> Path:
        """The fleet's signing key: as set, else fleet-signing.key beside the SQLite file."""
        if self.firmware.signing_key:
            return Path(self.firmware.signing_key)
        sqlite_path = self.store.sqlite_path()
        assert sqlite_path is not None  # PostgreSQL without a key is refused above
        return sqlite_path.parent / "fleet-signing.key"


def find_config_file(explicit: Path | None) -> Path | None:
    """The file to read: `--config`, then $OCPP_CLOUD_CONFIG, then the default paths."""
    return locate_config_file(explicit, CONFIG_ENV_VAR, DEFAULT_CONFIG_PATHS)


def load_settings(path: Path | None) -> CloudSettings:
    """Settings from `path` (or defaults when None) and the environment."""
    return read_settings(CloudSettings, path)
