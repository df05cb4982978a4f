"""Web sessions kept in the store, one row per sign-in (ended one at a time, or all of a
user's), and sign-in attempts counted in the store per client address and per account so
that the limit holds across replicas (cloud/store/schema.py: `web_sessions`,
`sign_in_attempts`). `users.sessions_revoked_at` goes: sessions started before this step
carry no session id and end (their users sign in again).

Revision ID: 0014
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Every session from before ends: its cookie names no row. (Before the table that
    # refers to `users`: SQLite drops the column by rebuilding the table.)
    with op.batch_alter_table("users") as batch:
        batch.drop_column("sessions_revoked_at")
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("secret_digest", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("last_seen_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_web_sessions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("secret_digest", name=op.f("uq_web_sessions_secret_digest")),
    )
    op.create_index(
        op.f("ix_web_sessions_user_id_started_at"), "web_sessions", ["user_id", "started_at"]
    )
    op.create_index(op.f("ix_web_sessions_expires_at"), "web_sessions", ["expires_at"])
    op.create_table(
        "sign_in_attempts",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("key_digest", sa.String(length=64), nullable=False),
        sa.Column("window_start", TIME, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "scope IN ('address', 'account')", name=op.f("ck_sign_in_attempts_scope")
        ),
        sa.PrimaryKeyConstraint("scope", "key_digest", name=op.f("pk_sign_in_attempts")),
    )
    op.create_index(op.f("ix_sign_in_attempts_window_start"), "sign_in_attempts", ["window_start"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("sessions_revoked_at", TIME, nullable=True))
    op.drop_index(op.f("ix_sign_in_attempts_window_start"), table_name="sign_in_attempts")
    op.drop_table("sign_in_attempts")
    op.drop_index(op.f("ix_web_sessions_expires_at"), table_name="web_sessions")
    op.drop_index(op.f("ix_web_sessions_user_id_started_at"), table_name="web_sessions")
    op.drop_table("web_sessions")
