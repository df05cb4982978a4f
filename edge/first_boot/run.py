"""One run of `ocpp-edge first-boot`, at every start of the device: read the boot file,
check all of it (and the files it names) before changing anything, apply what changed
since the last applied version, move the secrets off the FAT partition, enroll with the
cloud when a code is waiting, and say what happened.

The record of what was applied, and a code waiting for the cloud, live in
/var/lib/ocpp-edge/first-boot (root only), never on the boot partition.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import tomli_w

from contract.config_files import ConfigError, read_settings
from edge import cards_csv
from edge.clock import utc_now_text
from edge.enrollment import (
    CloudRefused,
    EnrollmentError,
    cloud_client,
    edge_id_for_code,
    new_private_key,
    request_certificate,
)
from edge.first_boot.boot_file import (
    BOOT_FILE,
    BootFile,
    is_pem,
    read_boot_file,
    rewritten_without_secrets,
    without_keys,
    write_on_boot_partition,
)
from edge.first_boot.system import (
    ApplyError,
    activate_now,
    apply_hostname,
    apply_network,
    apply_time_zone,
    check_time_zone,
    ensure_machine_id,
    ensure_ssh_host_keys,
    expand_root_partition,
    in_root,
    kept_wifi_psk,
    user_ids,
    write_file,
)
from edge.settings import Settings
from edge.store import id_tags
from edge.store.database import StoreError, open_database, savepoint
from edge.sync.identity import existing_identity, write_identity

STATE_DIRECTORY = Path("/var/lib/ocpp-edge")
RECORD_DIRECTORY = STATE_DIRECTORY / "first-boot"
RECORD_FILE = "applied.json"
PENDING_CODE_FILE = "enrollment-code"
CLOUD_CA_FILE = "cloud-ca.pem"
DAEMON_CONFIG = Path("/etc/ocpp-edge/config.toml")
DAEMON_USER = "ocpp-edge"
# Enrolling waits this long in all for a network that comes up late, then gives up
# until the next start (the unit's TimeoutStartSec= leaves room for it).
ENROLL_SECONDS = 90.0
ENROLL_ATTEMPT_SECONDS = 15.0
_FIRST_RETRY_SECONDS = 2.0
_LONGEST_RETRY_SECONDS = 15.0


class Enrolment(StrEnum):
    NOT_ASKED = "not asked"
    ENROLLED = "enrolled"
    ALREADY = "enrolled before"
    SPENT = "code refused"
    UNREACHABLE = "cloud unreachable"
    FAILED = "failed"


@dataclass
class Outcome:
    """What one run did: lines for the status file, problems in plain words."""

    site_name: str = ""
    applied: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    enrolment: Enrolment = Enrolment.NOT_ASKED
    boot_file_read: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Places:
    """Where things are, under `root`."""

    boot_directory: Path
    root: Path

    @property
    def boot_file(self) -> Path:
        return self.boot_directory / BOOT_FILE

    @property
    def records(self) -> Path:
        return in_root(self.root, RECORD_DIRECTORY)

    @property
    def daemon_config(self) -> Path:
        return in_root(self.root, DAEMON_CONFIG)

    def store_path(self, settings: Settings) -> Path:
        path = settings.store.path
        # Relative to the unit's WorkingDirectory=, as the daemon reads it.
        return in_root(self.root, path if path.is_absolute() else STATE_DIRECTORY / path)

    def identity_directory(self, settings: Settings) -> Path:
        """`[sync] identity_directory`, relative to the store's directory as the daemon
        takes it."""
        directory = settings.sync.identity_directory
        if directory.is_absolute():
            return in_root(self.root, directory)
        return self.store_path(settings).parent / directory

    def daemon_settings(self) -> Settings:
        """The daemon's settings from its config file (without the enrolled identity)."""
        config = self.daemon_config
        return read_settings(Settings, config if config.exists() else None)


def run_first_boot(
    places: Places,
    *,
    enroll_seconds: float = ENROLL_SECONDS,
    expand: Callable[[Path], str] = expand_root_partition,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Outcome:
    outcome = Outcome()
    record = _read_record(places.records / RECORD_FILE)
    if not places.boot_file.exists():
        outcome.applied.append(f"no {BOOT_FILE} on the boot partition: nothing new to apply")
        boot: BootFile | None = None
    else:
        try:
            boot, text = read_boot_file(places.boot_file)
            card_rows = _check_everything(places, boot)
        except ConfigError as error:
            # Nothing is applied from a file with any problem: the previous state stays.
            outcome.problems.append(f"{error}\nNothing from {BOOT_FILE} was applied.")
            return outcome
        outcome.boot_file_read = True
        outcome.site_name = boot.site.name
        try:
            _apply(places, boot, text, card_rows, record, outcome, now())
        except (ApplyError, OSError, StoreError, ConfigError) as error:
            outcome.problems.append(f"applying {BOOT_FILE} stopped: {error}")
    try:
        outcome.applied.append(expand(places.root))
    except ApplyError as error:
        outcome.problems.append(f"root partition: {error}")
    _enroll_waiting(places, boot, outcome, enroll_seconds)
    return outcome


# -- checks before anything changes ---------------------------------------------------------


def _check_everything(places: Places, boot: BootFile) -> list[id_tags.CardValues] | None:
    """Every problem the boot file and what it names have, as one ConfigError."""
    problems = []
    zone_problem = check_time_zone(places.root, boot.site.time_zone)
    if zone_problem:
        problems.append(zone_problem)
    ca = boot.cloud.ca
    if ca is not None and not is_pem(ca):
        try:
            if not is_pem((places.boot_directory / ca).read_text(encoding="utf-8")[:100_000]):
                problems.append(f"cloud.ca = {ca!r}: that file holds no PEM certificate")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"cloud.ca = {ca!r}: cannot read it next to {BOOT_FILE}: {error}")
    rows = None
    if boot.cards.csv is not None:
        csv_path = places.boot_directory / boot.cards.csv
        try:
            card_file = cards_csv.read_card_file(_bounded_read(csv_path))
        except (OSError, cards_csv.CardFileError) as error:
            problems.append(f"cards.csv = {boot.cards.csv!r}: {error}")
        else:
            problems.extend(f"{csv_path.name}:{line}: {why}" for line, why in card_file.rejected)
            rows = [card for _, card in card_file.rows]
    try:
        _merged_daemon_config(places, boot)
    except ConfigError as error:
        problems.append(f"the daemon's settings with these values: {error}")
    if problems:
        raise ConfigError("\n  ".join(["cannot be applied:", *problems]))
    return rows


def _bounded_read(path: Path) -> bytes:
    if path.stat().st_size > cards_csv.MAX_FILE_BYTES:
        raise cards_csv.CardFileError(
            f"larger than {cards_csv.MAX_FILE_BYTES // (1024 * 1024)} MiB"
        )
    return path.read_bytes()


# -- applying ---------------------------------------------------------------------------------


def _apply(
    places: Places,
    boot: BootFile,
    text: str,
    card_rows: list[id_tags.CardValues] | None,
    record: dict[str, Any],
    outcome: Outcome,
    moment: datetime,
) -> None:
    before = record.get("sections", {})
    now = boot.without_secrets()
    changed = {name for name, values in now.items() if before.get(name) != values}
    secrets_moved: dict[tuple[str, str], str] = {}
    stamp = moment.strftime("%Y-%m-%d %H:%M UTC")
    first_time = "identity" not in record

    if first_time:
        # Each on its own: a device without its own SSH keys still gets its settings.
        made = True
        for step in (ensure_machine_id, lambda root: ensure_ssh_host_keys(root, first_time=True)):
            try:
                outcome.applied.append(step(places.root))
            except ApplyError as error:
                outcome.problems.append(f"this device's own identity: {error}")
                made = False
        if made:
            record["identity"] = moment.isoformat(timespec="seconds")

    site = boot.site
    new_hostname = None
    if "site" in changed or first_time:
        outcome.applied.append(apply_hostname(places.root, site.hostname))
        outcome.applied.append(apply_time_zone(places.root, site.time_zone))
        new_hostname = site.hostname
    else:
        outcome.applied.append("host name and time zone: unchanged")

    network = boot.network
    wifi = None
    if "network" in changed or network.wifi_password is not None or first_time:
        kept = kept_wifi_psk(places.root, network.wifi_ssid)
        outcome.applied.extend(apply_network(places.root, network, kept))
        wifi = network.wifi_ssid is not None
        if network.wifi_password is not None:
            secrets_moved[("network", "wifi_password")] = (
                f"moved off this card on {stamp} into /etc/wpa_supplicant/"
                "wpa_supplicant-wlan0.conf (as its key, readable by root only)"
            )
    else:
        outcome.applied.append("network: unchanged")

    if new_hostname is not None or wifi is not None:
        outcome.applied.extend(
            f"host name and network: {line}"
            for line in activate_now(places.root, new_hostname, wifi)
        )

    # By the file itself, not the record: running the role again rewrites it.
    if _daemon_config_value(places, "ocpp", "unknown_chargers") != boot.chargers.unknown:
        merged = _merged_daemon_config(places, boot)
        config = places.daemon_config
        status = config.stat() if config.exists() else None
        write_file(config, merged, mode=status.st_mode & 0o777 if status else 0o640)
        owner = (status.st_uid, status.st_gid) if status else _root_and_daemon_group(places.root)
        os.chown(config, *owner)
        outcome.applied.append(
            f"chargers never seen before: {boot.chargers.unknown} ({DAEMON_CONFIG} [ocpp] "
            "unknown_chargers)"
        )
    else:
        outcome.applied.append(f"chargers never seen before: {boot.chargers.unknown} (unchanged)")

    cloud = boot.cloud
    if cloud.ca is not None:
        ca_text = cloud.ca if is_pem(cloud.ca) else (places.boot_directory / cloud.ca).read_text()
        _keep_secret(places, CLOUD_CA_FILE, ca_text, 0o644)
        if is_pem(cloud.ca):
            secrets_moved[("cloud", "ca")] = (
                f"moved off this card on {stamp} to {RECORD_DIRECTORY / CLOUD_CA_FILE}"
            )
    if cloud.enrollment_code is not None:
        _keep_secret(places, PENDING_CODE_FILE, cloud.enrollment_code, 0o600)
        secrets_moved[("cloud", "enrollment_code")] = (
            f"moved off this card on {stamp} to {RECORD_DIRECTORY / PENDING_CODE_FILE} "
            "(erased there once used or refused; see ocpp-edge-status.txt)"
        )
    if cloud.url is None:
        outcome.applied.append("cloud: none configured, this site runs on its own")

    csv_digest = None
    if boot.cards.csv is not None and card_rows is not None:
        csv_digest = hashlib.sha256(
            _bounded_read(places.boot_directory / boot.cards.csv)
        ).hexdigest()
        if record.get("cards_csv_sha256") == csv_digest:
            outcome.applied.append(f"cards: {boot.cards.csv} unchanged since it was imported")
        else:
            outcome.applied.append(_import_cards(places, boot.cards.csv, card_rows))

    if secrets_moved:
        # The secrets are durable where they went: only now leave the FAT partition.
        rewritten = without_keys(text, secrets_moved)
        names = ", ".join(f"{section}.{key}" for section, key in secrets_moved)
        if rewritten_without_secrets(rewritten, boot):
            write_on_boot_partition(places.boot_file, rewritten)
            outcome.applied.append(f"secrets moved off the boot partition: {names}")
        else:
            outcome.problems.append(
                f"{names}: applied, but still in {BOOT_FILE}, written in a form this "
                "device cannot take out (a dotted key or an inline table): delete them "
                'from the file by hand, or write each as `key = "..."` under its [section]'
            )
    record["sections"] = now
    record["cards_csv_sha256"] = csv_digest or record.get("cards_csv_sha256")
    record["applied_at"] = moment.isoformat(timespec="seconds")
    _write_record(places.records / RECORD_FILE, record)


def _daemon_config_value(places: Places, section: str, key: str) -> Any:
    try:
        data = tomllib.loads(places.daemon_config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    values = data.get(section)
    return values.get(key) if isinstance(values, dict) else None


def _merged_daemon_config(places: Places, boot: BootFile) -> str:
    """The daemon's config file with the boot file's values in it, checked by the
    daemon's own loader."""
    path = places.daemon_config
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{DAEMON_CONFIG}: cannot be read: {error}") from error
    data.setdefault("ocpp", {})["unknown_chargers"] = boot.chargers.unknown
    text = (
        "# The edge daemon's settings (config.example.toml documents every key).\n"
        "# ocpp-edge first-boot keeps [ocpp] unknown_chargers equal to ocpp-edge.toml's\n"
        "# [chargers] unknown.\n" + tomli_w.dumps(data)
    )
    check = path.with_name(f".{path.name}.check")
    try:
        write_file(check, text, 0o600)
        read_settings(Settings, check)
    finally:
        check.unlink(missing_ok=True)
    return text


def _root_and_daemon_group(root: Path) -> tuple[int, int]:
    daemon = user_ids(root, DAEMON_USER)
    return 0, daemon[1] if daemon else 0


def _state_directory(places: Places, settings: Settings) -> Path:
    """The store's directory, made (mode 0750) and given to the daemon's user when the
    root has one: what enrolling and importing write there must be the daemon's."""
    directory = places.store_path(settings).parent
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    daemon = user_ids(places.root, DAEMON_USER)
    if daemon is not None:
        os.chown(directory, *daemon)
    return directory


def _import_cards(places: Places, name: str, rows: list[id_tags.CardValues]) -> str:
    settings = places.daemon_settings()
    _state_directory(places, settings)
    store = places.store_path(settings)
    columns = frozenset(cards_csv.COLUMNS)
    database = open_database(store)
    try:
        with savepoint(database, "first_boot_cards"):
            counts = id_tags.import_cards(database, rows, columns, utc_now_text())
    finally:
        database.conn.close()
    daemon = user_ids(places.root, DAEMON_USER)
    if daemon is not None:
        for path in (
            store,
            store.with_name(store.name + "-wal"),
            store.with_name(store.name + "-shm"),
        ):
            if path.exists():
                os.chown(path, *daemon)
    return (
        f"cards: {len(rows)} read from {name}: {counts.added} added, {counts.changed} "
        f"changed, {counts.unchanged} already as in the file"
    )


def _keep_secret(places: Places, name: str, content: str, mode: int) -> None:
    places.records.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file(places.records / name, content.strip() + "\n", mode=mode)


# -- enrolling ----------------------------------------------------------------------------


def _enroll_waiting(
    places: Places, boot: BootFile | None, outcome: Outcome, enroll_seconds: float
) -> None:
    """Use the code waiting in the records, if any, with the cloud the boot file names."""
    code_file = places.records / PENDING_CODE_FILE
    if not code_file.exists():
        _say_enrolled_or_not(places, boot, outcome)
        return
    if boot is None or boot.cloud.url is None:
        outcome.problems.append(
            f"an enrollment code waits in {RECORD_DIRECTORY}, but {BOOT_FILE} names no "
            "[cloud] url: add it and restart"
        )
        return
    try:
        settings = places.daemon_settings()
        directory = places.identity_directory(settings)
        _state_directory(places, settings)
    except (ConfigError, OSError) as error:
        outcome.enrolment = Enrolment.FAILED
        outcome.problems.append(f"enrolling: {error}")
        return
    ca_file = places.records / CLOUD_CA_FILE
    code = code_file.read_text(encoding="utf-8").strip()
    result, message = enroll_with_retries(
        boot.cloud.url,
        code,
        ca_file if ca_file.exists() else None,
        directory,
        enroll_seconds,
    )
    outcome.enrolment = result
    if result is Enrolment.ENROLLED:
        code_file.unlink()
        outcome.applied.append(f"{message}; the code is erased (used)")
    elif result is Enrolment.SPENT:
        code_file.unlink()
        outcome.problems.append(
            f"{message}\nThe code was erased: it cannot enroll this site. Ask the fleet's "
            "operator for a new one, write it as [cloud] enrollment_code and restart. The "
            "site runs on its own meanwhile."
        )
    elif result is Enrolment.UNREACHABLE:
        outcome.problems.append(
            f"{message}\nThe code is kept (off this card) and tried again at the next "
            "start. The site runs on its own meanwhile."
        )
    else:
        outcome.problems.append(
            f"{message}\nThe code is kept (off this card) and tried again at the next start."
        )


def _say_enrolled_or_not(places: Places, boot: BootFile | None, outcome: Outcome) -> None:
    if boot is None or boot.cloud.url is None:
        return
    try:
        settings = places.daemon_settings()
    except ConfigError:
        return
    if existing_identity(places.identity_directory(settings)) is not None:
        outcome.enrolment = Enrolment.ALREADY
        outcome.applied.append(f"cloud: enrolled with {boot.cloud.url} before")
    else:
        outcome.problems.append(
            f"cloud: {boot.cloud.url} is set but this site is not enrolled and no "
            "enrollment_code waits: write one in [cloud] and restart"
        )


def enroll_with_retries(
    url: str,
    code: str,
    ca_file: Path | None,
    directory: Path,
    total_seconds: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Enrolment, str]:
    """What `ocpp-edge enroll CODE --cloud URL --force` does, tried again while the cloud
    cannot be reached (the network may come up late), for at most `total_seconds`."""
    deadline = time.monotonic() + total_seconds
    wait = _FIRST_RETRY_SECONDS
    attempts = 0
    try:
        # Only checks the address and the CA: no connection yet.
        cloud_client(url, ca_file, timeout=ENROLL_ATTEMPT_SECONDS).close()
    except EnrollmentError as error:
        return Enrolment.FAILED, f"enrolling with {url}: {error}"
    while True:
        attempts += 1
        try:
            with cloud_client(url, ca_file, timeout=ENROLL_ATTEMPT_SECONDS) as client:
                edge_id = edge_id_for_code(client, code).edge_id
                key = new_private_key()
                answer = request_certificate(client, code, key, edge_id)
            written = write_identity(directory, key, answer, source=url)
        except CloudRefused as error:
            if error.code_is_spent:
                return Enrolment.SPENT, f"enrolling with {url}: {error}"
            return Enrolment.FAILED, f"enrolling with {url}: {error}"
        except EnrollmentError as error:
            left = deadline - time.monotonic()
            if left <= 0:
                return (
                    Enrolment.UNREACHABLE,
                    f"enrolling with {url}: {error} ({attempts} attempt(s) in "
                    f"{total_seconds:.0f} s)",
                )
            sleep(min(wait, left))
            wait = min(wait * 2, _LONGEST_RETRY_SECONDS)
            continue
        except OSError as error:
            return Enrolment.FAILED, f"enrolling: cannot write the identity in {directory}: {error}"
        return (
            Enrolment.ENROLLED,
            f"enrolled as edge {answer.edge_id} with {url} (identity in {written.identity_file}, "
            f"certificate valid until {written.not_after:%Y-%m-%d})",
        )


# -- the record ------------------------------------------------------------------------------


def _read_record(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file(path, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)
