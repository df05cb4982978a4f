"""Settings: TOML, environment overrides, and errors a person can act on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from contract.config_files import ConfigError
from edge.settings import Settings, find_config_file, load_settings

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def config_error(path: Path | None) -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    return str(raised.value)


def test_example_config_documents_exactly_the_defaults() -> None:
    assert load_settings(REPO / "config.example.toml") == Settings()


def test_bad_value_names_key_value_line_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path, '[ocpp]\nhost = "127.0.0.1"\n\nport = "nine thousand"\n')
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    message = str(error.value)
    assert f"{path}:4:" in message
    assert "ocpp.port" in message and "'nine thousand'" in message
    assert "integer" in message


def test_unknown_key_and_unknown_section_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[ocpp]\nprot = 9000\n\n[stor]\npath = "x"\n')
    message = config_error(path)
    assert f"{path}:2: ocpp.prot" in message
    assert f"{path}:4: stor" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_chargers_takes_only_the_three_modes(tmp_path: Path) -> None:
    path = write(tmp_path, '[ocpp]\nunknown_chargers = "maybe"\n')
    message = config_error(path)
    assert "ocpp.unknown_chargers" in message and "'reject', 'pending' or 'accept'" in message


def test_a_command_history_beyond_any_date_is_refused_naming_the_key(tmp_path: Path) -> None:
    """Kept days become a cut-off date: a million would overflow it in the pruning task."""
    path = write(tmp_path, "[store]\ncommand_history_days = 1000000\n")
    message = config_error(path)
    assert f"{path}:2: store.command_history_days" in message and "36500" in message


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[ocpp]\nport = = 9000\n")
    message = config_error(path)
    assert "not valid TOML" in message and "line 2" in message


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[ocpp]\nport = 9000\nheartbeat_interval = 120\n")
    monkeypatch.setenv("OCPP_EDGE_OCPP__PORT", "9100")
    monkeypatch.setenv("OCPP_EDGE_STORE__PATH", "/var/lib/ocpp-edge/edge.db")
    settings = load_settings(path)
    assert settings.ocpp.port == 9100
    assert settings.ocpp.heartbeat_interval == 120
    assert settings.store.path == Path("/var/lib/ocpp-edge/edge.db")


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCPP_EDGE_OCPP__PORT", "99999")
    message = config_error(None)
    assert "$OCPP_EDGE_OCPP__PORT: ocpp.port = '99999'" in message and "65535" in message


def test_config_file_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OCPP_EDGE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="does not exist"):
        find_config_file(tmp_path / "missing.toml")
    assert find_config_file(None) in (None, Path("/etc/ocpp-edge/config.toml"))
    write(tmp_path, "")
    assert find_config_file(None) == Path("config.toml")
    monkeypatch.setenv("OCPP_EDGE_CONFIG", str(tmp_path / "other.toml"))
    with pytest.raises(ConfigError, match="OCPP_EDGE_CONFIG"):
        find_config_file(None)


def test_every_reader_example_in_the_docs_is_a_valid_configuration(tmp_path: Path) -> None:
    text = (REPO / "docs" / "readers.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 6
    kinds = set()
    for block in blocks:
        settings = load_settings(write(tmp_path, block))
        kinds |= {reader.kind for reader in settings.readers}
    assert kinds == {"nfc", "rc522", "serial", "keyboard", "simulated"}


def test_reader_errors_name_the_reader_and_line(tmp_path: Path) -> None:
    text = '[[readers]]\nid = "a"\nkind = "nfc"\n\n[[readers]]\nid = "b"\nkind = "serial"\nbaud = "fast"\n'
    message = config_error(write(tmp_path, text))
    assert "config.toml:8: readers.1.baud = 'fast'" in message
    assert "readers.1.port: Field required" in message
    duplicate = (
        '[[readers]]\nid = "a"\nkind = "simulated"\n[[readers]]\nid = "a"\nkind = "simulated"\n'
    )
    assert "two readers have the id 'a'" in config_error(write(tmp_path, duplicate))


def test_the_shared_ftp_account_is_gone_with_a_sentence(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, '[files]\nftp_port = 2121\nftp_password = "secret8!"\n'))
    assert "files.ftp_password is gone" in message and "GetDiagnostics/GetLog" in message


def test_a_trusted_proxy_must_be_an_address_or_cidr(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, '[api]\ntrusted_proxies = ["10.0.0.0/8", "proxy"]\n'))
    assert "api" in message and "'proxy' is not an IP address or CIDR" in message
    path = write(tmp_path, '[api]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n')
    assert load_settings(path).api.trusted_proxies == ["10.0.0.0/8", "::1"]
