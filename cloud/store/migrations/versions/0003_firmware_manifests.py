"""Signed firmware manifests: the manifest an image's signature covers, offers forced
past a newer version, the `fetched` stage, and each charger's installs
(cloud/store/schema.py, `firmware_images`, `firmware_status`, `firmware_installs`).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
OLD_STATES = "('offered', 'downloading', 'verified', 'rejected', 'installing', 'failed')"
NEW_STATES = "('offered', 'downloading', 'fetched', 'verified', 'rejected', 'installing', 'failed')"


def upgrade() -> None:
    # Images added before manifests keep a NULL one: they are not offered again until
    # added again (docs/cloud.md, "Firmware, for operators").
    op.add_column("firmware_images", sa.Column("manifest", sa.Text(), nullable=True))
    # SQLite cannot alter a CHECK constraint: the batch copies the table.
    with op.batch_alter_table("firmware_status", recreate="always") as batch:
        batch.add_column(
            sa.Column("forced", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.drop_constraint(op.f("ck_firmware_status_status"), type_="check")
        batch.create_check_constraint(op.f("ck_firmware_status_status"), f"status IN {NEW_STATES}")
    op.create_table(
        "firmware_installs",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("charger_id", sa.Text(), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("command_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("installed_image", sa.Text(), nullable=True),
        sa.Column("installed_version", sa.Text(), nullable=True),
        sa.Column("installed_at", TIME, nullable=True),
        sa.CheckConstraint(
            "status IN ('refused', 'installing', 'installed', 'failed')",
            name=op.f("ck_firmware_installs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["edge_id"], ["edges.id"], name=op.f("fk_firmware_installs_edge_id_edges")
        ),
        sa.PrimaryKeyConstraint("edge_id", "charger_id", name=op.f("pk_firmware_installs")),
    )


def downgrade() -> None:
    op.drop_table("firmware_installs")
    op.execute("DELETE FROM firmware_status WHERE status = 'fetched'")
    with op.batch_alter_table("firmware_status", recreate="always") as batch:
        batch.drop_constraint(op.f("ck_firmware_status_status"), type_="check")
        batch.create_check_constraint(op.f("ck_firmware_status_status"), f"status IN {OLD_STATES}")
        batch.drop_column("forced")
    op.drop_column("firmware_images", "manifest")
