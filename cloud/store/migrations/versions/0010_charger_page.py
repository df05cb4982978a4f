"""The charger page: each connector status an edge reports, kept (a bounded number per
charger) as the charger's status history (cloud/store/status_history.py). Statuses
stored before this step are not copied: the history starts with the next one.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "connector_history",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("charger_id", sa.Text(), nullable=False),
        sa.Column("connector_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error_code", sa.Text(), nullable=False),
        sa.Column("info", sa.Text(), nullable=True),
        sa.Column("at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["edge_id"], ["edges.id"], name=op.f("fk_connector_history_edge_id_edges")
        ),
        sa.PrimaryKeyConstraint("edge_id", "seq", name=op.f("pk_connector_history")),
    )
    op.create_index(
        op.f("ix_connector_history_edge_id_charger_id_seq"),
        "connector_history",
        ["edge_id", "charger_id", "seq"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_connector_history_edge_id_charger_id_seq"), table_name="connector_history"
    )
    op.drop_table("connector_history")
