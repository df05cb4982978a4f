"""The fleet's card list: each edge's latest card list one card a row (`edge_cards`, filled
here from the lists held), each card's revision within its fleet (`fleet_cards`) and the
fleet's `cards_revision`, and CSV imports waiting to be applied (`card_imports`).

Revision ID: 0012
Revises: 0010
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0014"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
DEFAULT_FLEET_ID = 1
# Rows written at once while filling edge_cards.
BATCH = 1000


def upgrade() -> None:
    op.add_column(
        "fleets",
        sa.Column("cards_revision", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "edge_cards",
        sa.Column("edge_id", sa.String(length=64), nullable=False),
        sa.Column("id_key", sa.Text(), nullable=False),
        sa.Column("id_tag", sa.Text(), nullable=False),
        sa.Column("fleet_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expiry_date", sa.Text(), nullable=True),
        sa.Column("parent_id_tag", sa.Text(), nullable=True),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("chargers", JSON, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["edge_id"], ["edges.id"], name=op.f("fk_edge_cards_edge_id_edges")
        ),
        sa.ForeignKeyConstraint(
            ["fleet_id"], ["fleets.id"], name=op.f("fk_edge_cards_fleet_id_fleets")
        ),
        sa.PrimaryKeyConstraint("edge_id", "id_key", name=op.f("pk_edge_cards")),
    )
    op.create_index(
        op.f("ix_edge_cards_fleet_id_id_key_edge_id_status"),
        "edge_cards",
        ["fleet_id", "id_key", "edge_id", "status"],
    )
    op.create_table(
        "fleet_cards",
        sa.Column("fleet_id", sa.Integer(), nullable=False),
        sa.Column("id_key", sa.Text(), nullable=False),
        sa.Column("id_tag", sa.Text(), nullable=False),
        sa.Column("sites", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("search", sa.Text(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", TIME, nullable=True),
        sa.Column("changed_by", sa.Text(), nullable=True),
        sa.Column("change", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["fleet_id"], ["fleets.id"], name=op.f("fk_fleet_cards_fleet_id_fleets")
        ),
        sa.PrimaryKeyConstraint("fleet_id", "id_key", name=op.f("pk_fleet_cards")),
    )
    op.create_index(
        op.f("ix_fleet_cards_fleet_id_revision"), "fleet_cards", ["fleet_id", "revision"]
    )
    op.create_table(
        "card_imports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("fleet_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=True),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("mark", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["fleet_id"], ["fleets.id"], name=op.f("fk_card_imports_fleet_id_fleets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_imports")),
    )
    op.create_index(op.f("ix_card_imports_created_at"), "card_imports", ["created_at"])
    _fill_edge_cards(op.get_bind())
    _fill_fleet_cards(op.get_bind())


def _fill_edge_cards(connection: sa.Connection) -> None:
    """Each edge's latest list, one card a row, in the edge's fleet."""
    card_lists = sa.table(
        "card_lists",
        sa.column("edge_id", sa.String()),
        sa.column("version", sa.Integer()),
        sa.column("document", JSON),
    )
    edges = sa.table("edges", sa.column("id", sa.String()), sa.column("fleet_id", sa.Integer()))
    edge_cards = sa.table(
        "edge_cards",
        *(
            sa.column(name)
            for name in (
                "edge_id",
                "id_key",
                "id_tag",
                "fleet_id",
                "status",
                "expiry_date",
                "parent_id_tag",
                "label",
                "version",
            )
        ),
        sa.column("chargers", JSON),
    )
    latest = (
        sa.select(card_lists.c.edge_id, sa.func.max(card_lists.c.version).label("version"))
        .group_by(card_lists.c.edge_id)
        .subquery()
    )
    heads = connection.execute(
        sa.select(latest.c.edge_id, latest.c.version, edges.c.fleet_id).join(
            edges, edges.c.id == latest.c.edge_id
        )
    ).all()
    for edge_id, version, fleet_id in heads:
        document = connection.execute(
            sa.select(card_lists.c.document).where(
                card_lists.c.edge_id == edge_id, card_lists.c.version == version
            )
        ).scalar_one()
        rows: dict[str, dict[str, Any]] = {}
        for entry in document or []:
            key = str(entry["id_tag"]).upper()
            rows.setdefault(
                key,
                {
                    "edge_id": edge_id,
                    "id_key": key,
                    "id_tag": entry["id_tag"],
                    "fleet_id": fleet_id or DEFAULT_FLEET_ID,
                    "status": entry.get("status") or "Accepted",
                    "expiry_date": entry.get("expiry_date"),
                    "parent_id_tag": entry.get("parent_id_tag"),
                    "label": entry.get("label"),
                    "chargers": entry.get("chargers") or None,
                    "version": version,
                },
            )
        values = list(rows.values())
        for start in range(0, len(values), BATCH):
            connection.execute(sa.insert(edge_cards), values[start : start + BATCH])


def _fill_fleet_cards(connection: sa.Connection) -> None:
    """A row per card of each fleet, with its sites counted and its text to search, as
    cloud/store/card_writes.py keeps them; revision 0: not changed since."""
    edge_cards = sa.table(
        "edge_cards",
        *(
            sa.column(name)
            for name in ("fleet_id", "id_key", "id_tag", "label", "parent_id_tag", "edge_id")
        ),
    )
    fleet_cards = sa.table(
        "fleet_cards",
        *(sa.column(name) for name in ("fleet_id", "id_key", "id_tag", "sites", "search")),
        sa.column("revision", sa.BigInteger()),
    )
    cards: dict[tuple[int, str], dict[str, Any]] = {}
    rows = connection.execute(
        sa.select(edge_cards).order_by(edge_cards.c.fleet_id, edge_cards.c.id_key)
    )
    for row in rows:
        card = cards.setdefault(
            (row.fleet_id, row.id_key),
            {"fleet_id": row.fleet_id, "id_key": row.id_key, "id_tag": row.id_tag, "texts": []},
        )
        card["texts"] += [row.id_tag, row.label, row.parent_id_tag]
        card["sites"] = card.get("sites", 0) + 1
    values = [
        {
            "fleet_id": card["fleet_id"],
            "id_key": card["id_key"],
            "id_tag": card["id_tag"],
            "sites": card["sites"],
            "search": "\n".join(dict.fromkeys(text.lower() for text in card["texts"] if text)),
            "revision": 0,
        }
        for card in cards.values()
    ]
    for start in range(0, len(values), BATCH):
        connection.execute(sa.insert(fleet_cards), values[start : start + BATCH])


def downgrade() -> None:
    op.drop_index(op.f("ix_card_imports_created_at"), table_name="card_imports")
    op.drop_table("card_imports")
    op.drop_index(op.f("ix_fleet_cards_fleet_id_revision"), table_name="fleet_cards")
    op.drop_table("fleet_cards")
    op.drop_index(op.f("ix_edge_cards_fleet_id_id_key_edge_id_status"), table_name="edge_cards")
    op.drop_table("edge_cards")
    op.drop_column("fleets", "cards_revision")
