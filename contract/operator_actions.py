"""What an operator may ask of a charger through the cloud: the one list the edge, the
aggregator, its API and its command line use. Plain Python (no pydantic), so the cloud's
command line can name the actions in its help without loading the wire models."""

from __future__ import annotations

from typing import Literal, get_args

OperatorAction = Literal[
    "remote_start",
    "remote_stop",
    "reset",
    "change_availability",
    "unlock",
    "trigger",
    "firmware_rollout",
    "ocpp",
]
OPERATOR_ACTIONS: tuple[OperatorAction, ...] = get_args(OperatorAction)

# The OCPP command that carries out each operator action that names one ("ocpp" carries
# its own; a firmware rollout is built by the edge's firmware checks).
OCPP_ACTION_OF: dict[OperatorAction, str] = {
    "remote_start": "RemoteStartTransaction",
    "remote_stop": "RemoteStopTransaction",
    "reset": "Reset",
    "change_availability": "ChangeAvailability",
    "unlock": "UnlockConnector",
    "trigger": "TriggerMessage",
}

__all__ = ["OCPP_ACTION_OF", "OPERATOR_ACTIONS", "OperatorAction"]
