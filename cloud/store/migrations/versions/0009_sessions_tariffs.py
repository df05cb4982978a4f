"""Sessions: each transaction's account, listing order, sync delay and cost; meter
samples per transaction; tariffs; when each edge's backlog was last empty
(cloud/store/schema.py).

A transaction stored before this release is listed by its start (else its last
update), has no samples (its curve is its start and stop), no known sync delay, and no
cost until a tariff covering it is added or changed.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
# Written out here, not imported, so that this step stays what it was.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
SESSION_INDEXES = {
    "ix_transactions_session_at_edge_id_transaction_id": [
        "session_at",
        "edge_id",
        "transaction_id",
    ],
    "ix_transactions_edge_id_session_at_transaction_id": [
        "edge_id",
        "session_at",
        "transaction_id",
    ],
    "ix_transactions_edge_id_charger_id_session_at_transaction_id": [
        "edge_id",
        "charger_id",
        "session_at",
        "transaction_id",
    ],
    "ix_transactions_id_tag_session_at_edge_id_transaction_id": [
        "id_tag",
        "session_at",
        "edge_id",
        "transaction_id",
    ],
    "ix_transactions_account_session_at_edge_id_transaction_id": [
        "account",
        "session_at",
        "edge_id",
        "transaction_id",
    ],
}


def upgrade() -> None:
    # Plain ADD COLUMN: `edges` is every other table's parent (see 0005).
    op.add_column("edges", sa.Column("backlog_empty_at", TIME, nullable=True))
    op.create_table(
        "tariffs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("edge_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("minor_unit_digits", sa.Integer(), nullable=False),
        sa.Column("time_zone", sa.Text(), nullable=False),
        sa.Column("valid_from", TIME, nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("bands", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["edge_id"], ["edges.id"], name=op.f("fk_tariffs_edge_id_edges")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tariffs")),
    )
    op.create_index(
        op.f("ix_tariffs_edge_id_valid_from"), "tariffs", ["edge_id", "valid_from"], unique=False
    )
    op.create_table(
        "meter_samples",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("meter_wh", sa.BigInteger(), nullable=False),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.Column("power_w", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["edge_id", "seq"],
            ["events.edge_id", "events.seq"],
            name=op.f("fk_meter_samples_edge_id_seq_events"),
        ),
        sa.PrimaryKeyConstraint("edge_id", "seq", name=op.f("pk_meter_samples")),
    )
    op.create_index(
        op.f("ix_meter_samples_edge_id_transaction_id_at"),
        "meter_samples",
        ["edge_id", "transaction_id", "at"],
        unique=False,
    )
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(sa.Column("account", sa.Text(), nullable=True))
        batch.add_column(sa.Column("session_at", TIME, nullable=True))
        batch.add_column(sa.Column("synced_at", TIME, nullable=True))
        batch.add_column(sa.Column("sync_delay_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("cost_minor", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("tariff_id", sa.Integer(), nullable=True))
    op.execute("UPDATE transactions SET session_at = COALESCE(started_at, updated_at)")
    with op.batch_alter_table("transactions") as batch:
        batch.alter_column("session_at", existing_type=TIME, nullable=False)
        batch.create_foreign_key(
            op.f("fk_transactions_tariff_id_tariffs"), "tariffs", ["tariff_id"], ["id"]
        )
        for name, columns in SESSION_INDEXES.items():
            batch.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("transactions") as batch:
        for name in SESSION_INDEXES:
            batch.drop_index(name)
        batch.drop_constraint(op.f("fk_transactions_tariff_id_tariffs"), type_="foreignkey")
        for column in ("tariff_id", "cost_minor", "sync_delay_s", "synced_at", "session_at"):
            batch.drop_column(column)
        batch.drop_column("account")
    op.drop_index(op.f("ix_meter_samples_edge_id_transaction_id_at"), table_name="meter_samples")
    op.drop_table("meter_samples")
    op.drop_index(op.f("ix_tariffs_edge_id_valid_from"), table_name="tariffs")
    op.drop_table("tariffs")
    op.drop_column("edges", "backlog_empty_at")
