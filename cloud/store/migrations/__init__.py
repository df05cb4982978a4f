"""Alembic migrations of the aggregator's store, run by cloud.store.database.open_store."""
