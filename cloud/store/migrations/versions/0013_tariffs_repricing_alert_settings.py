"""Tariffs per fleet, re-pricing in the background, a fleet's own alert settings, and each
session's fleet (cloud/store/schema.py): `tariffs.fleet_id` (a fleet's default tariff;
the tariffs already stored stay every fleet's) and `valid_until`, the `repricing` work list,
`fleet_alert_settings`, and `transactions.fleet_id` with its index, filled from each
session's edge.

Revision ID: 0013
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
FLEET_SESSIONS_INDEX = "ix_transactions_fleet_id_session_at_edge_id_transaction_id"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Alembic's add_column would ALTER the constraint separately, which SQLite lacks
        # (as 0006 for edges.fleet_id).
        op.execute(
            "ALTER TABLE tariffs ADD COLUMN fleet_id INTEGER "
            "CONSTRAINT fk_tariffs_fleet_id_fleets REFERENCES fleets (id)"
        )
    else:
        op.add_column(
            "tariffs",
            sa.Column(
                "fleet_id",
                sa.Integer(),
                sa.ForeignKey("fleets.id", name=op.f("fk_tariffs_fleet_id_fleets")),
                nullable=True,
            ),
        )
    op.add_column("tariffs", sa.Column("valid_until", TIME, nullable=True))
    # Plain ADD COLUMN: no table rebuild of a million sessions.
    op.add_column("transactions", sa.Column("fleet_id", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE transactions SET fleet_id = "
        "(SELECT edges.fleet_id FROM edges WHERE edges.id = transactions.edge_id)"
    )
    op.create_index(
        FLEET_SESSIONS_INDEX,
        "transactions",
        ["fleet_id", "session_at", "edge_id", "transaction_id"],
        unique=False,
    )
    op.create_table(
        "repricing",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fleet_id", sa.Integer(), nullable=True),
        sa.Column("edge_id", sa.String(length=64), nullable=True),
        sa.Column("since", TIME, nullable=False),
        sa.Column("after_session_at", TIME, nullable=True),
        sa.Column("after_edge_id", sa.String(length=64), nullable=True),
        sa.Column("after_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("repriced", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repricing")),
    )
    op.create_table(
        "fleet_alert_settings",
        sa.Column("fleet_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("edge_offline_after", sa.Float(), nullable=True),
        sa.Column("backlog_older_than", sa.Float(), nullable=True),
        sa.Column("faulted_after", sa.Float(), nullable=True),
        sa.Column("refusals_count", sa.Integer(), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("webhook_secret", sa.Text(), nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fleet_id"], ["fleets.id"], name=op.f("fk_fleet_alert_settings_fleet_id_fleets")
        ),
        sa.PrimaryKeyConstraint("fleet_id", name=op.f("pk_fleet_alert_settings")),
    )


def downgrade() -> None:
    op.drop_table("fleet_alert_settings")
    op.drop_table("repricing")
    op.drop_index(FLEET_SESSIONS_INDEX, table_name="transactions")
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("fleet_id")
    with op.batch_alter_table("tariffs") as batch:
        batch.drop_constraint(op.f("fk_tariffs_fleet_id_fleets"), type_="foreignkey")
        batch.drop_column("fleet_id")
        batch.drop_column("valid_until")
