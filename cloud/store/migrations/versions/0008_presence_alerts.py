"""Presence history, alerts, refusals counted over time, and who asked for each command
(cloud/store/schema.py).

Existing edges start their history with the state they were last known in, at the time
of their last status: the cloud kept no earlier changes.

Revision ID: 0008
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ALERT_KINDS = ("edge_offline", "backlog_old", "connector_faulted", "refusals_spike")
ALERT_NOTICES = ("none", "raised", "cleared")
OPEN = sa.text("cleared_at IS NULL")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    # Plain ADD COLUMN: `edges` is every other table's parent (see 0005).
    op.add_column("edges", sa.Column("state_since", TIME, nullable=True))
    op.add_column("commands", sa.Column("actor", sa.Text(), nullable=True))
    op.create_table(
        "edge_presence",
        sa.Column("id", ID, nullable=False),
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["edge_id"], ["edges.id"], name=op.f("fk_edge_presence_edge_id_edges")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edge_presence")),
    )
    op.create_index(
        op.f("ix_edge_presence_edge_id_id"), "edge_presence", ["edge_id", "id"], unique=False
    )
    op.create_table(
        "alerts",
        sa.Column("id", ID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("charger_id", sa.Text(), nullable=True),
        sa.Column("connector_id", sa.BigInteger(), nullable=True),
        sa.Column("since", TIME, nullable=False),
        sa.Column("raised_at", TIME, nullable=False),
        sa.Column("cleared_at", TIME, nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("clear_reason", sa.Text(), nullable=True),
        sa.Column("notified", sa.String(length=16), nullable=False, server_default="none"),
        sa.Column("notify_after", TIME, nullable=True),
        sa.Column("notify_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("notify_error", sa.Text(), nullable=True),
        sa.CheckConstraint(_one_of("kind", ALERT_KINDS), name=op.f("ck_alerts_kind")),
        sa.CheckConstraint(_one_of("notified", ALERT_NOTICES), name=op.f("ck_alerts_notified")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(
        "uq_alerts_open",
        "alerts",
        ["kind", "edge_id", "subject"],
        unique=True,
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )
    op.create_index(op.f("ix_alerts_raised_at"), "alerts", ["raised_at"], unique=False)
    op.create_index(op.f("ix_alerts_notify_after"), "alerts", ["notify_after"], unique=False)
    op.create_table(
        "refusal_counts",
        sa.Column("bucket", TIME, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "source", name=op.f("pk_refusal_counts")),
    )
    op.execute("UPDATE edges SET state_since = status_at WHERE state <> 'unknown'")
    op.execute(
        "INSERT INTO edge_presence (edge_id, online, at) "
        "SELECT id, state = 'online', status_at FROM edges "
        "WHERE state <> 'unknown' AND status_at IS NOT NULL ORDER BY id"
    )


def downgrade() -> None:
    op.drop_table("refusal_counts")
    op.drop_index("uq_alerts_open", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("edge_presence")
    op.drop_column("commands", "actor")
    op.drop_column("edges", "state_since")
