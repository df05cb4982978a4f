"""One-time enrollment codes (cloud/store/schema.py, `enrollment_codes`).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "enrollment_codes",
        sa.Column("code_sha256", sa.String(length=64), nullable=False),
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("used_at", TIME, nullable=True),
        sa.Column("used_by", sa.Text(), nullable=True),
        sa.Column("certificate_serial", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("code_sha256", name=op.f("pk_enrollment_codes")),
    )


def downgrade() -> None:
    op.drop_table("enrollment_codes")
