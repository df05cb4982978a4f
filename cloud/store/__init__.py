"""The aggregator's store: one schema on SQLite or PostgreSQL (SQLAlchemy Core), migrated
with Alembic at start. `database` opens it; `ingest` takes the edges' events and presence;
`projections` keeps the views the events feed; `desired` holds what the cloud wants each
edge to have; `fleet` reads what the REST API shows."""
