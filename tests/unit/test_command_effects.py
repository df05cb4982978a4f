"""The effects registered per command: only commands a central system sends."""

from __future__ import annotations

from edge.ocpp import command_effects
from edge.ocpp.commands import CSMS_INITIATED


def test_effects_are_registered_only_for_commands_the_edge_sends() -> None:
    registered = (
        set(command_effects._PREPARES)
        | set(command_effects._REQUESTS)
        | set(command_effects._ANSWERS)
    )
    assert registered <= set(CSMS_INITIATED)
    assert "SendLocalList" in command_effects._PREPARES
    assert "GetInstalledCertificateIds" in command_effects._ANSWERS
