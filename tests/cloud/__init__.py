"""Tests of the cloud aggregator: settings, and the store on SQLite and PostgreSQL."""
