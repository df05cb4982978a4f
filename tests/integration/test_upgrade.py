"""ocpp-edge-upgrade for real: wheels of the project built with other versions, installed by
the tool (run by the system's python3, offline from a wheelhouse) into a prefix of their
own, the daemon started from `PREFIX/venv` with a store and an identity beside it, a
charger's transactions recorded over OCPP before and after each switch.

Slow (a virtualenv per release: ~30 s each here); `pytest -m "not provisioning"` leaves
it out with the Ansible test.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from tests.mosquitto import Mosquitto, free_port
from tests.ocpp_client import RawCharger, now_iso
from tests.pins import CONSTRAINTS, closure, read_constraints
from tests.processes import cloud_daemon, wait_for_port

REPOSITORY = Path(__file__).resolve().parents[2]
TOOL = REPOSITORY / "ansible" / "roles" / "ocpp_edge" / "files" / "ocpp_edge_upgrade.py"
BUILD_WHEEL = REPOSITORY / "ansible" / "roles" / "ocpp_edge" / "files" / "build_wheel.py"
# The tool runs where the device's python3 is, outside any virtualenv.
SYSTEM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
# A device without a network: a proxy that refuses, and none of this machine's pip settings.
OFFLINE = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "PIP_NO_CACHE_DIR": "1",
}
LEFT_OUT = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "*.db*", "tests"
)
# A migration only the schema-changing test release has.
EXTRA_MIGRATION = (
    "0099_upgrade_test.sql",
    "CREATE TABLE upgrade_test_marker (id INTEGER PRIMARY KEY);\n",
)
# An older version of a small dependency, also in the wheelhouse: pip takes the newest it
# finds unless the constraints say otherwise.
OLDER_TOMLI_W = "1.0.0"

pytestmark = pytest.mark.provisioning


@dataclass(frozen=True)
class Wheels:
    first: Path  # 0.1.0
    second: Path  # 0.1.1+test, same schema
    migrating: Path  # 0.2.0+test, one more migration
    broken: Path  # 0.1.2+broken, its entry point fails
    house: Path  # the dependencies at the pinned versions (and one older), offline
    schema: int  # the schema version of first and second


def _build(source: Path, scratch: Path, version: str, change: str = "") -> Path:
    """A wheel of the project at `version`, with `change` applied to a copy of it."""
    copy = scratch / f"source-{version}"
    shutil.copytree(source, copy, ignore=LEFT_OUT, symlinks=True)
    project = copy / "pyproject.toml"
    text, count = re.subn(r'(?m)^version = ".*"$', f'version = "{version}"', project.read_text())
    assert count == 1
    project.write_text(text)
    migrations = copy / "edge" / "store" / "migrations"
    if change == "migration":
        last = max(int(path.name[:4]) for path in migrations.glob("*.sql"))
        name = EXTRA_MIGRATION[0].replace("0099", f"{last + 1:04d}")
        (migrations / name).write_text(EXTRA_MIGRATION[1])
    elif change == "broken":
        cli = copy / "edge" / "cli" / "__init__.py"
        cli.write_text(cli.read_text() + '\nraise RuntimeError("this release is broken")\n')
    result = subprocess.run(
        [sys.executable, str(BUILD_WHEEL), str(copy), str(scratch / f"wheel-{version}")],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    scratch = tmp_path_factory.mktemp("wheels")
    plans = [
        ("0.1.0", ""),
        ("0.1.1+test", ""),
        ("0.2.0+test", "migration"),
        ("0.1.2+broken", "broken"),
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        built = list(pool.map(lambda plan: _build(REPOSITORY, scratch, *plan), plans))
    house = scratch / "house"
    # The dependencies from this machine's pip (its cache is warm): what an installer
    # carries to a site without a network.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(house),
            "--constraint",
            str(CONSTRAINTS),
            f"{built[0]}[edge]",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--dest",
            str(house),
            f"tomli-w=={OLDER_TOMLI_W}",
        ],
        check=True,
        capture_output=True,
    )
    for wheel in house.glob("ocpp_edge-*.whl"):
        wheel.unlink()
    schema = len(list((REPOSITORY / "edge" / "store" / "migrations").glob("*.sql")))
    first, second, migrating, broken = built
    return Wheels(first, second, migrating, broken, house, schema)


@dataclass
class Device:
    """A prefix, a configuration directory and a state directory, as on a device."""

    directory: Path
    prefix: Path
    etc: Path
    state: Path
    config: Path
    port: int

    @property
    def store(self) -> Path:
        return self.state / "edge.db"

    def tool(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [SYSTEM_PYTHON, str(TOOL), *arguments]
        command += ["--prefix", str(self.prefix), "--config", str(self.config)]
        result = subprocess.run(command, env=OFFLINE, capture_output=True, text=True, timeout=600)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def install(
        self,
        wheel: Path,
        house: Path,
        *extra: str,
        constraints: Path = CONSTRAINTS,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self.tool(
            "install",
            str(wheel),
            "--wheelhouse",
            str(house),
            "--constraints",
            str(constraints),
            "--extras",
            "edge",
            *extra,
            check=check,
        )

    def installed_versions(self) -> dict[str, str]:
        """{canonical name: version} of the current release's distributions."""
        listed = subprocess.run(
            [
                str(self.prefix / "venv" / "bin" / "python"),
                "-m",
                "pip",
                "list",
                "--format=freeze",
                "--disable-pip-version-check",
            ],
            env=OFFLINE,
            capture_output=True,
            text=True,
            check=True,
        )
        versions = {}
        for line in listed.stdout.splitlines():
            name, version = line.split("==")
            versions[canonicalize_name(name)] = version
        return versions

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.tool("status", "--json").stdout)
        return report

    def current(self) -> str:
        return os.readlink(self.prefix / "venv")

    def identity_files(self) -> dict[str, str]:
        """Every file of the configuration and the identity, with its SHA-256."""
        found = {}
        for top in (self.etc, self.state / "sync-identity"):
            for path in sorted(top.rglob("*")):
                if path.is_file():
                    found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return found


@pytest.fixture
def device(tmp_path: Path) -> Device:
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    (state / "sync-identity").mkdir(parents=True)
    port = free_port()
    config = etc / "config.toml"
    config.write_text(
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\nunknown_chargers = "accept"\n'
        "push_local_list = false\n"
        f'[store]\npath = "{state / "edge.db"}"\n[api]\nport = 0\n'
        f'[files]\nport = 0\ndirectory = "{state / "files"}"\n'
    )
    # What `ocpp-edge enroll` leaves: who this edge is at the cloud (a broker nobody runs).
    (state / "sync-identity" / "identity.toml").write_text(
        f'[sync]\nedge_id = "site-upgrade"\nbroker_host = "127.0.0.1"\nbroker_port = {free_port()}\n'
    )
    (etc / "tls").mkdir()
    (etc / "tls" / "server.key").write_text("a key the upgrade must not touch\n")
    return Device(tmp_path, tmp_path / "opt", etc, state, config, port)


class Running:
    """The daemon from PREFIX/venv, as the unit starts it."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.log = device.directory / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Running:
        command = [str(self.device.prefix / "venv" / "bin" / "ocpp-edge"), "run"]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [*command, "--config", str(self.device.config)],
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**OFFLINE, "HOME": str(self.device.state)},
                cwd=self.device.state,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                f"the daemon exited:\n{self.log.read_text()[-3000:]}"
            )
            try:
                with socket.create_connection(("127.0.0.1", self.device.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"the daemon does not listen:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=30)
        assert self.process.returncode == 0, self.log.read_text()[-3000:]

    def charge(self, charger: str, tag: str) -> int:
        """A whole transaction by a charger; the transactionId the daemon gave it."""
        return asyncio.run(_charge(f"ws://127.0.0.1:{self.device.port}/ocpp", charger, tag))


async def _charge(url: str, charger_id: str, tag: str) -> int:
    async with RawCharger(url, charger_id) as charger:
        await charger.boot()
        started = await charger.ok(
            "StartTransaction",
            {"connectorId": 1, "idTag": tag, "meterStart": 1000, "timestamp": now_iso()},
        )
        transaction = int(started["transactionId"])
        await charger.ok(
            "StopTransaction",
            {"transactionId": transaction, "meterStop": 4500, "timestamp": now_iso()},
        )
        return transaction


def transactions(store: Path) -> list[tuple[int, str, int | None]]:
    with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as connection:
        rows = connection.execute("SELECT id, id_tag, meter_stop_wh FROM transactions ORDER BY id")
        return [(int(row[0]), str(row[1]), row[2]) for row in rows]


def schema_of(store: Path) -> int:
    with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as connection:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])


def epoch_of(store: Path) -> str:
    with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as connection:
        return str(connection.execute("SELECT epoch FROM sync_state").fetchone()[0])


def test_upgrade_and_rollback_keep_the_store_and_the_identity(
    wheels: Wheels, device: Device
) -> None:
    first = device.install(wheels.first, wheels.house)
    assert "switched" in first.stdout and "systemd is not running here" in first.stdout
    assert device.current() == "releases/0.1.0"
    with Running(device) as daemon:
        before = daemon.charge("CP-1", "CARD-A")
    identity = device.identity_files()
    assert len(identity) == 3

    # A release whose entry point fails is made, checked, refused and removed: the device
    # stays on the release it had.
    broken = device.install(wheels.broken, wheels.house, check=False)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "this release is broken" in broken.stderr
    assert device.current() == "releases/0.1.0"
    assert not (device.prefix / "previous").exists()
    assert not (device.prefix / "releases" / "0.1.2+broken").exists()

    device.install(wheels.second, wheels.house)
    assert device.current() == "releases/0.1.1+test"
    assert os.readlink(device.prefix / "previous") == "releases/0.1.0"
    version = subprocess.run(
        [str(device.prefix / "venv" / "bin" / "ocpp-edge"), "--version"],
        capture_output=True,
        text=True,
    )
    assert version.stdout.strip() == "ocpp-edge 0.1.1+test"
    with Running(device) as daemon:
        upgraded = daemon.charge("CP-1", "CARD-B")
    # The store went on: the daemon numbered the new transaction after the old one.
    assert upgraded == before + 1
    assert transactions(device.store) == [(before, "CARD-A", 4500), (upgraded, "CARD-B", 4500)]
    assert device.identity_files() == identity
    backups = device.status()["backups"]
    assert isinstance(backups, list) and len(backups) == 1
    assert transactions(Path(backups[0])) == [(before, "CARD-A", 4500)]

    rolled = device.tool("rollback")
    assert "rolled back: ocpp-edge 0.1.0" in rolled.stdout
    assert device.current() == "releases/0.1.0"
    assert os.readlink(device.prefix / "previous") == "releases/0.1.1+test"
    with Running(device) as daemon:
        after = daemon.charge("CP-1", "CARD-C")
    assert after == upgraded + 1
    assert [row[0] for row in transactions(device.store)] == [before, upgraded, after]
    assert device.identity_files() == identity
    status = device.status()
    assert status["store_schema_version"] == wheels.schema
    assert {release["name"] for release in status["releases"]} == {"0.1.0", "0.1.1+test"}


def test_a_release_holds_the_pinned_versions_and_other_pins_make_a_release_of_their_own(
    wheels: Wheels, device: Device
) -> None:
    """The constraints published with a wheel decide its dependencies' versions, not what
    the wheelhouse (or PyPI) offers newest; the release keeps them."""
    pins = read_constraints()
    daemon, _ = closure(("edge",))
    device.install(wheels.first, wheels.house)
    installed = device.installed_versions()
    assert {name: installed.get(name) for name in daemon} == {name: pins[name] for name in daemon}
    release = device.prefix / "releases" / "0.1.0"
    assert (release / "constraints.txt").read_bytes() == CONSTRAINTS.read_bytes()
    assert (
        device.status()["current"]["constraints_sha256"]
        == hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()
    )

    # The same wheel with an older tomli-w pinned (the wheelhouse holds both).
    assert pins["tomli-w"] != OLDER_TOMLI_W
    older = device.directory / "older-constraints.txt"
    older.write_text(
        "".join(
            f"{name}=={version}\n" for name, version in (pins | {"tomli-w": OLDER_TOMLI_W}).items()
        )
    )
    device.install(wheels.first, wheels.house, constraints=older)
    assert device.current().startswith("releases/0.1.0-"), device.current()
    assert device.installed_versions()["tomli-w"] == OLDER_TOMLI_W
    assert os.readlink(device.prefix / "previous") == "releases/0.1.0"
    again = device.install(wheels.first, wheels.house, constraints=older)
    assert "already the current release: unchanged" in again.stdout


def test_rollback_behind_a_schema_migration_is_refused_unless_the_backup_is_restored(
    wheels: Wheels, device: Device
) -> None:
    device.install(wheels.first, wheels.house)
    with Running(device) as daemon:
        kept = daemon.charge("CP-1", "CARD-A")
    old_epoch = epoch_of(device.store)
    device.install(wheels.migrating, wheels.house)
    with Running(device) as daemon:
        newer = daemon.charge("CP-1", "CARD-B")
        assert schema_of(device.store) == wheels.schema + 1
        # Not while a process has the store open, even when asked to restore.
        busy = device.tool("rollback", "--restore-backup", check=False)
        assert busy.returncode == 3, busy.stdout + busy.stderr
        assert "have the store" in busy.stderr and "stop the daemon first" in busy.stderr
    identity = device.identity_files()

    refused = device.tool("rollback", check=False)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert f"schema {wheels.schema + 1}" in refused.stderr
    assert f"knows schemas up to {wheels.schema}" in refused.stderr
    # It says what a restore would lose: the transaction since the backup.
    assert f"transaction {newer} on CP-1" in refused.stderr
    assert device.current() == "releases/0.2.0+test"
    assert [row[0] for row in transactions(device.store)] == [kept, newer]

    restored = device.tool("rollback", "--restore-backup")
    assert f"transaction {newer} on CP-1" in restored.stdout
    assert device.current() == "releases/0.1.0"
    assert schema_of(device.store) == wheels.schema
    assert [row[0] for row in transactions(device.store)] == [kept]
    assert epoch_of(device.store) != old_epoch, "a restored store is a new store for the cloud"
    # ... whose events the cloud takes from seq 1 on (none was acknowledged: no cloud).
    with closing(sqlite3.connect(f"file:{device.store}?mode=ro", uri=True)) as connection:
        sequence = [row[0] for row in connection.execute("SELECT seq FROM outbox ORDER BY seq")]
        state = connection.execute("SELECT acked_seq, sent_seq FROM sync_state").fetchone()
    assert sequence == list(range(1, len(sequence) + 1)) and sequence, sequence
    assert state == (0, 0)
    (aside,) = (device.state / "backups").glob("replaced-*")
    assert [row[0] for row in transactions(aside / "edge.db")] == [kept, newer]
    assert schema_of(aside / "edge.db") == wheels.schema + 1
    assert device.identity_files() == identity
    with Running(device) as daemon:
        assert daemon.charge("CP-2", "CARD-C") > kept


def test_a_reinstall_changes_nothing_a_rebuilt_version_gets_its_own_release_and_old_ones_go(
    wheels: Wheels, device: Device
) -> None:
    # A device provisioned before releases: a plain virtualenv where the link goes.
    legacy = device.prefix / "venv"
    (legacy / "bin").mkdir(parents=True)
    (legacy / "bin" / "ocpp-edge").write_text("#!/bin/sh\n")
    device.install(wheels.first, wheels.house)
    assert device.current() == "releases/0.1.0"
    assert not list(device.prefix.glob("venv.replaced-*"))
    again = device.install(wheels.first, wheels.house)
    assert "already the current release: unchanged" in again.stdout

    # The same version with other bytes (a rebuild): a release of its own, named by the
    # wheel's SHA-256.
    rebuilt = device.directory / wheels.first.name
    shutil.copy(wheels.first, rebuilt)
    with zipfile.ZipFile(rebuilt, "a") as archive:
        archive.comment = b"rebuilt"
    full_digest = hashlib.sha256(rebuilt.read_bytes()).hexdigest()
    digest = full_digest[:12]
    # A wheel that is not the one published is refused before anything is made.
    wrong = device.install(rebuilt, wheels.house, "--sha256", "0" * 64, check=False)
    assert wrong.returncode == 3, wrong.stdout + wrong.stderr
    assert (
        "not installed" in wrong.stderr and len(list((device.prefix / "releases").iterdir())) == 1
    )
    device.install(rebuilt, wheels.house, "--sha256", full_digest)
    assert device.current() == f"releases/0.1.0-{digest}"
    assert os.readlink(device.prefix / "previous") == "releases/0.1.0"

    # Switching back and forth: PREFIX/venv is there at every moment.
    seen: set[str] = set()
    missing: list[BaseException] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                seen.add(os.readlink(device.prefix / "venv"))
            except OSError as error:
                missing.append(error)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(10):
            device.tool("rollback")
    finally:
        done.set()
        watcher.join()
    assert not missing, missing[:3]
    assert seen == {"releases/0.1.0", f"releases/0.1.0-{digest}"}

    device.install(wheels.second, wheels.house, "--keep", "2")
    names = {entry.name for entry in (device.prefix / "releases").iterdir()}
    assert names == {"0.1.1+test", f"0.1.0-{digest}"}, "two kept: the current and the previous"
    assert device.current() == "releases/0.1.1+test"


def _delivered(store: Path) -> bool:
    """Every event of the store's outbox was acknowledged by the cloud (and one was)."""
    with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as connection:
        acked = int(connection.execute("SELECT acked_seq FROM sync_state").fetchone()[0])
        waiting = connection.execute("SELECT count(*) FROM outbox WHERE seq > ?", (acked,))
        return acked > 0 and int(waiting.fetchone()[0]) == 0


def _wait_until(predicate: Callable[[], bool], what: str, within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.2)


def _cloud_transactions(cloud_store: Path) -> set[int]:
    with closing(sqlite3.connect(f"file:{cloud_store}?mode=ro", uri=True)) as connection:
        rows = connection.execute(
            "SELECT data FROM events WHERE edge_id = 'site-upgrade' AND kind = 'transaction.started'"
        ).fetchall()
    return {int(json.loads(row[0])["transaction_id"]) for row in rows}


def test_a_restored_backup_reaches_the_cloud_as_a_new_store(
    wheels: Wheels, device: Device, broker: Mosquitto, tmp_path: Path
) -> None:
    """The restored store's events are taken by a real aggregator (from seq 1 under a new
    epoch), and no transaction id the replaced store gave out is given again."""
    (device.state / "sync-identity" / "identity.toml").write_text(
        f'[sync]\nedge_id = "site-upgrade"\nbroker_host = "127.0.0.1"\nbroker_port = {broker.port}\n'
    )
    cloud_store = tmp_path / "cloud.db"
    cloud, api_port = cloud_daemon(tmp_path / "cloud", f"sqlite:///{cloud_store}", broker.port)
    cloud.start()
    try:
        wait_for_port(api_port, within=60)
        device.install(wheels.first, wheels.house)
        with Running(device) as daemon:
            first = daemon.charge("CP-1", "CARD-A")
            _wait_until(lambda: _delivered(device.store), "the first release's events acked")
        device.install(wheels.migrating, wheels.house)
        with Running(device) as daemon:
            second = daemon.charge("CP-1", "CARD-B")
            _wait_until(lambda: _delivered(device.store), "the migrated store's events acked")
        device.tool("rollback", "--restore-backup")
        with Running(device) as daemon:
            third = daemon.charge("CP-1", "CARD-C")
            _wait_until(lambda: _delivered(device.store), "the restored store's events acked")
        assert third > second > first, "a transaction id is never given twice"
        _wait_until(
            lambda: _cloud_transactions(cloud_store) == {first, second, third},
            f"the cloud holds transactions {first}, {second}, {third}",
        )
    finally:
        cloud.stop()
