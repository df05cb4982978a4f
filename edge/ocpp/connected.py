"""The sessions of the chargers connected now, by charger id: the OCPP server registers
and removes them; the site's features see them only as `edge.site.Chargers`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge.ocpp.handlers import ChargerSession
from edge.ocpp.session import ConnectionLost


class ConnectedChargers:
    def __init__(self) -> None:
        self._sessions: dict[str, ChargerSession] = {}

    @property
    def sessions(self) -> Mapping[str, ChargerSession]:
        return self._sessions

    def register(self, charger_id: str, session: ChargerSession) -> ChargerSession | None:
        """`session` is the charger's now; the one it replaces, if any, is returned."""
        previous = self._sessions.get(charger_id)
        self._sessions[charger_id] = session
        return previous

    def remove(self, charger_id: str, session: ChargerSession) -> bool:
        """Forget `session` unless a newer connection replaced it; True if forgotten."""
        if self._sessions.get(charger_id) is not session:
            return False
        del self._sessions[charger_id]
        return True

    # -- edge.site.Chargers ----------------------------------------------------------

    def is_connected(self, charger_id: str) -> bool:
        return charger_id in self._sessions

    def is_accepted(self, charger_id: str) -> bool:
        session = self._sessions.get(charger_id)
        return session is not None and session.registration == "accepted"

    def connected_ids(self) -> tuple[str, ...]:
        return tuple(self._sessions)

    async def send(
        self, charger_id: str, action: str, payload: dict[str, Any], *, text: str | None = None
    ) -> dict[str, Any]:
        session = self._sessions.get(charger_id)
        if session is None:
            raise ConnectionLost(f"charger {charger_id} is not connected")
        return await session.call_charger(action, payload, text=text)
