"""Quarantined events, edges' store epochs, charger-supplied numbers as BIGINT, and the
`interrupted` command status (cloud/store/schema.py).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
COMMAND_STATES_BEFORE = ("pending", "sent", "done", "failed", "expired", "rejected")
COMMAND_STATES = (*COMMAND_STATES_BEFORE, "interrupted")
QUARANTINE_REASONS = ("invalid", "too_large", "unstorable")
# Columns a charger's numbers reach: INTEGER on PostgreSQL ends at 2^31.
WIDENED = (
    ("connectors", "connector_id", False),
    ("transactions", "connector_id", True),
    ("card_uses", "connector_id", True),
    ("charger_jobs", "request_id", True),
)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both: `edges` is every other table's parent, which
    # SQLite could not copy and drop while they refer to it.
    op.add_column("edges", sa.Column("epoch", sa.String(length=64), nullable=True))
    op.add_column(
        "edges", sa.Column("seq_offset", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.add_column(
        "edges",
        sa.Column("quarantined_events", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column("edges", sa.Column("cards_refused", sa.Text(), nullable=True))
    op.create_table(
        "edge_epochs",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.String(length=64), nullable=False),
        sa.Column("seq_offset", sa.BigInteger(), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["edge_id"], ["edges.id"], name=op.f("fk_edge_epochs_edge_id_edges")
        ),
        sa.PrimaryKeyConstraint("edge_id", "epoch", name=op.f("pk_edge_epochs")),
    )
    op.create_table(
        "quarantined_events",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.String(length=64), nullable=True),
        sa.Column("edge_seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=True),
        sa.Column("at", TIME, nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("raw_bytes", sa.BigInteger(), nullable=False),
        sa.Column("received_at", TIME, nullable=False),
        sa.CheckConstraint(
            _one_of("reason", QUARANTINE_REASONS), name=op.f("ck_quarantined_events_reason")
        ),
        sa.ForeignKeyConstraint(
            ["edge_id"], ["edges.id"], name=op.f("fk_quarantined_events_edge_id_edges")
        ),
        sa.PrimaryKeyConstraint("edge_id", "seq", name=op.f("pk_quarantined_events")),
    )
    for table, column, nullable in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column,
                existing_type=sa.Integer(),
                type_=sa.BigInteger(),
                existing_nullable=nullable,
            )
    with op.batch_alter_table("commands") as batch:
        batch.drop_constraint(op.f("ck_commands_status"), type_="check")
        batch.create_check_constraint(op.f("ck_commands_status"), _one_of("status", COMMAND_STATES))


def downgrade() -> None:
    with op.batch_alter_table("commands") as batch:
        batch.drop_constraint(op.f("ck_commands_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_commands_status"), _one_of("status", COMMAND_STATES_BEFORE)
        )
    for table, column, nullable in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column,
                existing_type=sa.BigInteger(),
                type_=sa.Integer(),
                existing_nullable=nullable,
            )
    op.drop_table("quarantined_events")
    op.drop_table("edge_epochs")
    for column in ("cards_refused", "quarantined_events", "seq_offset", "epoch"):
        op.drop_column("edges", column)
