"""The cloud aggregator: ingest from the edges, store, fleet view."""
