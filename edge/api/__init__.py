"""The local operator API (HTTP, OpenAPI) served on the daemon's own event loop."""
