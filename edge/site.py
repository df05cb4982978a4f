"""The site's shared context: what every feature of a running edge is given, explicitly,
by the composition root (edge/app.py) — the OCPP settings, the store, the outbox, the
event bus, the site CA and a narrow view of the connected chargers. Features take this,
never the OCPP server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from edge.certificates import SiteCA
from edge.events import NoOutbox, SiteEvents, SiteOutbox
from edge.ocpp.data_transfer import DataTransferHandlers
from edge.ocpp.limits import Allowances
from edge.ocpp.local_list_plan import LocalListCache
from edge.settings import AuthorizationSettings, OcppSettings
from edge.store.writer import StoreWriter


class Chargers(Protocol):
    """The chargers connected now, as the site's features need them."""

    def is_connected(self, charger_id: str) -> bool: ...

    def is_accepted(self, charger_id: str) -> bool:
        """Connected, and its registration accepted (a pending charger is told nothing)."""
        ...

    def connected_ids(self) -> tuple[str, ...]: ...

    async def send(
        self, charger_id: str, action: str, payload: dict[str, Any], *, text: str | None = None
    ) -> dict[str, Any]:
        """Call the charger (`payload` already valid; `text`, when given, is its JSON as
        sent) and return its valid CALLRESULT payload; raise `edge.ocpp.session.CallFailed`
        otherwise (`ConnectionLost` when it is not connected). The caller bounds the wait."""
        ...


@dataclass
class SiteContext:
    """What every session and feature shares: settings, the store, plug-ins."""

    settings: OcppSettings
    store: StoreWriter
    chargers: Chargers
    data_transfer: DataTransferHandlers = field(default_factory=DataTransferHandlers)
    # Signs chargers' CSRs (security whitepaper); None: requests are rejected.
    certificate_authority: SiteCA | None = None
    authorization: AuthorizationSettings = field(default_factory=AuthorizationSettings)
    # Events for the cloud, appended in the same unit of work as the change they report.
    outbox: SiteOutbox = field(default_factory=NoOutbox)
    # What happened (transactions, meter readings, status), for the parts that react.
    events: SiteEvents = field(default_factory=SiteEvents)
    # Each charger id's frame budget and message-log share, across its connections.
    allowances: Allowances = field(default_factory=Allowances)
    # The card table as local-list entries, made once per version for every charger.
    local_lists: LocalListCache = field(default_factory=LocalListCache)
