"""The operator command forms of the charger page, read into the arguments the edge
runs (edge/sync/commands.py turns them into the OCPP request): every field checked here,
with a sentence a person can act on when it is wrong."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contract.operator_actions import OperatorAction

# The actions the page offers (a firmware rollout and raw OCPP stay with the API).
FORM_ACTIONS: tuple[OperatorAction, ...] = (
    "remote_start",
    "remote_stop",
    "reset",
    "change_availability",
    "unlock",
    "trigger",
)
RESET_TYPES = ("Soft", "Hard")
AVAILABILITY_TYPES = ("Operative", "Inoperative")
TRIGGER_MESSAGES = (
    "BootNotification",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StatusNotification",
)
# How long a command may wait for its edge, in minutes, as the form offers them.
EXPIRY_CHOICES = (15, 60, 24 * 60)
MAX_ID_TAG = 20  # OCPP 1.6 IdToken: CiString20
MAX_INTEGER = 2**31 - 1  # OCPP integers


class CommandFormError(ValueError):
    """A form field that cannot make the command; the message names it."""


def command_arguments(
    action: str, form: Mapping[str, str]
) -> tuple[OperatorAction, dict[str, Any]]:
    """The action and its arguments from the form's fields (empty fields are absent)."""
    if action not in FORM_ACTIONS:
        raise CommandFormError(f"{action[:40]!r} is not a command this page sends")
    fields = {key: value.strip() for key, value in form.items() if value.strip()}
    chosen: OperatorAction = next(known for known in FORM_ACTIONS if known == action)
    if chosen == "remote_start":
        id_tag = fields.get("id_tag", "")
        if not 1 <= len(id_tag) <= MAX_ID_TAG or not id_tag.isprintable():
            raise CommandFormError(f"the card (id tag) is 1 to {MAX_ID_TAG} printable characters")
        arguments: dict[str, Any] = {"id_tag": id_tag}
        if "connector_id" in fields:
            arguments["connector_id"] = _integer(fields, "connector_id", least=1)
        return chosen, arguments
    if chosen == "remote_stop":
        return chosen, {"transaction_id": _integer(fields, "transaction_id", least=0)}
    if chosen == "reset":
        return chosen, {"type": _one_of(fields, "type", RESET_TYPES)}
    if chosen == "change_availability":
        return chosen, {
            "connector_id": _integer(fields, "connector_id", least=0),
            "type": _one_of(fields, "type", AVAILABILITY_TYPES),
        }
    if chosen == "unlock":
        return chosen, {"connector_id": _integer(fields, "connector_id", least=1)}
    arguments = {"requested_message": _one_of(fields, "requested_message", TRIGGER_MESSAGES)}
    if "connector_id" in fields:
        arguments["connector_id"] = _integer(fields, "connector_id", least=1)
    return chosen, arguments


def expiry_minutes(text: str) -> int:
    try:
        minutes = int(text)
    except ValueError:
        minutes = -1
    if minutes not in EXPIRY_CHOICES:
        raise CommandFormError(f"the command waits {', '.join(map(str, EXPIRY_CHOICES))} minutes")
    return minutes


def _integer(fields: Mapping[str, str], name: str, least: int) -> int:
    text = fields.get(name, "")
    label = name.replace("_", " ")
    if (
        not (text.isascii() and text.isdigit())
        or len(text) > 10
        or not least <= int(text) <= MAX_INTEGER
    ):
        raise CommandFormError(f"the {label} is a whole number from {least}")
    return int(text)


def _one_of(fields: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = fields.get(name, "")
    if value not in choices:
        raise CommandFormError(f"the {name.replace('_', ' ')} is one of {', '.join(choices)}")
    return value
