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
    for column in ("chargers_total", "chargers_disconnected", "connectors_faulted"):
        op.add_column(
            "edges", sa.Column(column, sa.BigInteger(), nullable=False, server_default="0")
        )
    op.add_column("edges", sa.Column("connector_counts", JSON, nullable=True))
    op.execute(f"UPDATE edges SET fleet_id = {DEFAULT_FLEET_ID}")
    _count_chargers(op.get_bind())
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
    for column in (
        "connector_counts",
        "connectors_faulted",
        "chargers_disconnected",
        "chargers_total",
        "revision",
        "location",
        "site_name",
        "fleet_id",
    ):
        # SQLite drops a referencing column only by rebuilding the table.
        with op.batch_alter_table("edges") as batch:
            batch.drop_column(column)
    op.drop_table("fleets")


def _count_chargers(connection: sa.Connection) -> None:
    """The counts ingest keeps from now on, for the edges already stored (as
    cloud/store/overview.py, refresh_charger_counts, makes them)."""
    edges = sa.table(
        "edges",
        sa.column("id"),
        sa.column("chargers_total"),
        sa.column("chargers_disconnected"),
        sa.column("connectors_faulted"),
        sa.column("connector_counts", JSON),
    )
    chargers = sa.table("chargers", sa.column("edge_id"), sa.column("connected"))
    connectors = sa.table(
        "connectors", sa.column("edge_id"), sa.column("status"), sa.column("error_code")
    )
    charger_counts: dict[str, tuple[int, int]] = {}
    for edge_id, total, disconnected in connection.execute(
        sa.select(
            chargers.c.edge_id,
            sa.func.count(),
            sa.func.sum(sa.case((chargers.c.connected.is_(False), 1), else_=0)),
        ).group_by(chargers.c.edge_id)
    ):
        charger_counts[edge_id] = (int(total), int(disconnected or 0))
    by_status: dict[str, dict[str, int]] = {}
    faulted: dict[str, int] = {}
    faulty = (connectors.c.status == "Faulted") | (connectors.c.error_code != "NoError")
    for edge_id, status, count, faulty_count in connection.execute(
        sa.select(
            connectors.c.edge_id,
            connectors.c.status,
            sa.func.count(),
            sa.func.sum(sa.case((faulty, 1), else_=0)),
        ).group_by(connectors.c.edge_id, connectors.c.status)
    ):
        by_status.setdefault(edge_id, {})[status] = int(count)
        faulted[edge_id] = faulted.get(edge_id, 0) + int(faulty_count)
    for edge_id in charger_counts.keys() | by_status.keys():
        total, disconnected = charger_counts.get(edge_id, (0, 0))
        connection.execute(
            sa.update(edges)
            .where(edges.c.id == edge_id)
            .values(
                chargers_total=total,
                chargers_disconnected=disconnected,
                connectors_faulted=faulted.get(edge_id, 0),
                connector_counts=by_status.get(edge_id, {}),
            )
        )
