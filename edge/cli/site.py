"""Looking at and managing the site from its terminal: chargers, transactions, the OCPP
message log, security events, firmware images."""

from __future__ import annotations

import argparse
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from contract.tables import render_table
from edge.cli.common import read_store, settings_of, shorten, write_store
from edge.clock import utc_now_text
from edge.files.store import FileDirectory, FileNameError
from edge.ocpp.local_list_limits import local_list_summaries
from edge.ocpp.security import hash_password
from edge.presence import presence
from edge.store import (
    charger_reports,
    chargers,
    files,
    message_log,
    transactions,
)
from edge.store import firmware as firmware_store
from edge.store.database import open_database, open_readonly


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    charger_cmd = commands.add_parser("chargers", parents=[common], help="chargers and connectors")
    charger_cmd.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "add", "accept", "reject", "password"],
    )
    charger_cmd.add_argument("charger_id", nargs="?")
    charger_cmd.add_argument(
        "--password", help="with `password`: the Basic auth password (default: a new random one)"
    )
    charger_cmd.set_defaults(command=cmd_chargers)

    transaction_cmd = commands.add_parser("transactions", parents=[common], help="transactions")
    transaction_cmd.add_argument("--charger")
    transaction_cmd.add_argument("--open", action="store_true", help="only running ones")
    transaction_cmd.add_argument("--limit", type=int, default=30)
    transaction_cmd.set_defaults(command=cmd_transactions)

    log_cmd = commands.add_parser("log", parents=[common], help="OCPP frames, both directions")
    log_cmd.add_argument("--charger")
    log_cmd.add_argument("--limit", type=int, default=40)
    log_cmd.set_defaults(command=cmd_log)

    firmware = commands.add_parser(
        "firmware", parents=[common], help="firmware images the edge serves to its chargers"
    )
    firmware.add_argument("action", choices=["list", "add", "installs"])
    firmware.add_argument("path", nargs="?", type=Path, help="with add: the image file")
    firmware.add_argument("--name", help="with add: the name chargers download it as")
    firmware.set_defaults(command=cmd_firmware)

    events = commands.add_parser(
        "security-events", parents=[common], help="security events chargers reported"
    )
    events.add_argument("--charger")
    events.add_argument("--limit", type=int, default=30)
    events.set_defaults(command=cmd_security_events)


def cmd_chargers(arguments: argparse.Namespace) -> int:
    if arguments.action != "list":
        if not arguments.charger_id:
            print(f"ocpp-edge chargers {arguments.action} needs a CHARGER_ID", file=sys.stderr)
            return 2
        db = write_store(arguments)
        if arguments.action == "password":
            return _set_charger_password(db, arguments.charger_id, arguments.password)
        registration = {"add": "accepted", "accept": "accepted", "reject": "rejected"}
        with db.conn:
            chargers.add_charger(
                db, arguments.charger_id, registration[arguments.action], utc_now_text()
            )
        print(f"{arguments.charger_id}: {registration[arguments.action]}")
        return 0
    settings, db = read_store(arguments)
    now = datetime.now(UTC)
    connectors: dict[str, list[str]] = {}
    for connector in chargers.list_connectors(db):
        state = connector["status"]
        if connector["error_code"] != "NoError":
            state += f"({connector['error_code']})"
        connectors.setdefault(connector["charger_id"], []).append(
            f"{connector['connector_id']}:{state}"
        )
    lists = local_list_summaries(db, settings.ocpp.local_list)
    rows = [
        (
            row["id"],
            presence(row, settings, now),
            row["registration"],
            row["last_seen_at"],
            " ".join(filter(None, [row["vendor"], row["model"]])) or None,
            row["firmware_version"],
            " ".join(connectors.get(row["id"], [])) or None,
            lists.get(row["id"]),
        )
        for row in chargers.list_chargers(db)
    ]
    print(
        render_table(
            [
                "charger",
                "state",
                "registration",
                "last seen",
                "model",
                "firmware",
                "connectors",
                "local list",
            ],
            rows,
        )
    )
    pending = sum(1 for row in rows if row[2] == "pending")
    if pending:
        ocpp = settings.ocpp
        print(
            f"\n{pending} pending of at most {ocpp.max_pending_chargers} "
            f"(forgotten after {ocpp.pending_charger_days} days unseen): "
            "ocpp-edge chargers accept ID, or reject ID"
        )
    return 0


def _set_charger_password(db: Database, charger_id: str, password: str | None) -> int:
    """Security profiles 1 and 2; printed once when generated, kept only as a hash."""
    generated = password is None
    password = password or secrets.token_hex(16)
    if len(password) < 16:
        print("use a password of at least 16 characters (OCPP's AuthorizationKey)", file=sys.stderr)
        return 2
    if chargers.get_charger(db, charger_id) is None:
        chargers.add_charger(db, charger_id, "accepted", utc_now_text())
    chargers.set_password_hash(db, charger_id, hash_password(password))
    if generated:
        print(f"{charger_id}: password {password}  (set it as the charger's AuthorizationKey)")
    else:
        print(f"{charger_id}: password set")
    return 0


def cmd_transactions(arguments: argparse.Namespace) -> int:
    _, db = read_store(arguments)
    rows = [
        (
            row["id"],
            row["charger_id"],
            row["connector_id"],
            row["id_tag"],
            row["id_tag_status"],
            row["started_at"],
            row["stopped_at"] or "running",
            f"{row['energy_wh'] / 1000:.3f}" if row["energy_wh"] is not None else None,
            row["stop_reason"],
        )
        for row in transactions.list_transactions(
            db, limit=arguments.limit, charger_id=arguments.charger, open_only=arguments.open
        )
    ]
    print(
        render_table(
            ["id", "charger", "conn", "idtag", "auth", "started", "stopped", "kWh", "reason"], rows
        )
    )
    return 0


def cmd_log(arguments: argparse.Namespace) -> int:
    _, db = read_store(arguments)
    rows = [
        (
            datetime.fromtimestamp(row["at_ms"] / 1000, UTC).strftime("%H:%M:%S.%f")[:-3],
            row["charger_id"],
            "->" if row["direction"] == "in" else "<-",
            row["action"],
            shorten(row["payload"], 100),
        )
        for row in message_log.recent_messages(db, arguments.charger, arguments.limit)
    ]
    print(render_table(["time", "charger", "dir", "action", "frame"], rows))
    return 0


def cmd_security_events(arguments: argparse.Namespace) -> int:
    _, db = read_store(arguments)
    rows = [
        (
            row["received_at"],
            row["charger_id"],
            row["type"],
            row["charger_timestamp"],
            row["tech_info"],
        )
        for row in charger_reports.list_security_events(db, arguments.charger, arguments.limit)
    ]
    print(render_table(["received", "charger", "event", "charger time", "details"], rows))
    return 0


def cmd_firmware(arguments: argparse.Namespace) -> int:
    settings, _ = settings_of(arguments)
    if arguments.action == "list":
        db = open_readonly(settings.store.path)
        rows = [
            (row["name"], row["size"], row["sha256"], row["added_at"])
            for row in files.list_firmware_images(db)
        ]
        print(render_table(["name", "bytes", "sha256", "added"], rows))
        offered = [
            (
                row["image"],
                row["version"],
                row["status"] + (" (forced)" if row["forced"] else ""),
                "no manifest" if row["manifest"] is None else "signed manifest",
                shorten(row["detail"] or "", 70),
            )
            for row in firmware_store.download_rows(db)
        ]
        if offered:
            print("\nFrom the cloud:")
            print(render_table(["image", "version", "status", "manifest", "detail"], offered))
        return 0
    if arguments.action == "installs":
        db = open_readonly(settings.store.path)
        installs = [
            (
                row["updated_at"],
                row["charger_id"],
                row["image"],
                row["version"],
                row["status"] + (" (forced)" if row["forced"] else ""),
                shorten(row["detail"] or "", 70),
            )
            for row in firmware_store.recent_installs(db)
        ]
        headers = ["updated", "charger", "image", "version", "status", "detail"]
        print(render_table(headers, installs))
        return 0
    if arguments.path is None or not arguments.path.is_file():
        print("ocpp-edge firmware add needs the path of an image file", file=sys.stderr)
        return 2
    db = open_database(settings.store.path)
    try:
        name, size, digest = FileDirectory(settings.files.directory).add_firmware(
            db, arguments.path, arguments.name
        )
    except FileNameError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"{name}: {size} bytes, sha256 {digest}")
    print(
        f"  send it: ocpp-edge cmd CHARGER UpdateFirmware --arg image={name} "
        f"--arg retrieveDate=2026-01-01T00:00:00Z"
    )
    return 0
