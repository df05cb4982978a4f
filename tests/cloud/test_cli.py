"""`ocpp-cloud` from a shell: the fleet's key, card lists, firmware, commands, edges."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest

from cloud.cli import main
from cloud.store import desired
from cloud.store.database import open_store
from edge.sync.manifest import parse_public_keys


def test_the_operators_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "cloud.db"}"\n'
        f'[firmware]\ndirectory = "{tmp_path / "firmware"}"\n'
    )

    def cli(*arguments: str) -> tuple[int, str]:
        code = main([*arguments, "--config", str(config)])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, key = cli("key")
    assert code == 0 and len(key.strip()) == 44  # base64 of 32 bytes
    assert cli("key")[1] == key  # made once, then kept
    cards = tmp_path / "cards.json"
    cards.write_text(json.dumps([{"id_tag": "AA01"}, {"id_tag": "AA02", "status": "Blocked"}]))
    assert cli("cards", "site-1", str(cards)) == (0, "site-1: card list version 1 (2 cards)\n")
    cards.write_text('[{"id_tag": 5}]')
    code, out = cli("cards", "site-1", str(cards))
    assert code == 2 and "not a card list" in out
    image = tmp_path / "cp.bin"
    image.write_bytes(b"\x01" * 1000)
    code, out = cli("firmware", "add", str(image), "--version", "1.0")
    assert code == 2 and "--target VENDOR/MODEL" in out
    code, out = cli("firmware", "add", str(image), "--version", "1.0", "--target", "ACME")
    assert code == 2 and "write VENDOR/MODEL" in out
    arguments = ("--version", "1.0", "--target", "ACME/AC22*", "--target", "*/Wallbox")
    code, out = cli("firmware", "add", str(image), *arguments)
    assert code == 0 and "cp.bin 1.0: 1000 bytes" in out and "ACME/AC22*, */Wallbox" in out
    code, out = cli("firmware", "add", str(image), *arguments)  # again: the same image
    assert code == 0
    assert len(list((tmp_path / "firmware").iterdir())) == 1  # one file for it
    code, out = cli("firmware", "list")
    assert code == 0 and "ACME/AC22*, */Wallbox" in out
    # The fleet's key replaced: the manifests are signed again by the new one.
    key_file = next(tmp_path.glob("*.key"))
    key_file.rename(tmp_path / "old.key")
    code, out = cli("firmware", "resign")
    assert code == 0 and "1 manifests signed again" in out and "cp.bin" in out
    assert cli("firmware", "resign")[1].startswith("0 manifests")
    assert cli("firmware", "offer", "site-1", "--name", "cp.bin", "--force")[0] == 0
    code, out = cli("firmware", "offer", "site-1", "--name", "nothing.bin")
    assert code == 2 and "no firmware image" in out
    code, out = cli("command", "site-1", "CP1", "firmware_rollout", "--arg", "location=http://x")
    assert code != 0 and "not a location" in out
    assert cli("command", "site-1", "CP1", "reset", "--arg", "type=Soft")[0] == 0
    code, out = cli("command", "site-1", "CP1", "explode")
    assert code == 2 and "not a command" in out
    code, out = cli("edges")
    assert code == 0 and "site-1" in out
    engine = open_store(f"sqlite:///{tmp_path / 'cloud.db'}")
    offers = desired.offers_to_send(engine, "site-1")
    assert [(offer.image, offer.force) for offer in offers] == [("cp.bin", True)]
    new_key = parse_public_keys(cli("key")[1])
    assert offers[0].manifest is not None and new_key[0].key_id in offers[0].manifest
    (reset,) = desired.list_commands(engine, "site-1")
    assert reset["action"] == "reset" and reset["actor"] == f"cli:{getpass.getuser()}"
    engine.dispose()
