"""The aggregator's first schema: edges and their events, the views the events feed
(chargers, connectors, transactions, card uses, charger jobs), rejections, and desired
state (card lists, firmware, commands). cloud/store/schema.py documents each table.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Written out here, not imported, so that this step stays what it was when later ones
# change the schema module.
TIME = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "edges",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_event_at", TIME, nullable=True),
        sa.Column("state", sa.String(length=16), server_default="unknown", nullable=False),
        sa.Column("status", JSON, nullable=True),
        sa.Column("status_at", TIME, nullable=True),
        sa.Column("software_version", sa.Text(), nullable=True),
        sa.Column("backlog", sa.BigInteger(), nullable=True),
        sa.Column("oldest_age_s", sa.Float(), nullable=True),
        sa.Column("figures_at", TIME, nullable=True),
        sa.Column("health", JSON, nullable=True),
        sa.Column("health_at", TIME, nullable=True),
        sa.Column("cards_version_reported", sa.Integer(), nullable=True),
        sa.Column("duplicate_events", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("first_seen_at", TIME, nullable=True),
        sa.Column("last_seen_at", TIME, nullable=True),
        sa.CheckConstraint(
            "state IN ('unknown', 'online', 'offline')", name=op.f("ck_edges_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edges")),
    )
    op.create_table(
        "firmware_images",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_firmware_images")),
    )
    op.create_table(
        "rejections",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_at", TIME, nullable=False),
        sa.Column("last_at", TIME, nullable=False),
        sa.Column("sample", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("source", "reason", name=op.f("pk_rejections")),
    )
    op.create_table(
        "card_lists",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["edge_id"], ["edges.id"], name=op.f("fk_card_lists_edge_id_edges")
        ),
        sa.PrimaryKeyConstraint("edge_id", "version", name=op.f("pk_card_lists")),
    )
    op.create_table(
        "chargers",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("charger_id", sa.Text(), nullable=False),
        sa.Column("vendor", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("serial_number", sa.Text(), nullable=True),
        sa.Column("firmware_version", sa.Text(), nullable=True),
        sa.Column("booted_at", TIME, nullable=True),
        sa.Column("connected", sa.Boolean(), nullable=True),
        sa.Column("connection_changed_at", TIME, nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["edge_id"], ["edges.id"], name=op.f("fk_chargers_edge_id_edges")),
        sa.PrimaryKeyConstraint("edge_id", "charger_id", name=op.f("pk_chargers")),
    )
    op.create_table(
        "commands",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("charger_id", sa.Text(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("arguments", JSON, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("sent_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("response", JSON, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'done', 'failed', 'expired', 'rejected')",
            name=op.f("ck_commands_status"),
        ),
        sa.ForeignKeyConstraint(["edge_id"], ["edges.id"], name=op.f("fk_commands_edge_id_edges")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
    )
    op.create_index(
        op.f("ix_commands_edge_id_status"), "commands", ["edge_id", "status"], unique=False
    )
    op.create_table(
        "events",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("received_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["edge_id"], ["edges.id"], name=op.f("fk_events_edge_id_edges")),
        sa.PrimaryKeyConstraint("edge_id", "seq", name=op.f("pk_events")),
    )
    op.create_table(
        "firmware_status",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("offered_at", TIME, nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        sa.CheckConstraint(
            "status IN ('offered', 'downloading', 'verified', 'rejected', 'installing', 'failed')",
            name=op.f("ck_firmware_status_status"),
        ),
        sa.ForeignKeyConstraint(
            ["edge_id"], ["edges.id"], name=op.f("fk_firmware_status_edge_id_edges")
        ),
        sa.PrimaryKeyConstraint("edge_id", "image", name=op.f("pk_firmware_status")),
    )
    op.create_table(
        "card_uses",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("id_tag", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("charger_id", sa.Text(), nullable=True),
        sa.Column("connector_id", sa.Integer(), nullable=True),
        sa.Column("reader_id", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["edge_id", "seq"],
            ["events.edge_id", "events.seq"],
            name=op.f("fk_card_uses_edge_id_seq_events"),
        ),
        sa.PrimaryKeyConstraint("edge_id", "seq", name=op.f("pk_card_uses")),
    )
    op.create_index(op.f("ix_card_uses_id_tag"), "card_uses", ["id_tag"], unique=False)
    op.create_table(
        "charger_jobs",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("charger_id", sa.Text(), nullable=False),
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["edge_id", "charger_id"],
            ["chargers.edge_id", "chargers.charger_id"],
            name=op.f("fk_charger_jobs_edge_id_charger_id_chargers"),
        ),
        sa.PrimaryKeyConstraint("edge_id", "charger_id", "job", name=op.f("pk_charger_jobs")),
    )
    op.create_table(
        "connectors",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("charger_id", sa.Text(), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error_code", sa.Text(), nullable=False),
        sa.Column("info", sa.Text(), nullable=True),
        sa.Column("status_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["edge_id", "charger_id"],
            ["chargers.edge_id", "chargers.charger_id"],
            name=op.f("fk_connectors_edge_id_charger_id_chargers"),
        ),
        sa.PrimaryKeyConstraint(
            "edge_id", "charger_id", "connector_id", name=op.f("pk_connectors")
        ),
    )
    op.create_table(
        "transactions",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("charger_id", sa.Text(), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=True),
        sa.Column("id_tag", sa.Text(), nullable=True),
        sa.Column("id_tag_status", sa.Text(), nullable=True),
        sa.Column("meter_start_wh", sa.BigInteger(), nullable=True),
        sa.Column("meter_stop_wh", sa.BigInteger(), nullable=True),
        sa.Column("energy_wh", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("power_w", sa.Float(), nullable=True),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("stopped_at", TIME, nullable=True),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["edge_id", "charger_id"],
            ["chargers.edge_id", "chargers.charger_id"],
            name=op.f("fk_transactions_edge_id_charger_id_chargers"),
        ),
        sa.PrimaryKeyConstraint("edge_id", "transaction_id", name=op.f("pk_transactions")),
    )
    op.create_index(
        op.f("ix_transactions_edge_id_started_at"),
        "transactions",
        ["edge_id", "started_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("transactions")
    op.drop_table("connectors")
    op.drop_table("charger_jobs")
    op.drop_table("card_uses")
    op.drop_table("firmware_status")
    op.drop_table("events")
    op.drop_table("commands")
    op.drop_table("chargers")
    op.drop_table("card_lists")
    op.drop_table("rejections")
    op.drop_table("firmware_images")
    op.drop_table("edges")
