"""What the edge daemon and the cloud aggregator share, and nothing else: the wire protocol
(topics, payload models), the enrollment exchange, the settings-file loader, HTTP serving
and its guards, the MQTT client set-up, and a few helpers for daemons and command lines.

It imports neither `edge` nor `cloud` (import-linter holds that, see pyproject.toml), and
needs only pydantic at its base; `contract.http` needs uvicorn and starlette and
`contract.mqtt` needs aiomqtt, which both the `edge` and the `cloud` extras install."""
