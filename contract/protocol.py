"""The wire contract between an edge and the cloud aggregator: MQTT topics and the
payloads on them, validated with pydantic on both ends. docs/sync-protocol.md explains
the guarantees; this module is what both sides import, so they cannot drift apart.

Up (edge → cloud): batches of events, each with the edge's sequence number; the edge's
presence (retained, with a last will). Down (cloud → edge): acknowledgements, the card
list as versioned desired state, firmware offers and chunks, operator commands.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from contract.operator_actions import OperatorAction as OperatorAction  # re-exported

DEFAULT_TOPIC_PREFIX = "ocpp-edge/v1"
# A batch larger than this is refused by the aggregator (and never built by the edge).
MAX_PAYLOAD_BYTES = 1_048_576
# One event's data as JSON: the edge never appends a larger one (see edge/sync/clean.py),
# the aggregator quarantines one (limits.max_event_bytes).
MAX_EVENT_BYTES = 65_536
# The largest integer any store column takes (SQLite INTEGER, PostgreSQL BIGINT).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Versions the cloud hands out (card lists) are PostgreSQL INTEGERs.
INT32_MAX = 2**31 - 1
EDGE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
IMAGE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
EDGE_ID_RULE = "1 to 64 letters, digits, '.', '_' or '-', the first a letter or digit"
# A store's identity: random, made with the edge's SQLite file (docs/sync-protocol.md).
EPOCH_PATTERN = r"^[0-9a-f]{32}$"


class InvalidEdgeId(ValueError):
    """Text used as an edge id that is not one: it would be a wildcard or another level
    in an MQTT topic, or a path segment the routes do not expect."""

    def __init__(self, text: str) -> None:
        super().__init__(f"{text[:80]!r} is not an edge id: {EDGE_ID_RULE}")


def is_edge_id(text: str) -> bool:
    return re.fullmatch(EDGE_ID_PATTERN, text) is not None


def check_edge_id(text: str) -> str:
    """`text` when it is an edge id, else InvalidEdgeId. Every place an edge id enters
    (REST routes, enrolment, MQTT topics, the store) checks it with this one pattern."""
    if not is_edge_id(text):
        raise InvalidEdgeId(text)
    return text


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- topics --------------------------------------------------------------------


class Topics:
    """Every topic of one edge. The broker's ACL lets an edge publish only on the
    `up` ones and subscribe only to the `down` ones of its own id."""

    UP = ("events", "status", "firmware/request")
    DOWN = ("ack", "cards", "firmware/offer", "firmware/chunk", "commands")

    def __init__(self, edge_id: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> None:
        # "+", "#" or "/" in an id would make a wildcard or another level: never a topic.
        self.edge_id = check_edge_id(edge_id)
        self.prefix = prefix
        base = f"{prefix}/{edge_id}"
        self.events = f"{base}/events"
        self.status = f"{base}/status"
        self.firmware_request = f"{base}/firmware/request"
        self.ack = f"{base}/ack"
        self.cards = f"{base}/cards"
        self.firmware_offer = f"{base}/firmware/offer"
        self.firmware_chunk = f"{base}/firmware/chunk"
        self.commands = f"{base}/commands"


def edge_id_of(topic: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> tuple[str, str] | None:
    """(edge id, what follows it) for a topic under `prefix`, e.g. ("site-7", "events");
    None when the topic is not under `prefix` or its edge level is not an edge id."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    edge_id, _, rest = topic[len(head) :].partition("/")
    return (edge_id, rest) if is_edge_id(edge_id) and rest else None


# -- up: events ----------------------------------------------------------------


class _EventData(_Message):
    # What the edge changed for the cloud to take the event, one note per field
    # ("info: 5000 characters cut to 1000"); absent when nothing was. See
    # docs/sync-protocol.md, "What the edge cleans".
    cleaned: list[str] | None = Field(None, max_length=32)


class ChargerBoot(_EventData):
    kind: Literal["charger.boot"] = "charger.boot"
    charger_id: str
    vendor: str | None = None
    model: str | None = None
    serial_number: str | None = None
    firmware_version: str | None = None


class ChargerConnection(_EventData):
    kind: Literal["charger.connection"] = "charger.connection"
    charger_id: str
    connected: bool


class ConnectorStatus(_EventData):
    kind: Literal["charger.status"] = "charger.status"
    charger_id: str
    connector_id: int = Field(ge=0)
    status: str
    error_code: str
    info: str | None = None


class TransactionStarted(_EventData):
    kind: Literal["transaction.started"] = "transaction.started"
    charger_id: str
    connector_id: int = Field(ge=0)
    transaction_id: int
    id_tag: str
    id_tag_status: str
    meter_start_wh: int
    started_at: str
    # The card's account (its parent idTag) as the edge's decision found it; left out
    # when it has none. An aggregator before it refuses a start that carries one.
    parent_id_tag: str | None = None


class TransactionMeter(_EventData):
    """A running transaction's figures, at most once a minute per transaction."""

    kind: Literal["transaction.meter"] = "transaction.meter"
    charger_id: str
    transaction_id: int
    meter_wh: int
    energy_wh: int
    power_w: float | None = None


class TransactionStopped(_EventData):
    kind: Literal["transaction.stopped"] = "transaction.stopped"
    charger_id: str
    transaction_id: int
    meter_stop_wh: int
    energy_wh: int
    stopped_at: str
    reason: str | None = None


class CardUsed(_EventData):
    kind: Literal["card.used"] = "card.used"
    id_tag: str
    source: Literal["charger", "reader"]
    action: str
    status: str
    reason: str
    charger_id: str | None = None
    connector_id: int | None = None
    reader_id: str | None = None


class ChargerJob(_EventData):
    """Firmware, diagnostics and log progress a charger reports."""

    kind: Literal["charger.job"] = "charger.job"
    charger_id: str
    job: str  # firmware, diagnostics, log, signed_firmware
    status: str
    request_id: int | None = None


class CommandResult(_EventData):
    kind: Literal["command.result"] = "command.result"
    command_id: str
    # interrupted: the edge stopped while the command ran (docs/sync-protocol.md).
    status: Literal["done", "failed", "expired", "rejected", "interrupted"]
    detail: str = ""
    response: dict[str, Any] | None = None


class CardsApplied(_EventData):
    """The card list version the edge holds; `refused` says why it did not take the
    list it was sent (then `version` is the one it still holds)."""

    kind: Literal["cards.applied"] = "cards.applied"
    version: int = Field(ge=0, le=INT32_MAX)
    cards: int = Field(ge=0)
    refused: str | None = None


class FirmwareProgress(_EventData):
    """An image offered to the edge: `downloading` (the offer was taken; again each tenth
    of the bytes), `fetched` (every byte is in), then `verified` or `rejected` with the
    reason in `detail` (an offer refused before any byte moved is `rejected` at once)."""

    kind: Literal["firmware.progress"] = "firmware.progress"
    image: str
    status: Literal["downloading", "fetched", "verified", "rejected", "installing", "failed"]
    bytes: int = Field(ge=0)
    detail: str = ""


class FirmwareInstall(_EventData):
    """An image on its way to one charger: `refused` by the edge before anything was
    sent (not a target, older than installed, no verified image, a foreign location),
    `installing` (the charger took the command; again with each status it reports),
    then `installed` or `failed`. `forced`: the operator overrode the version check;
    `command_id`: the cloud's command, when it came from one."""

    kind: Literal["firmware.install"] = "firmware.install"
    charger_id: str
    image: str
    version: str
    status: Literal["refused", "installing", "installed", "failed"]
    detail: str = ""
    forced: bool = False
    command_id: str | None = None


class EdgeHealth(_EventData):
    kind: Literal["edge.health"] = "edge.health"
    software_version: str
    uptime_s: float
    backlog: int
    oldest_age_s: float | None
    disk_free_mb: float


EventData = Annotated[
    ChargerBoot
    | ChargerConnection
    | ConnectorStatus
    | TransactionStarted
    | TransactionMeter
    | TransactionStopped
    | CardUsed
    | ChargerJob
    | CommandResult
    | CardsApplied
    | FirmwareProgress
    | FirmwareInstall
    | EdgeHealth,
    Field(discriminator="kind"),
]
EVENT_DATA: TypeAdapter[EventData] = TypeAdapter(EventData)


class Event(_Message):
    seq: int = Field(ge=1)
    at: str  # when it happened, edge clock, UTC
    data: EventData


MAX_BATCH_EVENTS = 10_000


class EventBatch(_Message):
    """One MQTT message on `events`: consecutive events of one edge, oldest first.
    `epoch` names the edge's store: a new store (seq from 1 again) has a new one."""

    edge_id: str = Field(pattern=EDGE_ID_PATTERN)
    epoch: str | None = Field(None, pattern=EPOCH_PATTERN)
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


# -- up: presence ----------------------------------------------------------------


class EdgeStatus(_Message):
    """Retained on `status`; the last will publishes {"state": "offline"}."""

    state: Literal["online", "offline"]
    software_version: str | None = None
    started_at: str | None = None
    uptime_s: float | None = None
    backlog: int | None = None
    oldest_age_s: float | None = None
    disk_free_mb: float | None = None
    cards_version: int | None = Field(None, ge=0, le=INT32_MAX)
    at: str | None = None


# -- down --------------------------------------------------------------------------


QUARANTINE_REASONS = ("invalid", "too_large", "unstorable")


class Quarantined(_Message):
    """An event of the batch the cloud will never store, kept aside (with `reason`)."""

    seq: int = Field(ge=1)
    reason: Literal["invalid", "too_large", "unstorable"]


class Ack(_Message):
    """Every event up to `seq` of the store `epoch` is settled in the cloud: committed,
    or quarantined (`quarantined` names those of the batch just taken; the cloud's count
    for this edge is `quarantined_total`). The optional fields are left out when empty,
    so an edge from before them still takes a plain ack."""

    seq: int = Field(ge=0)
    epoch: str | None = Field(None, pattern=EPOCH_PATTERN)
    quarantined: list[Quarantined] | None = Field(None, max_length=MAX_BATCH_EVENTS)
    quarantined_total: int | None = Field(None, ge=0)


# An OCPP idToken (CiString20): printable, as chargers' local lists carry it.
ID_TAG_PATTERN = r"^[^\x00-\x1f\x7f]{1,20}$"
# A card list larger than one message goes in parts of at most this many bytes, and at
# most MAX_CARD_LIST_PARTS of them (about 400,000 cards).
CARD_LIST_PART_BYTES = 512 * 1024
MAX_CARD_LIST_PARTS = 64


def _is_iso_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return False
    return True


class CardEntry(_Message):
    """A card the cloud wants the site to hold; every field is checked here, so that a
    list the edge takes can also be pushed to chargers and used for every decision."""

    id_tag: str = Field(pattern=ID_TAG_PATTERN)
    status: Literal["Accepted", "Blocked", "Expired", "Invalid"] = "Accepted"
    expiry_date: str | None = Field(None, max_length=40)
    parent_id_tag: str | None = Field(None, pattern=ID_TAG_PATTERN)
    label: str | None = Field(None, max_length=200)
    chargers: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field([], max_length=1000)

    @field_validator("expiry_date")
    @classmethod
    def expiry_is_a_time(cls, value: str | None) -> str | None:
        if value is not None and not _is_iso_time(value):
            raise ValueError("an ISO 8601 time, e.g. 2027-01-31T00:00:00Z")
        return value


class CardList(_Message):
    """Desired state: the site's cards at `version`. A full list replaces the edge's
    cloud-managed cards; a delta (from `base_version`) upserts `cards` and removes
    `removed`. Sent again until the edge reports `cards.applied` with `version`.

    A list larger than one message comes in `parts` numbered by `part` (from 1), each
    with the same version, `full` and `base_version`: the edge keeps them until it has
    every one, then applies the whole list at once. Absent for a list in one message."""

    version: int = Field(ge=1, le=INT32_MAX)
    full: bool
    base_version: int | None = Field(None, ge=0, le=INT32_MAX)
    cards: list[CardEntry] = []
    removed: list[Annotated[str, Field(pattern=ID_TAG_PATTERN)]] = []
    part: int | None = Field(None, ge=1, le=MAX_CARD_LIST_PARTS)
    parts: int | None = Field(None, ge=1, le=MAX_CARD_LIST_PARTS)

    @model_validator(mode="after")
    def part_of_parts(self) -> CardList:
        if (self.part is None) != (self.parts is None):
            raise ValueError("part and parts go together")
        if self.part is not None and self.parts is not None and self.part > self.parts:
            raise ValueError(f"part {self.part} of {self.parts}")
        return self


MANIFEST_FORMAT: Final = "ocpp-edge-firmware-manifest/2"
# A manifest is a few hundred bytes; this leaves room for many targets.
MAX_MANIFEST_BYTES = 16_384
VENDOR_PATTERN = r"^[^/\x00-\x1f\x7f]{1,64}$"
MODEL_PATTERN = r"^[^\x00-\x1f\x7f]{1,64}$"
UTC_TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$"


class FirmwareTarget(_Message):
    """Chargers an image is for: shell patterns (`*`, `?`, `[...]`) matched, ignoring
    case, against the vendor and model a charger gives in its BootNotification."""

    vendor: str = Field(pattern=VENDOR_PATTERN)
    model: str = Field(pattern=MODEL_PATTERN)


class FirmwareManifest(_Message):
    """What the fleet's key signs about an image: everything the edge decides on.
    Signed as its canonical JSON (`canonical_manifest`); the edge verifies those exact
    bytes, then parses them, and refuses a manifest not in canonical form."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    format: Literal["ocpp-edge-firmware-manifest/2"]
    name: str = Field(pattern=IMAGE_NAME_PATTERN)
    version: str = Field(pattern=r"^[\x21-\x7e]{1,64}$")
    targets: list[FirmwareTarget] = Field(min_length=1, max_length=64)
    size: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: str = Field(pattern=UTC_TIME_PATTERN)
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")


def canonical_manifest(manifest: FirmwareManifest) -> str:
    """The one text of a manifest: JSON, keys sorted, no spaces, ASCII only."""
    return json.dumps(
        manifest.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )


class FirmwareOffer(_Message):
    """An image the edge should hold, fetched in chunks. `manifest` is the canonical
    text of its `FirmwareManifest` and `signature` the fleet's Ed25519 signature over
    those bytes (base64); the edge takes the offer only if the manifest is signed by a
    key it trusts and names this image, version, size and SHA-256, and keeps the bytes
    only if their size and SHA-256 match. An offer without a manifest is of the first
    format (a signature over the SHA-256 alone) and is refused. `force`: the operator
    allows a version older than the chargers (or the image held under this name) run."""

    image: str = Field(pattern=IMAGE_NAME_PATTERN)
    version: str = Field(max_length=64)
    size: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = Field(max_length=256)  # base64
    chunk_size: int = Field(gt=0, le=MAX_PAYLOAD_BYTES // 2)
    manifest: str | None = Field(None, max_length=MAX_MANIFEST_BYTES)
    force: bool = False


class FirmwareRequest(_Message):
    image: str
    offset: int = Field(ge=0)
    length: int = Field(gt=0)


class FirmwareChunk(_Message):
    image: str
    offset: int = Field(ge=0)
    data: str  # base64


class OperatorCommand(_Message):
    """Run once by the edge (a repeat of `id` is ignored), unless past `expires_at`."""

    id: str = Field(min_length=1, max_length=64)
    action: OperatorAction
    charger_id: str = Field(min_length=1, max_length=255)
    arguments: dict[str, Any] = {}
    expires_at: str

    @field_validator("expires_at")
    @classmethod
    def expiry_is_a_time(cls, value: str) -> str:
        if not _is_iso_time(value):
            raise ValueError("an ISO 8601 time")
        return value
