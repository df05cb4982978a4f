"""Enrollment codes say whether they may replace an edge's identity, and when the
certificate issued with them expires (cloud/enrollment.py: an edge id with a live
identity is never enrolled again but by a code made for it).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("enrollment_codes") as table:
        table.add_column(
            sa.Column("replaces_identity", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        table.add_column(sa.Column("certificate_expires_at", TIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollment_codes") as table:
        table.drop_column("certificate_expires_at")
        table.drop_column("replaces_identity")
