"""Firmware campaigns: an image rolled out to a fleet's edges and their matching chargers,
one row per target with its stage and times, and the fleets that uploaded each image from
the web view (cloud/store/schema.py). Images added before this step belong to no fleet:
every fleet may roll them out, as images added through the API or the command line.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
# Written out here, not imported, so that this step stays what it was.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
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


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    op.create_table(
        "firmware_campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet_id", sa.Integer(), nullable=False),
        sa.Column("image", sa.String(length=128), nullable=False),
        sa.Column("targets", JSON, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("state_at", TIME, nullable=False),
        sa.Column("state_by", sa.Text(), nullable=True),
        sa.CheckConstraint(
            _one_of("state", CAMPAIGN_STATES), name=op.f("ck_firmware_campaigns_state")
        ),
        sa.ForeignKeyConstraint(
            ["fleet_id"], ["fleets.id"], name=op.f("fk_firmware_campaigns_fleet_id_fleets")
        ),
        sa.ForeignKeyConstraint(
            ["image"],
            ["firmware_images.name"],
            name=op.f("fk_firmware_campaigns_image_firmware_images"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_firmware_campaigns")),
    )
    op.create_index(
        op.f("ix_firmware_campaigns_fleet_id_id"), "firmware_campaigns", ["fleet_id", "id"]
    )
    op.create_table(
        "campaign_targets",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("charger_id", sa.Text(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("command_id", sa.String(length=64), nullable=True),
        sa.Column("stage_at", TIME, nullable=False),
        sa.Column("offered_at", TIME, nullable=True),
        sa.Column("fetched_at", TIME, nullable=True),
        sa.Column("verified_at", TIME, nullable=True),
        sa.Column("installing_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.CheckConstraint(
            _one_of("stage", CAMPAIGN_STAGES), name=op.f("ck_campaign_targets_stage")
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["firmware_campaigns.id"],
            name=op.f("fk_campaign_targets_campaign_id_firmware_campaigns"),
        ),
        sa.ForeignKeyConstraint(
            ["edge_id"], ["edges.id"], name=op.f("fk_campaign_targets_edge_id_edges")
        ),
        sa.PrimaryKeyConstraint(
            "campaign_id", "edge_id", "charger_id", name=op.f("pk_campaign_targets")
        ),
    )
    op.create_index(
        op.f("ix_campaign_targets_edge_id_campaign_id"),
        "campaign_targets",
        ["edge_id", "campaign_id"],
    )
    op.create_table(
        "firmware_image_fleets",
        sa.Column("image", sa.String(length=128), nullable=False),
        sa.Column("fleet_id", sa.Integer(), nullable=False),
        sa.Column("added_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["image"],
            ["firmware_images.name"],
            name=op.f("fk_firmware_image_fleets_image_firmware_images"),
        ),
        sa.ForeignKeyConstraint(
            ["fleet_id"], ["fleets.id"], name=op.f("fk_firmware_image_fleets_fleet_id_fleets")
        ),
        sa.PrimaryKeyConstraint("image", "fleet_id", name=op.f("pk_firmware_image_fleets")),
    )


def downgrade() -> None:
    op.drop_table("firmware_image_fleets")
    op.drop_index(op.f("ix_campaign_targets_edge_id_campaign_id"), table_name="campaign_targets")
    op.drop_table("campaign_targets")
    op.drop_index(op.f("ix_firmware_campaigns_fleet_id_id"), table_name="firmware_campaigns")
    op.drop_table("firmware_campaigns")
