"""The charger page's command forms read into the arguments the edge runs."""

from __future__ import annotations

import pytest

from cloud.web.command_forms import CommandFormError, command_arguments, expiry_minutes


@pytest.mark.parametrize(
    ("action", "form", "arguments"),
    [
        ("remote_start", {"id_tag": " CARD-7 ", "connector_id": ""}, {"id_tag": "CARD-7"}),
        (
            "remote_start",
            {"id_tag": "CARD-7", "connector_id": "2"},
            {"id_tag": "CARD-7", "connector_id": 2},
        ),
        ("remote_stop", {"transaction_id": "41"}, {"transaction_id": 41}),
        ("reset", {"type": "Hard"}, {"type": "Hard"}),
        (
            "change_availability",
            {"connector_id": "0", "type": "Inoperative"},
            {"connector_id": 0, "type": "Inoperative"},
        ),
        ("unlock", {"connector_id": "1"}, {"connector_id": 1}),
        ("trigger", {"requested_message": "Heartbeat"}, {"requested_message": "Heartbeat"}),
        (
            "trigger",
            {"requested_message": "StatusNotification", "connector_id": "1"},
            {"requested_message": "StatusNotification", "connector_id": 1},
        ),
    ],
)
def test_each_form_makes_the_edges_arguments(
    action: str, form: dict[str, str], arguments: dict[str, object]
) -> None:
    # Fields of the other forms (sent empty) are not passed on.
    empty = {
        "id_tag": "",
        "connector_id": "",
        "transaction_id": "",
        "type": "",
        "requested_message": "",
    }
    assert command_arguments(action, empty | form) == (action, arguments)


@pytest.mark.parametrize(
    ("action", "form", "named"),
    [
        ("remote_start", {"id_tag": "CARD\n7"}, "id tag"),
        ("remote_stop", {"transaction_id": "1e3"}, "transaction id"),
        ("unlock", {"connector_id": "0"}, "connector id"),
        ("unlock", {"connector_id": "99999999999"}, "connector id"),
        ("change_availability", {"connector_id": "1", "type": "operative"}, "type is one of"),
        ("ocpp", {}, "not a command this page sends"),
    ],
)
def test_a_field_that_cannot_be_sent_is_named(
    action: str, form: dict[str, str], named: str
) -> None:
    with pytest.raises(CommandFormError, match=named):
        command_arguments(action, form)


def test_a_command_waits_one_of_the_offered_times() -> None:
    assert expiry_minutes("15") == 15
    for text in ("0", "61", "-15", "x", ""):
        with pytest.raises(CommandFormError):
            expiry_minutes(text)
