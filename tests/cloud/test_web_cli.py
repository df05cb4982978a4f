"""`ocpp-cloud fleets`, `users` and `edges assign`: what an administrator runs to let
people into the fleet web view."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cloud.cli import main
from cloud.store.database import open_store
from cloud.store.overview import fleet_edges
from cloud.store.users import user_for_login
from cloud.web.passwords import verify_password


def test_an_administrator_sets_up_a_fleet_its_users_and_its_sites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "cloud.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "cloud.db"}"\n')

    def cli(*arguments: str, stdin: str = "") -> tuple[int, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main([*arguments, "--config", str(config)])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    assert cli("fleets", "add", "Acme") == (0, "fleet Acme (id 2)\n")
    code, out = cli("fleets", "add", "Acme")
    assert code == 2 and "there is a fleet named 'Acme' already" in out
    code, out = cli(
        "users",
        "add",
        "Ann@Acme.test",
        "--role",
        "operator",
        "--fleet",
        "Acme",
        "--password-stdin",
        stdin="a long enough secret\n",
    )
    assert (code, out) == (0, "ann@acme.test: operator of fleet Acme\n")
    code, out = cli(
        "users", "add", "bob@acme.test", "--fleet", "Acme", "--password-stdin", stdin="short\n"
    )
    assert code == 2 and "at least 10 characters" in out
    code, out = cli("users", "add", "not-an-address", "--fleet", "Acme", "--password-stdin")
    assert code == 2 and "is not an email address" in out
    code, out = cli("users", "add", "cy@acme.test", "--fleet", "Nowhere", "--password-stdin")
    assert code == 2 and "no fleet 'Nowhere'" in out
    code, out = cli(
        "edges", "assign", "depot-1", "Acme", "--name", "Depot North", "--location", "Lyon"
    )
    assert (code, out) == (0, "edge depot-1 is in fleet Acme\n")
    code, out = cli("fleets", "list")
    assert code == 0 and "Acme     1      1" in out
    code, out = cli("users", "list", "--fleet", "Acme")
    assert code == 0 and "ann@acme.test  operator  Acme" in out
    assert cli("users", "disable", "ann@acme.test")[0] == 0
    code, out = cli("users", "disable", "ann@acme.test")
    assert code == 2 and "disabled already" in out

    engine = open_store(f"sqlite:///{tmp_path / 'cloud.db'}")
    try:
        found = user_for_login(engine, "ann@acme.test")
        assert found is not None
        user, password_hash = found
        assert verify_password(password_hash, "a long enough secret")
        assert user.disabled_at is not None
        (edge,) = fleet_edges(engine, user.fleet_id)
        assert (edge.edge_id, edge.site_name, edge.location) == ("depot-1", "Depot North", "Lyon")
    finally:
        engine.dispose()
