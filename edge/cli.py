"""`ocpp-edge`: run the daemon, simulate chargers, and look at a site from its terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import resource
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from sqlite_utils import Database

from edge.clock import normalize_timestamp, parse_timestamp, utc_now
from edge.files.store import FileDirectory, FileNameError
from edge.ocpp.payloads import camel_case
from edge.ocpp.security import hash_password
from edge.presence import presence
from edge.readers.uid import UidError, normalize_uid
from edge.settings import ConfigError, Settings, find_config_file, load_settings
from edge.store import (
    card_decisions,
    charger_reports,
    chargers,
    id_tags,
    message_log,
    transactions,
)
from edge.store.database import StoreError, open_database, open_readonly
from edge.sync import outbox
from edge.tables import render_table

DEMO_CHARGERS = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "command"):
        parser.print_help()
        return 2
    try:
        return int(arguments.command(arguments))
    except (ConfigError, StoreError) as error:
        print(f"ocpp-edge: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML config file (default: search path)")
    parser = argparse.ArgumentParser(prog="ocpp-edge", description=__doc__)
    commands = parser.add_subparsers(title="commands")

    run = commands.add_parser("run", parents=[common], help="run the edge daemon")
    run.set_defaults(command=cmd_run)

    simulate = commands.add_parser("simulate", help="run simulated chargers against an edge")
    simulate.add_argument("--chargers", type=int, default=1)
    simulate.add_argument("--url", default="ws://127.0.0.1:9000/ocpp")
    simulate.add_argument("--prefix", default="sim-", help="charger ids are PREFIX1..PREFIXN")
    simulate.add_argument("--connectors", type=int, default=2)
    simulate.add_argument("--meter-interval", type=float, default=10.0)
    simulate.add_argument("--seconds", type=float, help="stop after this long (default: never)")
    simulate.set_defaults(command=cmd_simulate)

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

    cards = commands.add_parser("cards", parents=[common], help="the site's RFID cards (idTags)")
    cards.add_argument("action", choices=["list", "add", "block", "unblock", "seen"])
    cards.add_argument("id_tag", nargs="?", help="the card's UID as a reader reports it")
    cards.add_argument("--expires", help="expiry date, ISO-8601 (UTC if no offset)")
    cards.add_argument("--parent", help="parent idTag (account/group)")
    cards.add_argument("--label", help="who or what the card is for")
    cards.add_argument(
        "--charger",
        action="append",
        default=[],
        help="with add: the card charges only here (repeat for several chargers)",
    )
    cards.add_argument(
        "--decimal", action="store_true", help="with add: ID_TAG is the number printed on the card"
    )
    cards.add_argument(
        "--reversed", action="store_true", help="with add: ID_TAG's bytes are in reverse order"
    )
    cards.set_defaults(command=cmd_cards)

    tap = commands.add_parser(
        "tap", parents=[common], help="tap a card at a simulated reader of the running daemon"
    )
    tap.add_argument("reader_id")
    tap.add_argument("uid")
    tap.set_defaults(command=cmd_tap)

    taps = commands.add_parser(
        "taps", parents=[common], help="decisions on cards (taps and chargers' own readers)"
    )
    taps.add_argument("--limit", type=int, default=30)
    taps.set_defaults(command=cmd_taps)

    log_cmd = commands.add_parser("log", parents=[common], help="OCPP frames, both directions")
    log_cmd.add_argument("--charger")
    log_cmd.add_argument("--limit", type=int, default=40)
    log_cmd.set_defaults(command=cmd_log)

    command = commands.add_parser(
        "cmd", parents=[common], help="send an OCPP command to a charger (via the local API)"
    )
    command.add_argument("charger_id")
    command.add_argument("action", help="e.g. Reset, RemoteStartTransaction, GetConfiguration")
    command.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a field of the command (e.g. --arg type=Soft); non-text fields are read as JSON",
    )
    command.add_argument("--json", help="all fields as one JSON object")
    command.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the answer")
    command.set_defaults(command=cmd_command)

    firmware = commands.add_parser(
        "firmware", parents=[common], help="firmware images the edge serves to its chargers"
    )
    firmware.add_argument("action", choices=["list", "add"])
    firmware.add_argument("path", nargs="?", type=Path, help="with add: the image file")
    firmware.add_argument("--name", help="with add: the name chargers download it as")
    firmware.set_defaults(command=cmd_firmware)

    sync = commands.add_parser("sync", parents=[common], help="the link to the cloud")
    sync.add_argument("action", choices=["status"])
    sync.set_defaults(command=cmd_sync)

    events = commands.add_parser(
        "security-events", parents=[common], help="security events chargers reported"
    )
    events.add_argument("--charger")
    events.add_argument("--limit", type=int, default=30)
    events.set_defaults(command=cmd_security_events)
    return parser


def _settings(arguments: argparse.Namespace) -> tuple[Settings, Path | None]:
    path = find_config_file(arguments.config)
    return load_settings(path), path


def cmd_run(arguments: argparse.Namespace) -> int:
    from edge.app import run_edge

    # One socket per charger: lift the open-files limit as far as the system allows.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    settings, path = _settings(arguments)
    configure_logging(settings.log.level)
    if path is None and not settings.demo.chargers:
        settings.demo.chargers = DEMO_CHARGERS
        settings.ocpp.unknown_chargers = "accept"
    if settings.demo.chargers:
        _print_demo_banner(settings, path)
    asyncio.run(run_edge(settings))
    return 0


def _print_demo_banner(settings: Settings, path: Path | None) -> None:
    origin = f"config {path}" if path else "no config file found"
    config_flag = f" --config {path}" if path else ""
    port, prefix = settings.ocpp.port, settings.ocpp.path_prefix
    print(
        f"ocpp-edge demo site ({origin}): {settings.demo.chargers} simulated chargers "
        "charge cars inside the daemon.\n"
        f"  chargers connect to  ws://{settings.ocpp.host}:{port}{prefix}/<charger_id>\n"
        f"  everything is stored in  {settings.store.path.resolve()}\n"
        f"  look around (another terminal, same directory):\n"
        f"    ocpp-edge chargers{config_flag}\n"
        f"    ocpp-edge transactions{config_flag}\n"
        f"    ocpp-edge log --charger demo-1{config_flag}\n"
        f"  tap a card at demo-{settings.demo.chargers}'s reader (again to stop):\n"
        f"    ocpp-edge tap demo-reader DE00{settings.demo.chargers:02d}01{config_flag}\n"
        f"  connect your own: ocpp-edge simulate --url ws://127.0.0.1:{port}{prefix}\n"
        "  stop with Ctrl-C",
        flush=True,
    )


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The ocpp library and websockets log every frame/connection at INFO; the
    # message log in the store already has every frame.
    for chatty in ("ocpp", "websockets.server", "websockets.client", "pyftpdlib"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def cmd_simulate(arguments: argparse.Namespace) -> int:
    from edge.simulator import SimulatedChargerConfig, run_simulated_charger

    configure_logging("INFO")
    config = SimulatedChargerConfig(
        connectors=arguments.connectors, meter_interval=arguments.meter_interval
    )

    async def simulate() -> None:
        stop = asyncio.Event()
        if arguments.seconds:
            asyncio.get_running_loop().call_later(arguments.seconds, stop.set)
        async with asyncio.TaskGroup() as tasks:
            for number in range(1, arguments.chargers + 1):
                charger_id = f"{arguments.prefix}{number}"
                tasks.create_task(
                    run_simulated_charger(arguments.url, charger_id, config, stop=stop)
                )

    asyncio.run(simulate())
    return 0


def _read_store(arguments: argparse.Namespace) -> tuple[Settings, Database]:
    settings, _ = _settings(arguments)
    return settings, open_readonly(settings.store.path)


def _write_store(arguments: argparse.Namespace) -> Database:
    settings, _ = _settings(arguments)
    return open_database(settings.store.path)


def cmd_chargers(arguments: argparse.Namespace) -> int:
    if arguments.action != "list":
        if not arguments.charger_id:
            print(f"ocpp-edge chargers {arguments.action} needs a CHARGER_ID", file=sys.stderr)
            return 2
        db = _write_store(arguments)
        if arguments.action == "password":
            return _set_charger_password(db, arguments.charger_id, arguments.password)
        registration = {"add": "accepted", "accept": "accepted", "reject": "rejected"}
        with db.conn:
            chargers.add_charger(
                db, arguments.charger_id, registration[arguments.action], utc_now()
            )
        print(f"{arguments.charger_id}: {registration[arguments.action]}")
        return 0
    settings, db = _read_store(arguments)
    now = datetime.now(UTC)
    connectors: dict[str, list[str]] = {}
    for connector in chargers.list_connectors(db):
        state = connector["status"]
        if connector["error_code"] != "NoError":
            state += f"({connector['error_code']})"
        connectors.setdefault(connector["charger_id"], []).append(
            f"{connector['connector_id']}:{state}"
        )
    rows = [
        (
            row["id"],
            presence(row, settings, now),
            row["registration"],
            row["last_seen_at"],
            " ".join(filter(None, [row["vendor"], row["model"]])) or None,
            row["firmware_version"],
            " ".join(connectors.get(row["id"], [])) or None,
        )
        for row in chargers.list_chargers(db)
    ]
    print(
        render_table(
            ["charger", "state", "registration", "last seen", "model", "firmware", "connectors"],
            rows,
        )
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
        chargers.add_charger(db, charger_id, "accepted", utc_now())
    db.conn.execute(
        "UPDATE chargers SET password_hash = ? WHERE id = ?", (hash_password(password), charger_id)
    )
    if generated:
        print(f"{charger_id}: password {password}  (set it as the charger's AuthorizationKey)")
    else:
        print(f"{charger_id}: password set")
    return 0


def cmd_transactions(arguments: argparse.Namespace) -> int:
    _, db = _read_store(arguments)
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


def cmd_cards(arguments: argparse.Namespace) -> int:
    if arguments.action == "list":
        _, db = _read_store(arguments)
        rows = [
            (
                row["id_tag"],
                row["status"],
                row["expiry_date"],
                row["parent_id_tag"],
                ", ".join(sorted(id_tags.allowed_chargers(db, row["id_tag"]))) or "any",
                row["label"],
            )
            for row in id_tags.list_id_tags(db)
        ]
        print(render_table(["idtag", "status", "expires", "parent", "chargers", "label"], rows))
        return 0
    if arguments.action == "seen":
        _, db = _read_store(arguments)
        rows = [
            (
                row["id_tag"],
                row["status"],
                row["source"],
                row["last_seen_at"],
                row["last_seen_where"],
                row["times_seen"],
            )
            for row in card_decisions.list_seen_cards(db)
        ]
        print(render_table(["idtag", "decided", "by", "last seen", "where", "times"], rows))
        return 0
    if not arguments.id_tag:
        print(f"ocpp-edge cards {arguments.action} needs an ID_TAG", file=sys.stderr)
        return 2
    id_tag = arguments.id_tag
    # A UID written with separators ("04:A2:B3:C4") or in decimal is stored as readers
    # report it.
    if (
        arguments.decimal
        or arguments.reversed
        or re.fullmatch(r"[0-9A-Fa-f]{2}([:\- ][0-9A-Fa-f]{2})+", id_tag)
    ):
        try:
            id_tag = normalize_uid(
                id_tag,
                uid_format="decimal" if arguments.decimal else "hex",
                byte_order="reversed" if arguments.reversed else "as-read",
            )
        except UidError as error:
            print(f"{arguments.id_tag}: {error}", file=sys.stderr)
            return 2
    if len(id_tag) > 20:
        print("an OCPP 1.6 idTag is at most 20 characters", file=sys.stderr)
        return 2
    db = _write_store(arguments)
    now = utc_now()
    with db.conn:
        if arguments.action == "add":
            try:
                expires = normalize_timestamp(arguments.expires) if arguments.expires else None
            except ValueError:
                print(f"--expires {arguments.expires!r} is not an ISO-8601 date", file=sys.stderr)
                return 2
            id_tags.save_id_tag(
                db,
                id_tag,
                now,
                expiry_date=expires,
                parent_id_tag=arguments.parent,
                label=arguments.label,
            )
            id_tags.set_allowed_chargers(db, id_tag, arguments.charger)
            where = f" at {', '.join(arguments.charger)}" if arguments.charger else ""
            print(f"{id_tag}: Accepted{where}")
            return 0
        status = "Blocked" if arguments.action == "block" else "Accepted"
        if not id_tags.set_id_tag_status(db, id_tag, status, now):
            print(f"no card {id_tag}: add it first", file=sys.stderr)
            return 1
    print(f"{id_tag}: {status}")
    return 0


def cmd_tap(arguments: argparse.Namespace) -> int:
    from edge.readers.simulated import send_tap

    settings, _ = _settings(arguments)
    path = settings.taps.socket_path(settings.store.path)
    try:
        answer = asyncio.run(send_tap(path, arguments.reader_id, arguments.uid))
    except (OSError, TimeoutError) as error:
        print(
            f"cannot reach the daemon's tap socket {path} ({error}): is `ocpp-edge run` "
            "running with this configuration and a simulated reader?",
            file=sys.stderr,
        )
        return 1
    if answer != "ok":
        print(answer, file=sys.stderr)
        return 1
    print(f"tapped {arguments.uid} at {arguments.reader_id}: see `ocpp-edge taps`")
    return 0


def cmd_taps(arguments: argparse.Namespace) -> int:
    _, db = _read_store(arguments)
    rows = [
        (
            row["decided_at"][11:19],
            row["reader_id"] or f"({row['charger_id']})",
            row["id_tag"],
            row["action"],
            row["status"],
            row["charger_id"] and f"{row['charger_id']}/{row['connector_id'] or '-'}",
            _shorten(row["reason"], 40),
            row["outcome"],
            row["transaction_id"],
        )
        for row in card_decisions.list_card_decisions(db, arguments.limit)
    ]
    print(
        render_table(
            ["time", "reader", "card", "action", "status", "where", "reason", "outcome", "tx"],
            rows,
        )
    )
    return 0


def cmd_sync(arguments: argparse.Namespace) -> int:
    settings, db = _read_store(arguments)
    held = outbox.backlog(db)
    sync = settings.sync
    where = (
        f"{sync.broker_host}:{sync.broker_port} as {sync.edge_id}"
        if sync.enabled
        else "off (no [sync] broker_host): nothing is kept for the cloud"
    )
    age = "-"
    if held.oldest_at is not None:
        seconds = (datetime.now(UTC) - parse_timestamp(held.oldest_at)).total_seconds()
        age = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"
    print(f"cloud link:      {where}")
    print(f"backlog:         {held.events} events not yet acknowledged")
    print(f"oldest waiting:  {held.oldest_at or '-'} ({age} old)")
    print(f"last ack:        seq {held.acked_seq} at {held.acked_at or 'never'}")
    print(f"card list held:  version {held.cards_version}")
    return 0


def cmd_log(arguments: argparse.Namespace) -> int:
    _, db = _read_store(arguments)
    rows = [
        (
            datetime.fromtimestamp(row["at_ms"] / 1000, UTC).strftime("%H:%M:%S.%f")[:-3],
            row["charger_id"],
            "->" if row["direction"] == "in" else "<-",
            row["action"],
            _shorten(row["payload"], 100),
        )
        for row in message_log.recent_messages(db, arguments.charger, arguments.limit)
    ]
    print(render_table(["time", "charger", "dir", "action", "frame"], rows))
    return 0


def cmd_security_events(arguments: argparse.Namespace) -> int:
    _, db = _read_store(arguments)
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


def cmd_command(arguments: argparse.Namespace) -> int:
    settings, _ = _settings(arguments)
    if not settings.api.port:
        print("the local API is off (api.port = 0): commands go through it", file=sys.stderr)
        return 2
    fields: dict[str, object] = json.loads(arguments.json) if arguments.json else {}
    for item in arguments.arg:
        key, separator, value = item.partition("=")
        if not separator:
            print(f"--arg {item!r}: write KEY=VALUE", file=sys.stderr)
            return 2
        fields[key] = _field_value(arguments.action, key, value)
    host = "127.0.0.1" if settings.api.host in ("0.0.0.0", "::") else settings.api.host
    url = (
        f"http://{host}:{settings.api.port}/api/chargers/"
        f"{urllib.parse.quote(arguments.charger_id)}/commands/{arguments.action}"
        f"?wait={arguments.wait}"
    )
    request = urllib.request.Request(
        url,
        data=json.dumps(fields).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    if settings.api.token:
        request.add_header("Authorization", f"Bearer {settings.api.token}")
    try:
        with urllib.request.urlopen(request, timeout=arguments.wait + 10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read() or b"{}")
        detail = body.get("detail", error.reason)
        if not isinstance(detail, str):  # FastAPI's own 422: a list of problems
            detail = "; ".join(str(problem.get("msg", problem)) for problem in detail)
        print(f"{arguments.action} to {arguments.charger_id}: {detail}", file=sys.stderr)
        return 1
    except urllib.error.URLError as error:
        print(f"cannot reach the daemon's local API at {url}: {error.reason}", file=sys.stderr)
        return 2
    print(json.dumps(answer["response"], indent=2))
    return 0


def cmd_firmware(arguments: argparse.Namespace) -> int:
    settings, _ = _settings(arguments)
    if arguments.action == "list":
        db = open_readonly(settings.store.path)
        rows = [
            (row["name"], row["size"], row["sha256"], row["added_at"])
            for row in db.query("SELECT * FROM firmware_images ORDER BY name")
        ]
        print(render_table(["name", "bytes", "sha256", "added"], rows))
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


def _field_value(action: str, key: str, text: str) -> object:
    """An --arg value as the command's schema types it: strings stay text, the rest JSON."""
    try:
        schema = json.loads(
            resources.files("ocpp").joinpath("v16", "schemas", f"{action}.json").read_text()
        )
    except FileNotFoundError:
        schema = {}
    field = schema.get("properties", {}).get(camel_case(key), {})
    if field.get("type") == "string":
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
