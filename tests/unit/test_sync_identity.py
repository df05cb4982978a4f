"""The enrolled identity in the settings: `identity.toml` in `[sync] identity_directory`
fills the [sync] keys that the config file and the environment leave out, and a damaged
one is named with the key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.config_files import ConfigError
from edge.settings import load_settings

KEY = "q4Nn9hZ8d3I4wN6y3GmW0vq8l1bQ2ZrB7mK0sJ9cV1A="
IDENTITY = f"""# written by ocpp-edge enroll
[sync]
edge_id = "site-7"
broker_host = "mqtt.example.net"
broker_port = 8883
tls_ca = "/var/lib/ocpp-edge/sync-identity/x/broker-ca.crt"
tls_certificate = "/var/lib/ocpp-edge/sync-identity/x/edge.crt"
tls_private_key = "/var/lib/ocpp-edge/sync-identity/x/edge.key"
topic_prefix = "fleet-a/v1"
firmware_public_key = "{KEY}"
"""


def site(tmp_path: Path, config: str = "", identity: str = IDENTITY) -> Path:
    directory = tmp_path / "state" / "sync-identity"
    directory.mkdir(parents=True)
    (directory / "identity.toml").write_text(identity)
    path = tmp_path / "config.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "state" / "edge.db"}"\n{config}')
    return path


def test_the_identity_fills_what_the_config_file_leaves_out(tmp_path: Path) -> None:
    sync = load_settings(site(tmp_path, "[sync]\nkeepalive = 10\n")).sync
    assert (sync.edge_id, sync.broker_host, sync.broker_port) == (
        "site-7",
        "mqtt.example.net",
        8883,
    )
    assert sync.tls_private_key == Path("/var/lib/ocpp-edge/sync-identity/x/edge.key")
    assert (sync.topic_prefix, sync.firmware_public_key, sync.keepalive) == ("fleet-a/v1", KEY, 10)
    assert sync.enabled


def test_the_config_file_wins_and_the_environment_wins_over_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = site(tmp_path, '[sync]\nbroker_host = "10.0.0.5"\nbroker_port = 18883\n')
    monkeypatch.setenv("OCPP_EDGE_SYNC__BROKER_PORT", "28883")
    sync = load_settings(path).sync
    assert (sync.edge_id, sync.broker_host, sync.broker_port) == ("site-7", "10.0.0.5", 28883)


def test_without_identity_or_asked_not_to_the_settings_are_the_files_own(tmp_path: Path) -> None:
    path = site(tmp_path)
    assert load_settings(path, with_identity=False).sync.edge_id == ""
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(f'[store]\npath = "{tmp_path / "edge.db"}"\n')
    assert not load_settings(elsewhere).sync.enabled


def test_an_absolute_identity_directory_is_taken_as_it_is(tmp_path: Path) -> None:
    path = site(tmp_path)
    moved = tmp_path / "moved"
    (tmp_path / "state" / "sync-identity").rename(moved)
    path.write_text(path.read_text() + f'[sync]\nidentity_directory = "{moved}"\n')
    assert load_settings(path).sync.edge_id == "site-7"


def test_a_bad_value_in_the_identity_names_its_file_key_and_line(tmp_path: Path) -> None:
    identity = IDENTITY.replace("broker_port = 8883", 'broker_port = "tls"')
    with pytest.raises(ConfigError) as raised:
        load_settings(site(tmp_path, identity=identity))
    message = str(raised.value)
    identity_file = tmp_path / "state" / "sync-identity" / "identity.toml"
    assert f"{identity_file}:5: sync.broker_port = 'tls'" in message


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ('[sync]\nedge_id = "a"\npassword = "x"\n', "[sync] password cannot be set by an identity"),
        ('[sync]\nedge_id = "a"\n[ocpp]\nport = 1\n', "holds a [sync] section and nothing else"),
        ("[sync\n", "not valid TOML"),
    ],
)
def test_an_identity_holds_who_and_where_and_nothing_else(
    tmp_path: Path, identity: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_settings(site(tmp_path, identity=identity))
