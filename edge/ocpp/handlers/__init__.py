"""The session a connected charger gets: every handler, one class per feature profile."""

from edge.ocpp.handlers.core import CoreHandlers
from edge.ocpp.handlers.security import SecurityHandlers


class ChargerSession(CoreHandlers, SecurityHandlers):
    """A connected charger with a handler for each of its fourteen actions."""


__all__ = ["ChargerSession"]
