"""The aggregator's settings: TOML, environment overrides, errors a person can act on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloud.settings import CloudSettings, find_config_file, load_settings
from contract.config_files import ConfigError
from contract.protocol import MAX_PAYLOAD_BYTES

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cloud.toml"
    path.write_text(text)
    return path


def config_error(path: Path | None) -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    return str(raised.value)


def test_example_documents_exactly_the_defaults() -> None:
    settings = load_settings(REPO / "cloud.example.toml")
    assert settings == CloudSettings()
    assert settings.store.url == "sqlite:///cloud.db"
    assert settings.mqtt.topic_prefix == "ocpp-edge/v1"
    assert settings.mqtt.share_group == "ocpp-cloud"
    assert settings.api.port == 8090
    assert settings.desired.resend_interval == 30.0
    assert settings.limits.max_payload_bytes == MAX_PAYLOAD_BYTES


def test_every_key_of_every_section_is_in_the_example() -> None:
    text = (REPO / "cloud.example.toml").read_text()
    for section_name, section in CloudSettings.model_fields.items():
        assert f"[{section_name}]" in text
        assert section.annotation is not None
        for key in section.annotation.model_fields:
            assert f"\n{key} = " in text or f"\n# {key} = " in text, f"{section_name}.{key}"


def test_bad_value_names_key_value_line_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nbroker_host = "broker"\n\nbroker_port = "eighteen"\n')
    message = config_error(path)
    assert f"{path}:4: mqtt.broker_port = 'eighteen'" in message and "integer" in message


def test_unknown_keys_and_sections_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\nurl = "sqlite:///x.db"\npath = "x"\n[cache]\nsize = 1\n')
    message = config_error(path)
    assert f"{path}:3: store.path" in message and f"{path}:4: cache" in message


def test_store_url_must_be_sqlite_with_a_file_or_postgresql(tmp_path: Path) -> None:
    assert "sqlite:///PATH or postgresql" in config_error(
        write(tmp_path, '[store]\nurl = "mysql://db/x"\n')
    )
    assert "SQLite needs a file" in config_error(write(tmp_path, '[store]\nurl = "sqlite://"\n'))


def test_postgresql_needs_the_shared_signing_key(tmp_path: Path) -> None:
    url = 'url = "postgresql+psycopg://cloud@db/cloud"'
    message = config_error(write(tmp_path, f"[store]\n{url}\n"))
    assert "set firmware.signing_key" in message
    path = write(tmp_path, f'[store]\n{url}\n[firmware]\nsigning_key = "/etc/fleet.key"\n')
    assert load_settings(path).signing_key_path() == Path("/etc/fleet.key")
    beside = load_settings(write(tmp_path, '[store]\nurl = "sqlite:////var/lib/c/cloud.db"\n'))
    assert beside.signing_key_path() == Path("/var/lib/c/fleet-signing.key")


def test_api_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, '[api]\nhost = "0.0.0.0"\n'))
    assert "set api.token" in message
    assert load_settings(write(tmp_path, '[api]\nhost = "0.0.0.0"\ntoken = "t"\n')).api.port == 8090


def test_the_alerts_webhook_is_an_http_url_with_a_host(tmp_path: Path) -> None:
    for url in (
        "ftp://hooks/x",
        "https://",
        "http://hooks/a b",
        "hooks.example.com/x",
        "http://hooks:99999/x",
    ):
        message = config_error(write(tmp_path, f'[alerts]\nwebhook_url = "{url}"\n'))
        assert "alerts.webhook_url" in message and "http:// or https:// URL" in message
    good = write(tmp_path, '[alerts]\nwebhook_url = "https://hooks.example.com/ocpp"\n')
    assert load_settings(good).alerts.webhook_url == "https://hooks.example.com/ocpp"


def test_mqtt_certificate_needs_its_key(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, '[mqtt]\ntls_certificate = "/c.crt"\n'))
    assert "mqtt.tls_private_key" in message


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[mqtt]\nbroker_host = "broker"\nbroker_port = 1883\n')
    monkeypatch.setenv("OCPP_CLOUD_MQTT__BROKER_PORT", "8883")
    monkeypatch.setenv("OCPP_CLOUD_STORE__URL", "sqlite:////var/lib/ocpp-cloud/cloud.db")
    settings = load_settings(path)
    assert settings.mqtt.broker_port == 8883 and settings.mqtt.broker_host == "broker"
    assert settings.store.url == "sqlite:////var/lib/ocpp-cloud/cloud.db"


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCPP_CLOUD_DESIRED__RESEND_INTERVAL", "-1")
    message = config_error(None)
    assert "$OCPP_CLOUD_DESIRED__RESEND_INTERVAL: desired.resend_interval = '-1'" in message


def test_config_file_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OCPP_CLOUD_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="does not exist"):
        find_config_file(tmp_path / "missing.toml")
    assert find_config_file(None) in (None, Path("/etc/ocpp-cloud/cloud.toml"))
    write(tmp_path, "")
    assert find_config_file(None) == Path("cloud.toml")
    monkeypatch.setenv("OCPP_CLOUD_CONFIG", str(tmp_path / "other.toml"))
    with pytest.raises(ConfigError, match="OCPP_CLOUD_CONFIG"):
        find_config_file(None)


def test_client_id_defaults_to_host_and_process() -> None:
    settings = CloudSettings()
    assert settings.mqtt.effective_client_id().endswith(f"-{os.getpid()}")
    assert CloudSettings(mqtt={"client_id": "replica-1"}).mqtt.effective_client_id() == "replica-1"
