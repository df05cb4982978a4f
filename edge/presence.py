"""Whether a charger is online, stale (connected but silent too long) or offline."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from edge.clock import parse_timestamp
from edge.settings import Settings


def presence(row: Mapping[str, object], settings: Settings, now: datetime) -> str:
    """online, stale (connected but silent past heartbeat + grace) or offline."""
    if not row["connected"]:
        return "offline"
    last_seen = row["last_seen_at"]
    limit = timedelta(seconds=settings.ocpp.heartbeat_interval + settings.ocpp.heartbeat_grace)
    if isinstance(last_seen, str) and now - parse_timestamp(last_seen) > limit:
        return "stale"
    return "online"
