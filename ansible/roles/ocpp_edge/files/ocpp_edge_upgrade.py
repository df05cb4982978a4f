#!/usr/bin/python3
"""ocpp-edge-upgrade: install a release of ocpp-edge, switch to it, and roll back.

Each release is a virtualenv of its own, `PREFIX/releases/<version>/`, holding the wheel
it was made from, the constraints file that pinned its dependencies' versions (the one
published with the wheel: a wheel cannot carry it) and `release.json` (what it is;
written last, so a directory without it is a half-made release). `PREFIX/venv` is a
symlink to the current release (the unit starts `PREFIX/venv/bin/ocpp-edge`),
`PREFIX/previous` one to the release before it.
Every switch renames a new symlink over the old one, so `PREFIX/venv` always exists.

Run by the system's python3 (standard library only), never from a release: it replaces
the release it would run from. The store and the identity are never touched, except for
a backup of the store (SQLite's online backup) before each switch, and a backup put back
by `rollback --restore-backup`, which keeps the store it replaces. docs/installing.md,
"Upgrading and rolling back", says how to use it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PREFIX = Path("/opt/ocpp-edge")
DEFAULT_CONFIG = Path("/etc/ocpp-edge/config.toml")
DEFAULT_STORE = Path("/var/lib/ocpp-edge/edge.db")
DEFAULT_SERVICE = "ocpp-edge.service"
DEFAULT_EXTRAS = "edge,systemd"
RELEASE_FILE = "release.json"
CONSTRAINTS_FILE = "constraints.txt"
WHEEL_NAME = re.compile(r"^ocpp_edge-(?P<version>[A-Za-z0-9_.+!]+)-[^-]+-[^-]+-[^-]+\.whl$")
# What the daemon's entry point prints for --version.
VERSION_LINE = re.compile(r"^ocpp-edge (\S+)$")
# Exit statuses: 1 failed (nothing switched, or switched back), 2 bad use, 3 refused.
FAILED, USAGE, REFUSED = 1, 2, 3


class UpgradeError(Exception):
    """The step cannot be done; the message says why and what to do. `status` is the exit
    status."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


def say(message: str) -> None:
    print(f"ocpp-edge-upgrade: {message}", flush=True)


def utc_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the layout --------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    name: str
    directory: Path
    version: str
    sha256: str
    wheel: str
    schema_version: int
    installed_at: str
    # SHA-256 of the constraints file the release was installed with; "" without one.
    constraints_sha256: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "constraints_sha256": self.constraints_sha256,
            "wheel": self.wheel,
            "schema_version": self.schema_version,
            "installed_at": self.installed_at,
        }


@dataclass(frozen=True)
class Layout:
    prefix: Path

    @property
    def releases(self) -> Path:
        return self.prefix / "releases"

    @property
    def current_link(self) -> Path:
        return self.prefix / "venv"

    @property
    def previous_link(self) -> Path:
        return self.prefix / "previous"

    def release(self, name: str) -> Release | None:
        """The complete release `name`, or None (absent, or half made)."""
        directory = self.releases / name
        try:
            record = json.loads((directory / RELEASE_FILE).read_text())
            return Release(
                name=name,
                directory=directory,
                version=str(record["version"]),
                sha256=str(record["sha256"]),
                wheel=str(record["wheel"]),
                schema_version=int(record["schema_version"]),
                installed_at=str(record["installed_at"]),
                constraints_sha256=str(record.get("constraints_sha256", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def all_releases(self) -> list[Release]:
        """Every complete release, oldest installed first."""
        if not self.releases.is_dir():
            return []
        found = [self.release(entry.name) for entry in self.releases.iterdir()]
        return sorted((r for r in found if r is not None), key=lambda r: r.installed_at)

    def linked(self, link: Path) -> Release | None:
        """The release a symlink points to (None: no link, or not a release)."""
        if not link.is_symlink():
            return None
        target = Path(os.readlink(link))
        if target.parent.name != "releases":
            return None
        return self.release(target.name)

    def current(self) -> Release | None:
        return self.linked(self.current_link)

    def previous(self) -> Release | None:
        return self.linked(self.previous_link)

    def point(self, link: Path, release: Release | None) -> None:
        """Point `link` at `release` (None removes it) by renaming a new symlink over it:
        at every moment the link is either the old one or the new one."""
        if release is None:
            if link.is_symlink():
                link.unlink()
            return
        staged = link.with_name(f".{link.name}.new")
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        # Relative, so that the layout stays right seen from a chroot or a mounted image.
        staged.symlink_to(Path("releases") / release.name)
        os.replace(staged, link)
        _sync_directory(link.parent)


def _sync_directory(directory: Path) -> None:
    """The rename is on disk before we go on (a power cut must not undo a switch the
    service was already restarted for)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def locked(prefix: Path) -> Iterator[None]:
    """One run at a time per prefix."""
    prefix.mkdir(parents=True, exist_ok=True)
    with (prefix / ".upgrade.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpgradeError(f"another ocpp-edge-upgrade is running on {prefix}") from None
        yield


# -- the store -----------------------------------------------------------------------------


def store_path_of(arguments: argparse.Namespace) -> Path:
    """--store, else the configuration's [store] path, else the unit's default."""
    if arguments.store is not None:
        return Path(arguments.store)
    config = Path(arguments.config)
    if not config.is_file():
        return DEFAULT_STORE
    try:
        settings = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UpgradeError(f"cannot read {config}: {error}; pass --store", USAGE) from error
    store = settings.get("store", {}).get("path")
    if store is None:
        return DEFAULT_STORE
    path = Path(str(store))
    if not path.is_absolute():
        raise UpgradeError(f"{config} gives a relative [store] path ({path}); pass --store", USAGE)
    return path


def store_schema_version(store: Path) -> int | None:
    """PRAGMA user_version of the store (None: no store)."""
    if not store.is_file():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as connection:
        connection.execute("PRAGMA busy_timeout = 10000")
        return int(connection.execute("PRAGMA user_version").fetchone()[0])


def backups_directory(store: Path) -> Path:
    return store.parent / "backups"


def back_up_store(store: Path, label: str, keep: int) -> Path | None:
    """A consistent copy of the store, taken with SQLite's online backup while the daemon
    may be writing, in `backups/` beside it, owned and moded like the store; the oldest
    beyond `keep` are removed. None: there is no store yet."""
    if not store.is_file():
        say(f"no store at {store} yet: nothing to back up")
        return None
    directory = backups_directory(store)
    owner = store.stat()
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chown(directory, owner.st_uid, owner.st_gid)
    schema = store_schema_version(store)
    target = directory / f"{store.stem}-{utc_stamp()}-schema{schema}-{label}.db"
    partial = target.with_name(target.name + ".part")
    with (
        contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as source,
        contextlib.closing(sqlite3.connect(partial)) as copy,
    ):
        source.execute("PRAGMA busy_timeout = 10000")
        source.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")
    os.chown(partial, owner.st_uid, owner.st_gid)
    os.chmod(partial, 0o600)
    with partial.open("rb") as file:
        os.fsync(file.fileno())
    os.replace(partial, target)
    _sync_directory(directory)
    say(f"backed up the store (schema {schema}) to {target}")
    for old in list_backups(store)[:-keep] if keep > 0 else []:
        old.path.unlink()
        say(f"removed the old backup {old.path.name}")
    return target


@dataclass(frozen=True)
class Backup:
    path: Path
    schema_version: int


_BACKUP_NAME = re.compile(r"^.+-(\d{8}T\d{12}Z)-schema(\d+)-.+\.db$")


def list_backups(store: Path) -> list[Backup]:
    """The store's backups, oldest first (by the time in their names)."""
    directory = backups_directory(store)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _BACKUP_NAME.match(entry.name)
        if match and entry.is_file():
            found.append((match.group(1), Backup(entry, int(match.group(2)))))
    return [backup for _, backup in sorted(found, key=lambda pair: pair[0])]


def processes_holding(path: Path) -> list[int]:
    """Ids of the processes that have `path` (or its -wal, -shm) open."""
    names = {str(path.resolve()), f"{path.resolve()}-wal", f"{path.resolve()}-shm"}
    holders = []
    for process in Path("/proc").iterdir():
        if not process.name.isdigit() or int(process.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for descriptor in (process / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(descriptor) in names:
                        holders.append(int(process.name))
                        break
    return holders


def _count(connection: sqlite3.Connection, query: str) -> int:
    try:
        return int(connection.execute(query).fetchone()[0] or 0)
    except sqlite3.Error:
        return 0


def what_the_store_holds_beyond(store: Path, backup: Path) -> list[str]:
    """Sentences on what `store` holds that `backup` lacks: transactions started or
    stopped since, events not yet acknowledged by the cloud, and rows per table."""
    lines = []
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as newer:
        newer.execute(f"ATTACH DATABASE 'file:{backup}?mode=ro' AS older")
        last_id = _count(newer, "SELECT max(id) FROM older.transactions")
        started = newer.execute(
            "SELECT id, charger_id, connector_id, started_at, stopped_at FROM main.transactions"
            " WHERE id > ? ORDER BY id",
            (last_id,),
        ).fetchall()
        for row in started:
            state = f"stopped {row[4]}" if row[4] else "still open"
            lines.append(
                f"transaction {row[0]} on {row[1]} connector {row[2]}, started {row[3]}, {state}"
            )
        stopped = newer.execute(
            "SELECT n.id, n.charger_id, n.stopped_at FROM main.transactions n"
            " JOIN older.transactions o ON o.id = n.id"
            " WHERE n.stopped_at IS NOT NULL AND o.stopped_at IS NULL ORDER BY n.id"
        ).fetchall()
        for row in stopped:
            lines.append(f"the stop of transaction {row[0]} on {row[1]} at {row[2]}")
        acked = _count(newer, "SELECT acked_seq FROM main.sync_state")
        unsent = _count(newer, f"SELECT count(*) FROM main.outbox WHERE seq > {acked}")
        if unsent:
            lines.append(f"{unsent} events the cloud has not acknowledged yet (outbox)")
        tables = [
            row[0]
            for row in newer.execute(
                "SELECT name FROM main.sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        older_tables = {
            row[0]
            for row in newer.execute("SELECT name FROM older.sqlite_master WHERE type='table'")
        }
        for table in tables:
            mine = _count(newer, f'SELECT count(*) FROM main."{table}"')
            theirs = (
                _count(newer, f'SELECT count(*) FROM older."{table}"')
                if table in older_tables
                else 0
            )
            if mine > theirs:
                lines.append(f"table {table}: {mine} rows, the backup {theirs}")
    return lines


def _count_in(store: Path, query: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as connection:
        return _count(connection, query)


def start_as_a_new_store(
    connection: sqlite3.Connection, delivered: int, numbers: dict[str, int]
) -> None:
    """Make a restored backup a new store for the cloud (docs/sync-protocol.md, "A
    replaced store"): a new epoch, whose events the cloud takes from seq 1 on. Events of
    the backup's outbox up to `delivered` (the replaced store's acknowledged seq) reached
    the cloud from the replaced store and are dropped, not sent twice; the rest are
    renumbered from 1 and sent. Ids the replaced store gave out (`numbers`, its
    sqlite_sequence: transaction ids chargers hold, the cloud's keys) are never given again."""
    connection.isolation_level = None
    connection.execute("BEGIN IMMEDIATE")
    for name, number in numbers.items():
        if name != "outbox":
            connection.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (number, name)
            )
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    if not {"outbox", "sync_state"} <= tables:
        connection.execute("COMMIT")
        return
    connection.execute("DELETE FROM outbox WHERE seq <= ?", (delivered,))
    first = _count(connection, "SELECT min(seq) FROM outbox") or 1
    # Two steps, so that no renumbered seq meets one not yet renumbered.
    connection.execute("UPDATE outbox SET seq = -seq")
    connection.execute("UPDATE outbox SET seq = -seq - ? + 1", (first,))
    last = _count(connection, "SELECT max(seq) FROM outbox")
    connection.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'outbox'", (last,))
    columns = {row[1] for row in connection.execute("PRAGMA table_info(sync_state)")}
    changes = ["acked_seq = 0"]
    changes += ["sent_seq = 0"] if "sent_seq" in columns else []
    changes += ["epoch = lower(hex(randomblob(16)))"] if "epoch" in columns else []
    connection.execute(f"UPDATE sync_state SET {', '.join(changes)}")
    connection.execute("COMMIT")


def restore_backup(store: Path, backup: Backup, aside_label: str) -> Path:
    """Put `backup` in the store's place; the store it replaces (with its -wal and -shm)
    moves into a directory beside the backups. The restored file gets a new sync epoch
    (docs/sync-protocol.md, "A replaced store"). Returns where the replaced store went."""
    holders = processes_holding(store)
    if holders:
        raise UpgradeError(
            f"processes {', '.join(map(str, holders))} have the store {store} open: stop the "
            "daemon first",
            REFUSED,
        )
    owner = store.stat()
    aside = backups_directory(store) / f"replaced-{utc_stamp()}-{aside_label}"
    aside.mkdir(mode=0o700)
    os.chown(aside, owner.st_uid, owner.st_gid)
    staged = store.with_name(f".{store.name}.restoring")
    shutil.copyfile(backup.path, staged)
    delivered = _count_in(store, "SELECT acked_seq FROM sync_state")
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as replaced:
        numbers = dict(replaced.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    with contextlib.closing(sqlite3.connect(staged)) as connection:
        start_as_a_new_store(connection, delivered, numbers)
    os.chown(staged, owner.st_uid, owner.st_gid)
    os.chmod(staged, owner.st_mode & 0o7777)
    with staged.open("rb") as file:
        os.fsync(file.fileno())
    for suffix in ("", "-wal", "-shm"):
        part = store.with_name(store.name + suffix)
        if part.exists():
            os.replace(part, aside / part.name)
    os.replace(staged, store)
    _sync_directory(store.parent)
    return aside


# -- the service -------------------------------------------------------------------------


class Service:
    """The daemon's unit, through systemctl; a no-op that says so where systemd does not
    run (a chroot, an image being built, a container) or when asked not to."""

    def __init__(self, name: str, skip: bool, timeout: float, settle: float) -> None:
        self.name = name
        self.timeout = timeout
        self.settle = settle
        self.skip_reason = ""
        if skip:
            self.skip_reason = "--no-restart"
        elif not Path("/run/systemd/system").is_dir():
            self.skip_reason = "systemd is not running here"

    def _systemctl(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemctl", *arguments], capture_output=True, text=True, timeout=self.timeout
        )

    def stop(self) -> None:
        if self.skip_reason:
            say(f"not stopping {self.name} ({self.skip_reason}): stop the daemon yourself")
            return
        say(f"stopping {self.name}")
        result = self._systemctl("stop", self.name)
        if result.returncode != 0:
            raise UpgradeError(f"systemctl stop {self.name} failed: {result.stderr.strip()}")

    def restart(self) -> bool:
        """Restart the unit; True when it comes up and stays up for `settle` seconds (or
        when restarting is skipped)."""
        if self.skip_reason:
            say(f"not restarting {self.name} ({self.skip_reason}): restart the daemon yourself")
            return True
        say(f"restarting {self.name}")
        try:
            result = self._systemctl("restart", self.name)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not start within {self.timeout:.0f} s")
            return False
        if result.returncode != 0:
            say(f"systemctl restart {self.name} failed: {result.stderr.strip()}")
            return False
        deadline = time.monotonic() + self.timeout
        active_since: float | None = None
        while time.monotonic() < deadline:
            state = self._systemctl("is-active", self.name).stdout.strip()
            if state == "active":
                active_since = active_since or time.monotonic()
                if time.monotonic() - active_since >= self.settle:
                    say(f"{self.name} is active")
                    return True
            elif state in ("activating", "reloading"):
                active_since = None
            else:
                say(f"{self.name} is {state}")
                return False
            time.sleep(0.5)
        say(f"{self.name} did not stay active within {self.timeout:.0f} s")
        return False


# -- install -------------------------------------------------------------------------------


def release_facts(directory: Path, config: Path) -> tuple[str, int]:
    """(version, schema version) that the release's own code reports, after its entry
    point has run and, when there is a configuration, loaded it. Raises UpgradeError with
    the release's own message when it cannot."""
    entry_point = directory / "bin" / "ocpp-edge"
    run = subprocess.run(
        [str(entry_point), "--version"], capture_output=True, text=True, timeout=300, cwd="/"
    )
    match = VERSION_LINE.match(run.stdout.strip())
    if run.returncode != 0 or match is None:
        raise UpgradeError(
            f"{entry_point} --version failed ({run.returncode}): "
            f"{(run.stdout + run.stderr).strip()[-2000:]}"
        )
    check = (
        "import sys, pathlib\n"
        "from edge.store.database import latest_schema_version\n"
        "if len(sys.argv) > 1:\n"
        "    from edge.settings import load_settings\n"
        "    load_settings(pathlib.Path(sys.argv[1]))\n"
        "print(latest_schema_version())\n"
    )
    # -I: the release's own modules, never an `edge` package in the working directory.
    command = [str(directory / "bin" / "python"), "-I", "-c", check]
    if config.is_file():
        command.append(str(config))
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd="/")
    if run.returncode != 0:
        raise UpgradeError(
            f"the release cannot load its store code or the configuration {config}: "
            f"{run.stderr.strip()[-2000:]}"
        )
    return match.group(1), int(run.stdout.strip().splitlines()[-1])


def build_release(
    layout: Layout,
    wheel: Path,
    name: str,
    arguments: argparse.Namespace,
    sha256: str,
    constraints_sha256: str,
) -> Release:
    """Make the virtualenv of release `name` from `wheel` in place (a virtualenv cannot be
    moved) and check it; removed again when anything fails."""
    directory = layout.releases / name
    shutil.rmtree(directory, ignore_errors=True)
    layout.releases.mkdir(parents=True, exist_ok=True)
    say(f"making release {name} in {directory}")
    try:
        subprocess.run([arguments.python, "-m", "venv", str(directory)], check=True)
        os.chmod(directory, 0o755)
        shutil.copy2(wheel, directory / wheel.name)
        extras = ",".join(part.strip() for part in arguments.extras.split(",") if part.strip())
        requirement = (
            f"{directory / wheel.name}[{extras}]" if extras else str(directory / wheel.name)
        )
        pip = [str(directory / "bin" / "python"), "-m", "pip", "install"]
        pip += ["--disable-pip-version-check", "--no-input", "--quiet"]
        if arguments.constraints is not None:
            # The release keeps its own copy: what its versions were pinned by.
            shutil.copy2(arguments.constraints, directory / CONSTRAINTS_FILE)
            pip += ["--constraint", str(directory / CONSTRAINTS_FILE)]
        if arguments.wheelhouse is not None:
            pip += ["--no-index", "--find-links", str(arguments.wheelhouse)]
        result = subprocess.run([*pip, requirement], capture_output=True, text=True)
        if result.returncode != 0:
            raise UpgradeError(
                f"pip could not install {wheel.name}:\n{result.stderr.strip()[-3000:]}"
            )
        version, schema = release_facts(directory, Path(arguments.config))
        if version != wheel_version(wheel):
            raise UpgradeError(
                f"the release reports version {version}, its wheel's name {wheel_version(wheel)}"
            )
        release = Release(
            name,
            directory,
            version,
            sha256,
            wheel.name,
            schema,
            datetime.datetime.now(datetime.UTC).isoformat(),
            constraints_sha256,
        )
        staged = directory / f".{RELEASE_FILE}.part"
        staged.write_text(json.dumps(release.as_json(), indent=2) + "\n")
        os.replace(staged, directory / RELEASE_FILE)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    say(f"release {name} runs: ocpp-edge {version}, store schema up to {schema}")
    return release


def wheel_version(wheel: Path) -> str:
    match = WHEEL_NAME.match(wheel.name)
    if match is None:
        raise UpgradeError(
            f"{wheel.name} is not an ocpp-edge wheel (ocpp_edge-VERSION-...whl)", USAGE
        )
    return match.group("version")


def release_name_for(
    layout: Layout, version: str, sha256: str, constraints_sha256: str
) -> tuple[str, Release | None]:
    """The release directory for a wheel and its constraints, with the release when it
    exists: the version; version-<wheel's SHA-256 prefix> when another wheel of that
    version is installed; version-<prefix of a digest of both> when this wheel is, with
    other pins."""
    for release in layout.all_releases():
        if (release.sha256, release.constraints_sha256) == (sha256, constraints_sha256):
            return release.name, release
    both = hashlib.sha256(f"{sha256} {constraints_sha256}".encode()).hexdigest()
    names = [version, f"{version}-{sha256[:12]}", f"{version}-{both[:12]}"]
    return next(name for name in names if layout.release(name) is None), None


def switch_to(layout: Layout, release: Release) -> tuple[Release | None, Release | None]:
    """Make `release` current and the current one previous; (old current, old previous)."""
    old_current, old_previous = layout.current(), layout.previous()
    if layout.current_link.exists() and not layout.current_link.is_symlink():
        # A virtualenv from before releases: it cannot move (its scripts name its path),
        # so it is removed once the link stands in its place.
        legacy = layout.prefix / f"venv.replaced-{utc_stamp()}"
        os.rename(layout.current_link, legacy)
        layout.point(layout.current_link, release)
        shutil.rmtree(legacy, ignore_errors=True)
        say(f"replaced the virtualenv {layout.current_link} by the release layout")
        return None, old_previous
    if old_current is not None and old_current.name != release.name:
        layout.point(layout.previous_link, old_current)
    layout.point(layout.current_link, release)
    return old_current, old_previous


def prune(layout: Layout, keep: int) -> None:
    """Remove the oldest releases beyond `keep`, never the current or the previous one."""
    current, previous = layout.current(), layout.previous()
    protected = {r.name for r in (current, previous) if r is not None}
    releases = layout.all_releases()
    for release in releases[: max(0, len(releases) - keep)]:
        if release.name not in protected:
            shutil.rmtree(release.directory)
            say(f"removed the old release {release.name}")
    # Half-made releases (a run that was killed) are never linked: clear them.
    for entry in layout.releases.iterdir() if layout.releases.is_dir() else []:
        if entry.is_dir() and layout.release(entry.name) is None and entry.name not in protected:
            shutil.rmtree(entry, ignore_errors=True)


def install(arguments: argparse.Namespace) -> int:
    layout = Layout(Path(arguments.prefix))
    wheel = Path(arguments.wheel).resolve()
    if not wheel.is_file():
        raise UpgradeError(f"no wheel at {wheel}", USAGE)
    version = wheel_version(wheel)
    if arguments.keep < 2:
        raise UpgradeError("--keep must be 2 or more (the current and the previous release)", USAGE)
    sha256 = sha256_of(wheel)
    if arguments.sha256 is not None and arguments.sha256.lower() != sha256:
        raise UpgradeError(
            f"{wheel.name} has SHA-256 {sha256}, not the {arguments.sha256} expected: "
            "not installed",
            REFUSED,
        )
    constraints_sha256 = ""
    if arguments.constraints is not None:
        if not Path(arguments.constraints).is_file():
            raise UpgradeError(f"no constraints file at {arguments.constraints}", USAGE)
        constraints_sha256 = sha256_of(Path(arguments.constraints))
    with locked(layout.prefix):
        name, release = release_name_for(layout, version, sha256, constraints_sha256)
        current = layout.current()
        if release is not None and current is not None and current.name == release.name:
            say(f"ocpp-edge {version} ({name}) is already the current release: unchanged")
            return 0
        if release is None:
            release = build_release(layout, wheel, name, arguments, sha256, constraints_sha256)
        else:
            release_facts(release.directory, Path(arguments.config))
            say(f"release {name} is already here and runs")
        store = store_path_of(arguments)
        back_up_store(store, f"before-{name}", arguments.keep_backups)
        old_current, old_previous = switch_to(layout, release)
        say(f"switched {layout.current_link} to release {name}")
        service = Service(
            arguments.service, arguments.no_restart, arguments.timeout, arguments.settle
        )
        if not service.restart():
            if old_current is None:
                raise UpgradeError(
                    f"release {name} does not come up and there is none to go back to"
                )
            layout.point(layout.current_link, old_current)
            layout.point(layout.previous_link, old_previous)
            say(f"switched back to release {old_current.name}")
            service.restart()
            raise UpgradeError(
                f"release {name} did not come up; back on {old_current.name} "
                f"(journalctl -u {arguments.service} says why)"
            )
        prune(layout, arguments.keep)
        say(f"installed: ocpp-edge {version} ({name}) is current")
    return 0


# -- rollback ------------------------------------------------------------------------------


def rollback(arguments: argparse.Namespace) -> int:
    layout = Layout(Path(arguments.prefix))
    with locked(layout.prefix):
        current, previous = layout.current(), layout.previous()
        if current is None or previous is None:
            raise UpgradeError("there is no previous release to roll back to", REFUSED)
        store = store_path_of(arguments)
        schema = store_schema_version(store)
        service = Service(
            arguments.service, arguments.no_restart, arguments.timeout, arguments.settle
        )
        restored_from: Path | None = None
        if schema is not None and schema > previous.schema_version:
            candidates = [
                b for b in list_backups(store) if b.schema_version <= previous.schema_version
            ]
            backup = candidates[-1] if candidates else None
            beyond = what_the_store_holds_beyond(store, backup.path) if backup else []
            if not arguments.restore_backup or backup is None:
                lines = [
                    f"the store {store} is at schema {schema}, which release {current.name} "
                    f"migrated it to; release {previous.name} knows schemas up to "
                    f"{previous.schema_version} and would refuse it.",
                ]
                if backup is None:
                    lines.append("There is no backup of the store at a schema it knows.")
                else:
                    lines.append(
                        f"`ocpp-edge-upgrade rollback --restore-backup` would put back "
                        f"{backup.path} (schema {backup.schema_version}) and keep the current "
                        "store aside. The current store holds what that backup lacks:"
                    )
                    lines += [f"  - {line}" for line in beyond] or ["  - nothing"]
                raise UpgradeError("\n".join(lines), REFUSED)
            service.stop()
            aside = restore_backup(store, backup, f"from-{current.name}")
            restored_from = backup.path
            say(f"restored the store from {backup.path}; the store it replaced is in {aside}")
            if beyond:
                say("that store holds what the restored one lacks (keep it):")
                for line in beyond:
                    say(f"  - {line}")
        layout.point(layout.previous_link, current)
        layout.point(layout.current_link, previous)
        say(f"switched {layout.current_link} back to release {previous.name}")
        if not service.restart():
            if restored_from is not None:
                raise UpgradeError(
                    f"release {previous.name} did not come up on the restored store; the "
                    "replaced store is kept (see above)"
                )
            layout.point(layout.current_link, current)
            layout.point(layout.previous_link, previous)
            service.restart()
            raise UpgradeError(f"release {previous.name} did not come up; back on {current.name}")
        say(f"rolled back: ocpp-edge {previous.version} ({previous.name}) is current")
    return 0


# -- status --------------------------------------------------------------------------------


def status(arguments: argparse.Namespace) -> int:
    layout = Layout(Path(arguments.prefix))
    current, previous = layout.current(), layout.previous()
    store = store_path_of(arguments)
    report = {
        "prefix": str(layout.prefix),
        "current": current.as_json() if current else None,
        "previous": previous.as_json() if previous else None,
        "releases": [release.as_json() for release in layout.all_releases()],
        "store": str(store),
        "store_schema_version": store_schema_version(store),
        "backups": [str(backup.path) for backup in list_backups(store)],
    }
    if arguments.json:
        print(json.dumps(report, indent=2))
        return 0
    for label, release in (("current", current), ("previous", previous)):
        text = (
            f"{release.name} (ocpp-edge {release.version}, schema up to {release.schema_version})"
            if release
            else "none"
        )
        print(f"{label + ':':10}{text}")
    print(f"{'releases:':10}{', '.join(r.name for r in layout.all_releases()) or 'none'}")
    schema = report["store_schema_version"]
    print(f"{'store:':10}{store} ({'absent' if schema is None else f'schema {schema}'})")
    print(f"{'backups:':10}{len(report['backups'])} in {backups_directory(store)}")  # type: ignore[arg-type]
    return 0


# -- the command line ------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX, help="default: %(default)s")
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="default: %(default)s")
    common.add_argument("--store", type=Path, help="the store (default: the config's [store] path)")
    common.add_argument("--service", default=DEFAULT_SERVICE, help="default: %(default)s")
    common.add_argument("--no-restart", action="store_true", help="leave the service alone")
    common.add_argument(
        "--timeout", type=float, default=120.0, help="seconds for the service to start"
    )
    common.add_argument("--settle", type=float, default=5.0, help="seconds it must stay active")
    top = argparse.ArgumentParser(prog="ocpp-edge-upgrade", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    installing = commands.add_parser(
        "install", parents=[common], help="install a wheel and switch to it"
    )
    installing.add_argument("wheel", type=Path)
    installing.add_argument("--sha256", help="refuse the wheel unless its SHA-256 is this")
    installing.add_argument("--wheelhouse", type=Path, help="install offline from these wheels")
    installing.add_argument(
        "--constraints",
        type=Path,
        help="the constraints file published with the wheel: the exact versions of its "
        "dependencies (pip --constraint)",
    )
    installing.add_argument("--extras", default=DEFAULT_EXTRAS, help="default: %(default)s")
    installing.add_argument(
        "--keep", type=int, default=2, help="releases kept (default: %(default)s)"
    )
    installing.add_argument(
        "--keep-backups", type=int, default=5, help="store backups kept (default: %(default)s)"
    )
    installing.add_argument(
        "--python", default=sys.executable, help="makes the virtualenv (default: %(default)s)"
    )
    installing.set_defaults(run=install)
    rolling = commands.add_parser(
        "rollback", parents=[common], help="go back to the previous release"
    )
    rolling.add_argument(
        "--restore-backup",
        action="store_true",
        help="when the store was migrated past what the previous release knows, put back the "
        "backup taken before the upgrade (the current store is kept aside)",
    )
    rolling.set_defaults(run=rollback)
    showing = commands.add_parser("status", parents=[common], help="the releases and the store")
    showing.add_argument("--json", action="store_true")
    showing.set_defaults(run=status)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    os.umask(0o022)
    try:
        return int(arguments.run(arguments))
    except UpgradeError as error:
        print(f"ocpp-edge-upgrade: {error}", file=sys.stderr)
        return error.status
    except (OSError, sqlite3.Error, subprocess.SubprocessError) as error:
        print(f"ocpp-edge-upgrade: {error}", file=sys.stderr)
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
