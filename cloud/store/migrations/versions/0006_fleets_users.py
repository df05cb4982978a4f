"""Fleets, users, the audit log and shared secrets for the fleet web view; each edge's
fleet, site name, location and change `revision` (cloud/store/schema.py).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
ROLES = ("viewer", "operator", "admin")
DEFAULT_FLEET_ID = 1


def upgrade() -> None:
    fleets = op.create_table(
        "fleets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleets")),
        sa.UniqueConstraint("name", name=op.f("uq_fleets_name")),
    )
    op.bulk_insert(
        fleets, [{"id": DEFAULT_FLEET_ID, "name": "default", "created_at": datetime.now(UTC)}]
    )
    if op.get_bind().dialect.name == "postgresql":
        # The explicit id above leaves the sequence behind it.
        op.execute("SELECT setval(pg_get_serial_sequence('fleets', 'id'), 1)")
    # Plain ADD COLUMN (as 0005): SQLite cannot rebuild `edges` while others refer to it,
    # nor add a referencing column with a non-NULL default, so the column is nullable and
    # filled here; every later insert sets it.
    if op.get_bind().dialect.name == "sqlite":
        # Alembic's add_column would ALTER the constraint separately, which SQLite lacks.
        op.execute(
            "ALTER TABLE edges ADD COLUMN fleet_id INTEGER "
            "CONSTRAINT fk_edges_fleet_id_fleets REFERENCES fleets (id)"
        )
    else:
        op.add_column(
            "edges",
            sa.Column(
                "fleet_id",
                sa.Integer(),
                sa.ForeignKey("fleets.id", name=op.f("fk_edges_fleet_id_fleets")),
                nullable=True,
            ),
        )
    op.add_column("edges", sa.Column("site_name", sa.Text(), nullable=True))
    op.add_column("edges", sa.Column("location", sa.Text(), nullable=True))
    op.add_column(
        "edges", sa.Column("revision", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.execute(f"UPDATE edges SET fleet_id = {DEFAULT_FLEET_ID}")
    op.create_index(op.f("ix_edges_fleet_id"), "edges", ["fleet_id"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("fleet_id", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("disabled_at", TIME, nullable=True),
        sa.Column("sessions_revoked_at", TIME, nullable=True),
        sa.CheckConstraint(
            f"role IN ({', '.join(repr(role) for role in ROLES)})", name=op.f("ck_users_role")
        ),
        sa.ForeignKeyConstraint(["fleet_id"], ["fleets.id"], name=op.f("fk_users_fleet_id_fleets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("fleet_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("detail", JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["fleet_id"], ["fleets.id"], name=op.f("fk_audit_log_fleet_id_fleets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_fleet_id_at"), "audit_log", ["fleet_id", "at"])
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_secrets")),
    )


def downgrade() -> None:
    op.drop_table("secrets")
    op.drop_index(op.f("ix_audit_log_fleet_id_at"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("users")
    op.drop_index(op.f("ix_edges_fleet_id"), table_name="edges")
    for column in ("revision", "location", "site_name", "fleet_id"):
        # SQLite drops a referencing column only by rebuilding the table.
        with op.batch_alter_table("edges") as batch:
            batch.drop_column(column)
    op.drop_table("fleets")
