"""Reading a firmware command from the cloud: the OCPP action however its keys are
spelled, the image it names, `force`, and the locations it may not name."""

from __future__ import annotations

from typing import Any

import pytest

from contract.protocol import OperatorCommand
from edge.sync.rollout import InstallRefused, firmware_command, is_firmware_command

NOW = "2026-01-01T00:00:00.000Z"


def command(action: str, arguments: dict[str, Any]) -> OperatorCommand:
    return OperatorCommand(
        id="c1", action=action, charger_id="CP1", arguments=arguments, expires_at=NOW
    )


def test_a_rollout_names_an_image_and_installs_at_once_unless_told_when() -> None:
    read = firmware_command(command("firmware_rollout", {"image": "a.bin"}), NOW)
    assert (read.action, read.image, read.arguments, read.force) == (
        "UpdateFirmware",
        "a.bin",
        {"retrieve_date": NOW},
        False,
    )
    later = command("firmware_rollout", {"image": "a.bin", "retrieveDate": "x", "force": True})
    read = firmware_command(later, NOW)
    assert read.arguments == {"retrieve_date": "x"} and read.force is True


@pytest.mark.parametrize(
    "arguments",
    [
        {"action": "UpdateFirmware", "arguments": {"image": "a.bin"}},
        {"Action": "UpdateFirmware", "Arguments": {"Image": "a.bin"}},
        {"action": "Reset", "Action": "UpdateFirmware", "arguments": {"image": "a.bin"}},
        {"action": "SignedUpdateFirmware", "arguments": {"image": "a.bin", "requestId": 1}},
    ],
)
def test_an_ocpp_command_is_a_firmware_command_however_spelled(arguments: dict[str, Any]) -> None:
    raw = command("ocpp", arguments)
    assert is_firmware_command(raw)
    assert firmware_command(raw, NOW).image == "a.bin"


@pytest.mark.parametrize(
    ("action", "arguments", "reason"),
    [
        ("firmware_rollout", {"location": "http://x"}, "may not name a location"),
        ("firmware_rollout", {"image": "a.bin", "Location": "http://x"}, "name a location"),
        (
            "ocpp",
            {"action": "SignedUpdateFirmware", "arguments": {"firmware": {"Location": "x"}}},
            "name a location",
        ),
        ("ocpp", {"action": "UpdateFirmware", "arguments": "x"}, "not an object"),
        ("ocpp", {"action": "UpdateFirmware", "arguments": {}}, "names the image"),
        ("firmware_rollout", {"image": 5}, "names the image"),
        ("firmware_rollout", {"image": "a.bin", "force": "yes"}, "force is true or false"),
    ],
)
def test_what_a_firmware_command_may_not_say(
    action: str, arguments: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InstallRefused, match=reason):
        firmware_command(command(action, arguments), NOW)


def test_other_commands_are_not_firmware_commands() -> None:
    assert not is_firmware_command(command("reset", {"type": "Soft"}))
    assert not is_firmware_command(command("ocpp", {"action": "GetDiagnostics"}))
    assert not is_firmware_command(command("ocpp", {"action": "updatefirmware"}))
