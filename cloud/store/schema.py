"""The aggregator's tables (SQLAlchemy Core), one schema for SQLite and PostgreSQL.

Each table holds one concept:

- `edges`: one row per edge: its current store `epoch`, `last_seq` (the newest event of
  that store settled: stored or quarantined; what acks carry), `seq_offset` (added to the
  store's seq to number the edge's events across stores), the edge-clock time of that
  event, presence (`state` unknown/online/offline, the last `EdgeStatus` document and when
  it arrived), the figures it last reported (software version, outbox backlog and its
  oldest age, and when; the latest time that backlog was empty), its last `edge.health`,
  the card list version it holds (and why it refused the last one sent, if it did), how
  many repeated events it sent and how many of its events were quarantined; its fleet,
  site name and location (set by operators), and `revision`, raised by every transaction
  that writes about the edge (the web view's change marker: replicas poll it to know what
  to re-render); its chargers and connectors counted, kept by ingest for the fleet
  overview.
- `events`: every event stored, once: key `(edge_id, seq)`, where `seq` is the store's
  own plus its epoch's `seq_offset` (equal while an edge keeps its first store). The views
  below are built from them and could be rebuilt from them.
- `chargers`, `connectors`: each edge's chargers as their events describe them.
- `connector_history`: each connector status an edge reported (key `(edge_id, seq)`, the
  event's), the latest `limits.status_history_per_charger` per charger: the charger
  page's status history.
- `transactions`: key `(edge_id, transaction_id)` (the edge gives each transaction an id
  of its own, never reused); energy in integer Wh. Also the card's account (its parent
  idTag, as the edge decided it), `session_at` (its start, else the time of the first of
  its events heard of: the order sessions are listed in), when its latest event arrived
  and the longest any of its events took to arrive (a session recorded offline), and its
  cost in the currency's minor unit with the tariff that priced it (once it stopped),
  and its edge's fleet (the fleet's sessions have their own index).
- `meter_samples`: a running transaction's figures, one row per `transaction.meter`
  event (keyed like the event), at most `sessions.max_meter_samples` per transaction.
- `tariffs`: prices per kWh, optionally per time band, for one site (`edge_id`), for
  every site of a fleet (`fleet_id`) or of every fleet (both NULL); each in force from
  `valid_from` until the next of its scope.
- `repricing`: sessions whose cost is being computed again after a tariff changed, and
  how far that work is (cloud/store/repricing.py).
- `card_uses`: one row per `card.used` event, keyed like the event.
- `charger_jobs`: the latest firmware/diagnostics/log status of each charger, per job.
- `rejections`: payloads refused, counted per source (the topic's edge id, or the topic)
  and reason, with the latest sample.
- `quarantined_events`: events the cloud will never store (schema, a value no store
  holds, too large), kept aside with the reason and the raw event (bounded) so that the
  edge's sequence moves on; key `(edge_id, seq)` like `events`, which never holds them.
- `edge_epochs`: each store an edge has had (docs/sync-protocol.md, "A replaced store"):
  its epoch, and where its sequence starts in the edge's events (`seq_offset`).
- `card_lists`: each version of each edge's card list, as the full list (deltas are
  computed when sent).
- `edge_cards`: each edge's latest card list one card a row (key `(edge_id, id_key)`, the
  id tag upper-cased), with the edge's fleet. Written with every new version
  (cloud/store/card_writes.py), equal to its document.
- `fleet_cards`: a row per card a fleet holds or held: how many of its sites hold it and
  its text to search (what the fleet's card list pages through), its `revision` (the
  fleet's `cards_revision` when it last changed anywhere in the fleet: edit forms carry
  it, a stale one is refused), who changed it, when, and what the change was.
- `card_imports`: CSV imports previewed and not yet applied (the text, the plan's digest
  and the fleet's `cards_revision` it was made at), for `cards.import_preview_lifetime`.
- `firmware_images`, `firmware_status`: images the cloud offers (with the signed manifest;
  none for an image added before manifests, which is not offered), and each edge's
  progress with each, and whether the operator forced the offer (no foreign key to the
  image: an edge may report one the cloud removed, or one it was offered by no one).
- `firmware_installs`: per charger, the latest install an edge started or refused (image,
  version, status, reason, forced, the command) and the version last installed there.
- `commands`: operator commands, from creation to the edge's result.
- `fleets`: the organisations edges belong to; every edge is in one (`edges.fleet_id`,
  the default fleet, id 1, until assigned), and every user sees only their own fleet's;
  `cards_revision`, raised by every change to the fleet's cards.
- `users`: people signing in to the fleet web view: email, argon2 password hash, role
  (viewer, operator, admin), fleet, when they were disabled (never deleted: the audit
  log names them).
- `web_sessions`: each signed-in session of the web view (the SHA-256 of the secret its
  cookie carries, its user, since when, last seen, expiry, the client's address and
  browser), bounded per user; `sign_in_attempts`: sign-ins counted per client address
  and per account in a window, shared by every replica.
- `secrets`: secrets the replicas must share, made once by the first (the key that
  signs web session cookies).
- `audit_log`: who did what in the web view (logins, commands, card changes), per fleet.
- `edge_presence`: each change of an edge's presence (online or not) and when the cloud
  heard it, a bounded number per edge (`limits.presence_history_per_edge`).
- `alerts`: conditions the alerts engine (cloud/alerts.py) raised, each once while open
  (a partial unique index: one open alert per kind, edge and subject, whichever replica
  raises it), with when it was raised and cleared and what the webhook has been told.
- `fleet_alert_settings`: a fleet's own alert thresholds and webhook (NULL: the
  configuration's).
- `refusal_counts`: payloads refused per source in buckets of a few seconds, pruned past
  the alerts' window: how the engine sees refusals spiking.
- `firmware_campaigns`: an image rolled out to a fleet's edges and the chargers matching
  its vendor/model patterns, its state (running, paused, cancelled, completed), who
  created it and who last changed its state (cloud/store/campaigns.py).
- `campaign_targets`: one row per edge of a campaign (`charger_id` empty: its download)
  and per matching charger once known (its install), with its stage, the reason, the
  install command asked for, and the time of each change.
- `firmware_image_fleets`: the fleets whose users uploaded an image from the web view
  (an image with none was added through the API or the command line: every fleet's).
- `enrollment_codes`: one-time codes an edge enrolls with, kept as the SHA-256 of the code
  (never the code), with the edge id, the expiry, whether it may replace the edge's live
  identity, and when, from where and for which certificate (serial, expiry) it was used.
  No foreign key: the edge has not been in touch yet.

Times are aware UTC datetimes (`UtcDateTime`); JSON documents are JSONB on PostgreSQL.
Migrations (cloud/store/migrations/versions) create exactly this; a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out. SQLite keeps no offset, so every value
    is turned to UTC before it is written."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime ({value}) cannot be stored: give it a time zone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQL NULL for None (not JSON null), JSONB on PostgreSQL.
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

EDGE_ID = String(64)
# Anything an edge sends is stored whole: a string too long for its column would stop
# that edge's outbox behind the event. Ids the protocol bounds keep their length.
CHARGER_ID = Text()
EDGE_STATES = ("unknown", "online", "offline")
FIRMWARE_STATES = (
    "offered",
    "downloading",
    "fetched",
    "verified",
    "rejected",
    "installing",
    "failed",
)
INSTALL_STATES = ("refused", "installing", "installed", "failed")
COMMAND_STATES = ("pending", "sent", "done", "failed", "expired", "rejected", "interrupted")
QUARANTINE_REASONS = ("invalid", "too_large", "unstorable")
ROLES = ("viewer", "operator", "admin")
# Edges that no operator has assigned yet, and every edge from before fleets.
DEFAULT_FLEET_ID = 1


def _one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    quoted = ", ".join(f"'{value}'" for value in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=column)


fleets = Table(
    "fleets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    # Raised by every transaction that changes a card of the fleet (the card's `revision`
    # in fleet_cards takes its value): also the row that orders those transactions.
    Column("cards_revision", BigInteger, nullable=False, server_default="0"),
)

edges = Table(
    "edges",
    metadata,
    Column("id", EDGE_ID, primary_key=True),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("last_event_at", UtcDateTime),
    Column("state", String(16), nullable=False, server_default="unknown"),
    Column("status", Json),
    Column("status_at", UtcDateTime),
    Column("software_version", Text),
    Column("backlog", BigInteger),
    Column("oldest_age_s", Float),
    Column("figures_at", UtcDateTime),
    Column("health", Json),
    Column("health_at", UtcDateTime),
    Column("cards_version_reported", Integer),
    Column("duplicate_events", BigInteger, nullable=False, server_default="0"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("first_seen_at", UtcDateTime),
    Column("last_seen_at", UtcDateTime),
    Column("epoch", String(64)),
    Column("seq_offset", BigInteger, nullable=False, server_default="0"),
    Column("quarantined_events", BigInteger, nullable=False, server_default="0"),
    # Why the edge last refused the card list it was sent (None: it took it).
    Column("cards_refused", Text),
    # Nullable only because SQLite cannot add a referencing column with a default; every
    # insert sets it (the Python-side default), and a NULL would match no user's fleet.
    Column("fleet_id", Integer, default=DEFAULT_FLEET_ID),
    Column("site_name", Text),
    Column("location", Text),
    Column("revision", BigInteger, nullable=False, server_default="0"),
    # Its chargers and connectors counted (connectors by status), written with every batch
    # that changes them: the fleet overview reads one row per edge, however many chargers.
    Column("chargers_total", BigInteger, nullable=False, server_default="0"),
    Column("chargers_disconnected", BigInteger, nullable=False, server_default="0"),
    Column("connectors_faulted", BigInteger, nullable=False, server_default="0"),
    Column("connector_counts", Json),
    # When `state` last changed (edge_presence has each change).
    Column("state_since", UtcDateTime),
    # The latest time the edge said its backlog was empty: all it recorded before had
    # reached the cloud (a month is final once this and its events pass the month's end).
    Column("backlog_empty_at", UtcDateTime),
    _one_of("state", EDGE_STATES),
    ForeignKeyConstraint(["fleet_id"], ["fleets.id"]),
    Index(None, "fleet_id"),
)

edge_epochs = Table(
    "edge_epochs",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("epoch", String(64), nullable=False),
    Column("seq_offset", BigInteger, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("edge_id", "epoch"),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
)

events = Table(
    "events",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("data", Json, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("edge_id", "seq"),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
)

chargers = Table(
    "chargers",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("charger_id", CHARGER_ID, nullable=False),
    Column("vendor", Text),
    Column("model", Text),
    Column("serial_number", Text),
    Column("firmware_version", Text),
    Column("booted_at", UtcDateTime),
    Column("connected", Boolean),
    Column("connection_changed_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("edge_id", "charger_id"),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
)

connectors = Table(
    "connectors",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("charger_id", CHARGER_ID, nullable=False),
    # Charger-supplied numbers are BIGINT: an integer a charger may send must never be
    # one the store refuses (PostgreSQL's INTEGER ends at 2^31).
    Column("connector_id", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("error_code", Text, nullable=False),
    Column("info", Text),
    Column("status_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("edge_id", "charger_id", "connector_id"),
    ForeignKeyConstraint(["edge_id", "charger_id"], ["chargers.edge_id", "chargers.charger_id"]),
)

connector_history = Table(
    "connector_history",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("seq", BigInteger, nullable=False),  # the event's, as in `events`
    Column("charger_id", CHARGER_ID, nullable=False),
    Column("connector_id", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("error_code", Text, nullable=False),
    Column("info", Text),
    Column("at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("edge_id", "seq"),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
    Index(None, "edge_id", "charger_id", "seq"),
)

# Started fields are nullable: a meter or stop can arrive for a transaction started
# before the edge synced.
transactions = Table(
    "transactions",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("transaction_id", BigInteger, nullable=False),
    Column("charger_id", CHARGER_ID, nullable=False),
    Column("connector_id", BigInteger),
    Column("id_tag", Text),
    Column("id_tag_status", Text),
    Column("meter_start_wh", BigInteger),
    Column("meter_stop_wh", BigInteger),
    Column("energy_wh", BigInteger, nullable=False, server_default="0"),
    Column("power_w", Float),
    Column("started_at", UtcDateTime),
    Column("stopped_at", UtcDateTime),
    Column("stop_reason", Text),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("account", Text),
    Column("session_at", UtcDateTime, nullable=False),
    Column("synced_at", UtcDateTime),
    Column("sync_delay_s", Float),
    Column("cost_minor", BigInteger),
    Column("tariff_id", Integer),
    # The edge's fleet, kept on each session (set when the row is made, moved with its
    # edge): the fleet's sessions are read through their own index.
    Column("fleet_id", Integer),
    PrimaryKeyConstraint("edge_id", "transaction_id"),
    ForeignKeyConstraint(["edge_id", "charger_id"], ["chargers.edge_id", "chargers.charger_id"]),
    ForeignKeyConstraint(["tariff_id"], ["tariffs.id"]),
    Index(None, "edge_id", "started_at"),
    # Sessions newest first (keyset pagination), whole fleet or by filter.
    Index(None, "session_at", "edge_id", "transaction_id"),
    Index(None, "edge_id", "session_at", "transaction_id"),
    Index(None, "edge_id", "charger_id", "session_at", "transaction_id"),
    Index(None, "id_tag", "session_at", "edge_id", "transaction_id"),
    Index(None, "account", "session_at", "edge_id", "transaction_id"),
    Index(None, "fleet_id", "session_at", "edge_id", "transaction_id"),
)

meter_samples = Table(
    "meter_samples",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("transaction_id", BigInteger, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("meter_wh", BigInteger, nullable=False),
    Column("energy_wh", BigInteger, nullable=False),
    Column("power_w", Float),
    PrimaryKeyConstraint("edge_id", "seq"),
    ForeignKeyConstraint(["edge_id", "seq"], ["events.edge_id", "events.seq"]),
    Index(None, "edge_id", "transaction_id", "at"),
)

tariffs = Table(
    "tariffs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("edge_id", EDGE_ID),  # NULL: every site (of `fleet_id`) without one of its own
    Column("name", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("minor_unit_digits", Integer, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("valid_from", UtcDateTime, nullable=False),
    # Millionths of the currency's major unit per kWh, outside every band.
    Column("price", BigInteger, nullable=False),
    # [{"days": [0..6], "start": minute, "end": minute, "price": millionths}, ...]
    Column("bands", Json, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # With no edge_id: the fleet's default (NULL: every fleet's, set through the API).
    # A site's own tariff has none: it follows its edge.
    Column("fleet_id", Integer),
    # Ended: from this time on the scope has no tariff of its own (the next scope's
    # prices), until a later tariff of it starts. NULL: until the next one starts.
    Column("valid_until", UtcDateTime),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
    ForeignKeyConstraint(["fleet_id"], ["fleets.id"]),
    Index(None, "edge_id", "valid_from"),
)

# Sessions whose cost is being computed again after a tariff changed (or their edge
# moved to another fleet): every stopped session of the scope (an edge, a fleet, or all
# when both are NULL) from `since` on, worked through in order of (session_at, edge_id,
# transaction_id) a batch at a time; `after_*` is the last session done. The row goes
# when the work is done.
repricing = Table(
    "repricing",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fleet_id", Integer),
    Column("edge_id", EDGE_ID),
    Column("since", UtcDateTime, nullable=False),
    Column("after_session_at", UtcDateTime),
    Column("after_edge_id", EDGE_ID),
    Column("after_transaction_id", BigInteger),
    Column("repriced", BigInteger, nullable=False, server_default="0"),
    Column("reason", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

card_uses = Table(
    "card_uses",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("id_tag", Text, nullable=False),
    Column("source", String(16), nullable=False),
    Column("action", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("charger_id", CHARGER_ID),
    Column("connector_id", BigInteger),
    Column("reader_id", Text),
    PrimaryKeyConstraint("edge_id", "seq"),
    ForeignKeyConstraint(["edge_id", "seq"], ["events.edge_id", "events.seq"]),
    Index(None, "id_tag"),
)

charger_jobs = Table(
    "charger_jobs",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("charger_id", CHARGER_ID, nullable=False),
    Column("job", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("request_id", BigInteger),
    Column("at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("edge_id", "charger_id", "job"),
    ForeignKeyConstraint(["edge_id", "charger_id"], ["chargers.edge_id", "chargers.charger_id"]),
)

quarantined_events = Table(
    "quarantined_events",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("epoch", String(64)),
    Column("edge_seq", BigInteger, nullable=False),  # the store's own seq, as the edge logs it
    Column("kind", Text),
    Column("at", UtcDateTime),  # the event's time, when it could be read
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    # The event as received, JSON with every non-ASCII character escaped (so that any
    # text store holds it), cut to limits.quarantine_sample_bytes; `raw_bytes` is its size.
    Column("raw", Text, nullable=False),
    Column("raw_bytes", BigInteger, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("edge_id", "seq"),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
    _one_of("reason", QUARANTINE_REASONS),
)

rejections = Table(
    "rejections",
    metadata,
    Column("source", Text, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("first_at", UtcDateTime, nullable=False),
    Column("last_at", UtcDateTime, nullable=False),
    Column("sample", Text, nullable=False),
    PrimaryKeyConstraint("source", "reason"),
)

card_lists = Table(
    "card_lists",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("version", Integer, nullable=False),
    Column("document", Json, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("edge_id", "version"),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
)

edge_cards = Table(
    "edge_cards",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    # The card's id tag upper-cased: one card however it is typed (OCPP idTags are).
    Column("id_key", Text, nullable=False),
    Column("id_tag", Text, nullable=False),
    # The edge's fleet, kept with each row so the fleet's list pages by one index.
    Column("fleet_id", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("expiry_date", Text),
    Column("parent_id_tag", Text),
    Column("label", Text),
    Column("chargers", Json),
    # The list version this entry last changed in.
    Column("version", Integer, nullable=False),
    PrimaryKeyConstraint("edge_id", "id_key"),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
    ForeignKeyConstraint(["fleet_id"], ["fleets.id"]),
    # A card's sites, and whether one holds it with a status: read from the index alone.
    Index(None, "fleet_id", "id_key", "edge_id", "status"),
)

fleet_cards = Table(
    "fleet_cards",
    metadata,
    Column("fleet_id", Integer, nullable=False),
    Column("id_key", Text, nullable=False),
    Column("id_tag", Text, nullable=False),
    # How many of the fleet's sites hold it (0: none, now), and its id tag, labels and
    # accounts lower-cased: what the fleet's list pages and searches, a row per card.
    Column("sites", Integer, nullable=False, server_default="0"),
    Column("search", Text, nullable=False),
    # The fleet's `cards_revision` when the card last changed (0: not since the list was
    # kept per card): what edit forms carry; who changed it, when, and how.
    Column("revision", BigInteger, nullable=False),
    Column("changed_at", UtcDateTime),
    Column("changed_by", Text),
    Column("change", Text),
    PrimaryKeyConstraint("fleet_id", "id_key"),
    ForeignKeyConstraint(["fleet_id"], ["fleets.id"]),
    Index(None, "fleet_id", "revision"),
)

card_imports = Table(
    "card_imports",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("fleet_id", Integer, nullable=False),
    Column("user_id", Integer, nullable=False),
    Column("site", EDGE_ID),
    Column("filename", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("mark", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    ForeignKeyConstraint(["fleet_id"], ["fleets.id"]),
    Index(None, "created_at"),
)

firmware_images = Table(
    "firmware_images",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("version", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("signature", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # The canonical manifest the signature covers; NULL: added before manifests.
    Column("manifest", Text),
)

firmware_status = Table(
    "firmware_status",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("image", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("bytes", BigInteger, nullable=False, server_default="0"),
    Column("detail", Text, nullable=False),
    Column("offered_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("forced", Boolean, nullable=False, server_default=false()),
    PrimaryKeyConstraint("edge_id", "image"),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
    _one_of("status", FIRMWARE_STATES),
)

firmware_installs = Table(
    "firmware_installs",
    metadata,
    Column("edge_id", EDGE_ID, nullable=False),
    Column("charger_id", CHARGER_ID, nullable=False),
    Column("image", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("forced", Boolean, nullable=False),
    Column("command_id", String(64)),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("installed_image", Text),
    Column("installed_version", Text),
    Column("installed_at", UtcDateTime),
    PrimaryKeyConstraint("edge_id", "charger_id"),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
    _one_of("status", INSTALL_STATES),
)

commands = Table(
    "commands",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("edge_id", EDGE_ID, nullable=False),
    Column("charger_id", CHARGER_ID, nullable=False),
    Column("action", String(32), nullable=False),
    Column("arguments", Json, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("detail", Text, nullable=False),
    Column("response", Json),
    # Who asked: "token" (the API's bearer token), "loopback", "cli:USER", a user's
    # email; None for commands made before actors were recorded.
    Column("actor", Text),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
    _one_of("status", COMMAND_STATES),
    Index(None, "edge_id", "status"),
)

enrollment_codes = Table(
    "enrollment_codes",
    metadata,
    Column("code_sha256", String(64), primary_key=True),
    Column("edge_id", EDGE_ID, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime),
    Column("used_by", Text),
    Column("certificate_serial", Text),
    Column("replaces_identity", Boolean, nullable=False, server_default=false()),
    Column("certificate_expires_at", UtcDateTime),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Kept lower-cased: one account per address however it is typed.
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("fleet_id", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("disabled_at", UtcDateTime),
    ForeignKeyConstraint(["fleet_id"], ["fleets.id"]),
    _one_of("role", ROLES),
)

# One row per signed-in session of the web view (cloud/store/users.py): the cookie carries
# a random secret, the store its SHA-256 only (a copy of the store makes no cookie). A
# session ends when its row goes: signed out, ended by its user or an admin, its user's
# password changed or user disabled, too many newer ones, or expired and swept.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("secret_digest", String(64), nullable=False, unique=True),
    Column("user_id", Integer, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    # The earlier of idle expiry (last seen + web.idle_timeout) and the session's lifetime.
    Column("expires_at", UtcDateTime, nullable=False),
    Column("address", String(64), nullable=False),  # the client's, at sign-in
    Column("agent", String(200), nullable=False),  # its User-Agent, cut at 200 characters
    ForeignKeyConstraint(["user_id"], ["users.id"]),
    Index(None, "user_id", "started_at"),
    Index(None, "expires_at"),
)

# Sign-ins counted per client address and per account (the SHA-256 of the address or of
# the email as typed, normalised: nothing typed is kept), in a window that starts at the
# first attempt; shared by every replica, so the limit holds however many serve the view.
SIGN_IN_SCOPES = ("address", "account")

sign_in_attempts = Table(
    "sign_in_attempts",
    metadata,
    Column("scope", String(16), nullable=False),
    Column("key_digest", String(64), nullable=False),
    Column("window_start", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    PrimaryKeyConstraint("scope", "key_digest"),
    _one_of("scope", SIGN_IN_SCOPES),
    Index(None, "window_start"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("fleet_id", Integer),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False),
    Column("detail", Json),
    ForeignKeyConstraint(["fleet_id"], ["fleets.id"]),
    Index(None, "fleet_id", "at"),
)

secrets = Table(
    "secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)


edge_presence = Table(
    "edge_presence",
    metadata,
    # INTEGER on SQLite: only an INTEGER PRIMARY KEY counts up by itself there.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("edge_id", EDGE_ID, nullable=False),
    Column("online", Boolean, nullable=False),
    Column("at", UtcDateTime, nullable=False),  # when the cloud heard it (its clock)
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
    Index(None, "edge_id", "id"),
)

ALERT_KINDS = ("edge_offline", "backlog_old", "connector_faulted", "refusals_spike")
ALERT_NOTICES = ("none", "raised", "cleared")

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("kind", String(32), nullable=False),
    # No foreign key: refusals may come from an edge id that never sent a good message.
    Column("edge_id", EDGE_ID, nullable=False),
    # What in the edge it is about: "" for the edge itself, "CHARGER/CONNECTOR".
    Column("subject", Text, nullable=False),
    Column("charger_id", CHARGER_ID),
    Column("connector_id", BigInteger),
    # When the condition began, as the data says (a connector's time is the edge's clock).
    Column("since", UtcDateTime, nullable=False),
    Column("raised_at", UtcDateTime, nullable=False),
    Column("cleared_at", UtcDateTime),
    Column("detail", Text, nullable=False),
    Column("clear_reason", Text),
    # The webhook: the last state it was told, when to try next (None: nothing to send),
    # attempts at the current notice, and why the last one failed.
    Column("notified", String(16), nullable=False, server_default="none"),
    Column("notify_after", UtcDateTime),
    Column("notify_attempts", Integer, nullable=False, server_default="0"),
    Column("notify_error", Text),
    _one_of("kind", ALERT_KINDS),
    _one_of("notified", ALERT_NOTICES),
    Index(
        "uq_alerts_open",
        "kind",
        "edge_id",
        "subject",
        unique=True,
        sqlite_where=text("cleared_at IS NULL"),
        postgresql_where=text("cleared_at IS NULL"),
    ),
    Index(None, "raised_at"),
    Index(None, "notify_after"),
)

# A fleet's own alert thresholds and webhook, set by its admins in the web view; NULL:
# the configuration's (`[alerts]`). `webhook_url` "" is no webhook at all.
fleet_alert_settings = Table(
    "fleet_alert_settings",
    metadata,
    Column("fleet_id", Integer, primary_key=True, autoincrement=False),
    Column("edge_offline_after", Float),
    Column("backlog_older_than", Float),
    Column("faulted_after", Float),
    Column("refusals_count", Integer),
    Column("webhook_url", Text),
    Column("webhook_secret", Text),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("updated_by", Text, nullable=False),
    ForeignKeyConstraint(["fleet_id"], ["fleets.id"]),
)

refusal_counts = Table(
    "refusal_counts",
    metadata,
    Column("bucket", UtcDateTime, nullable=False),  # the start of a few seconds
    Column("source", Text, nullable=False),
    Column("count", BigInteger, nullable=False),
    PrimaryKeyConstraint("bucket", "source"),
)


CAMPAIGN_STATES = ("running", "paused", "cancelled", "completed")
CAMPAIGN_STAGES = (
    "offered",
    "fetched",
    "verified",
    "installing",
    "installed",
    "failed",
    "cancelled",
)

firmware_campaigns = Table(
    "firmware_campaigns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fleet_id", Integer, nullable=False),
    Column("image", String(128), nullable=False),
    # The vendor/model patterns chargers are chosen by: [{"vendor": ..., "model": ...}].
    Column("targets", Json, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("state_at", UtcDateTime, nullable=False),
    # Who last paused, resumed or cancelled it (None: no one; completed by itself).
    Column("state_by", Text),
    ForeignKeyConstraint(["fleet_id"], ["fleets.id"]),
    ForeignKeyConstraint(["image"], ["firmware_images.name"]),
    _one_of("state", CAMPAIGN_STATES),
    Index(None, "fleet_id", "id"),
)

campaign_targets = Table(
    "campaign_targets",
    metadata,
    Column("campaign_id", Integer, nullable=False),
    Column("edge_id", EDGE_ID, nullable=False),
    Column("charger_id", CHARGER_ID, nullable=False),  # "": the edge (its download)
    Column("stage", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    # The install command asked for now (None: none; the edge row never has one).
    Column("command_id", String(64)),
    Column("stage_at", UtcDateTime, nullable=False),
    Column("offered_at", UtcDateTime),
    Column("fetched_at", UtcDateTime),
    Column("verified_at", UtcDateTime),
    Column("installing_at", UtcDateTime),
    Column("finished_at", UtcDateTime),  # installed, failed or cancelled
    PrimaryKeyConstraint("campaign_id", "edge_id", "charger_id"),
    ForeignKeyConstraint(["campaign_id"], ["firmware_campaigns.id"]),
    ForeignKeyConstraint(["edge_id"], ["edges.id"]),
    _one_of("stage", CAMPAIGN_STAGES),
    # Ingest finds an edge's campaigns by it.
    Index(None, "edge_id", "campaign_id"),
)

firmware_image_fleets = Table(
    "firmware_image_fleets",
    metadata,
    Column("image", String(128), nullable=False),
    Column("fleet_id", Integer, nullable=False),
    Column("added_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("image", "fleet_id"),
    ForeignKeyConstraint(["image"], ["firmware_images.name"]),
    ForeignKeyConstraint(["fleet_id"], ["fleets.id"]),
)
