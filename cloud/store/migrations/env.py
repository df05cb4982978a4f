"""Alembic's environment: migrations run on the connection open_store hands over (in
its transaction), never on one of their own."""

from __future__ import annotations

from alembic import context

from cloud.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through cloud.store.database.migrate(engine)")
# Batch mode lets later migrations alter SQLite tables (copy and move).
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
