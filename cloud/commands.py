"""What each `ocpp-cloud` command does: run the aggregator, look at the fleet, and set what
edges should hold. cloud/cli.py reads the command line and imports this module only to run
a command, so that `ocpp-cloud --help` loads no store or HTTP server."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine

from cloud.firmware import (
    FirmwareError,
    key_id,
    load_or_create_signing_key,
    make_manifest,
    public_key_text,
    resign,
    sign_manifest,
    store_image_file,
)
from cloud.settings import CloudSettings, find_config_file, load_settings
from cloud.store import desired, fleet
from cloud.store.database import StoreError, open_store
from cloud.store.times import iso
from contract import protocol as wire
from contract.cli import configure_logging
from contract.firmware import parse_target
from contract.tables import render_table

CARD_LIST = TypeAdapter(list[wire.CardEntry])


def _settings(arguments: argparse.Namespace) -> CloudSettings:
    return load_settings(find_config_file(arguments.config))


def cmd_run(arguments: argparse.Namespace) -> int:
    from cloud.app import run_cloud
    from contract.shutdown import run_daemon

    settings = _settings(arguments)
    configure_logging("INFO")
    return run_daemon(
        lambda stop: run_cloud(settings, stop=stop), stop_timeout=settings.service.stop_timeout
    )


def cmd_edges(arguments: argparse.Namespace) -> int:
    engine = open_store(_settings(arguments).store.url)
    rows = [
        (
            edge.edge_id,
            edge.state,
            "-" if edge.sync_lag_s is None else f"{edge.sync_lag_s:.0f} s",
            edge.backlog,
            edge.last_seq,
            edge.software_version,
            edge.cards_version_reported,
            edge.rejections,
            edge.quarantined_events,
            _store_of(edge),
        )
        for edge in fleet.list_edges(engine, datetime.now(UTC))
    ]
    headers = [
        "edge",
        "state",
        "lag",
        "backlog",
        "last seq",
        "version",
        "cards",
        "refused",
        "quarantined",
        "store",
    ]
    print(render_table(headers, rows))
    refusing = [edge for edge in fleet.list_edges(engine, datetime.now(UTC)) if edge.cards_refused]
    for edge in refusing:
        print(f"{edge.edge_id} refused its card list: {edge.cards_refused}")
    return 0


def _store_of(edge: fleet.EdgeView) -> str:
    """The edge's store epoch, short, with how many stores it has had and since when."""
    if edge.epoch is None:
        return "-"
    since = f" since {iso(edge.epoch_started_at)}" if edge.epoch_started_at else ""
    replaced = f" ({edge.epochs} stores{since})" if edge.epochs > 1 else ""
    return f"{edge.epoch[:8]}{replaced}"


def cmd_quarantine(arguments: argparse.Namespace) -> int:
    engine = open_store(_settings(arguments).store.url)
    found = fleet.list_quarantined(engine, arguments.edge, max(1, arguments.limit))
    rows = [
        (
            item.edge_id,
            item.edge_seq,
            (item.epoch or "-")[:8],
            item.kind or "-",
            item.reason,
            iso(item.received_at),
            item.detail[:100],
        )
        for item in found
    ]
    headers = ["edge", "seq", "store", "kind", "reason", "received", "why"]
    print(render_table(headers, rows))
    if arguments.raw:
        for item in found:
            cut = (
                ""
                if len(item.raw) >= item.raw_bytes
                else f" (first {len(item.raw)} of {item.raw_bytes} bytes)"
            )
            print(f"\n{item.edge_id} seq {item.edge_seq}{cut}:\n{item.raw}")
    return 0


def cmd_key(arguments: argparse.Namespace) -> int:
    settings = _settings(arguments)
    print(public_key_text(load_or_create_signing_key(settings.signing_key_path())))
    return 0


def cmd_cards(arguments: argparse.Namespace) -> int:
    try:
        cards = CARD_LIST.validate_json(arguments.file.read_bytes())
    except (OSError, ValidationError) as error:
        print(f"{arguments.file}: not a card list: {error}", file=sys.stderr)
        return 2
    engine = open_store(_settings(arguments).store.url)
    version = desired.set_card_list(engine, arguments.edge_id, cards, actor=f"cli:{_user_name()}")
    print(f"{arguments.edge_id}: card list version {version} ({len(cards)} cards)")
    return 0


def cmd_firmware(arguments: argparse.Namespace) -> int:
    settings = _settings(arguments)
    engine = open_store(settings.store.url)
    if arguments.action == "list":
        rows = [
            (
                image["name"],
                image["version"],
                image["size"],
                ", ".join(image["targets"]) if image["targets"] else "(no manifest: add again)",
                image["sha256"][:16],
            )
            for image in desired.list_firmware_images(engine)
        ]
        print(render_table(["image", "version", "bytes", "targets", "sha256"], rows))
        return 0
    if arguments.action == "resign":
        key = load_or_create_signing_key(settings.signing_key_path())
        names = desired.resign_firmware_images(engine, key_id(key), lambda m: resign(key, m))
        print(f"{len(names)} manifests signed again with key {key_id(key)}: {' '.join(names)}")
        return 0
    if not arguments.target:
        print(f"firmware {arguments.action} needs its target (file or edge id)", file=sys.stderr)
        return 2
    if arguments.action == "offer":
        if not arguments.name:
            print("firmware offer needs --name", file=sys.stderr)
            return 2
        wire.check_edge_id(arguments.target)
        try:
            desired.offer_to(engine, arguments.target, arguments.name, force=arguments.force)
        except StoreError as error:
            print(error, file=sys.stderr)
            return 2
        forced = " (forced past the version check)" if arguments.force else ""
        print(f"{arguments.name} offered to {arguments.target}{forced}")
        return 0
    source = Path(arguments.target)
    if not arguments.version or not source.is_file() or not arguments.targets:
        print(
            "firmware add needs an image file, --version and at least one --target VENDOR/MODEL",
            file=sys.stderr,
        )
        return 2
    name = arguments.name or source.name
    try:
        targets = [parse_target(text) for text in arguments.targets]
        stored = store_image_file(
            source, settings.firmware.directory, settings.firmware.max_image_bytes
        )
        registered = ""
        try:
            key = load_or_create_signing_key(settings.signing_key_path())
            manifest = make_manifest(
                name, arguments.version, targets, stored.size, stored.sha256, key
            )
            text, signature = sign_manifest(key, manifest)
            image = desired.add_firmware_image(engine, manifest, text, signature, str(stored.path))
            registered = image.path
        finally:
            stored.keep_if(registered)
    except (ValueError, FirmwareError, StoreError) as error:
        print(f"firmware add: {error}", file=sys.stderr)
        return 2
    print(
        f"{name} {arguments.version}: {stored.size} bytes, sha256 {stored.sha256}, "
        f"for {', '.join(arguments.targets)}"
    )
    return 0


def cmd_command(arguments: argparse.Namespace) -> int:
    fields: dict[str, object] = {}
    for item in arguments.arg:
        key, separator, text = item.partition("=")
        if not separator:
            print(f"--arg {item!r}: write KEY=VALUE", file=sys.stderr)
            return 2
        try:
            fields[key] = json.loads(text)
        except json.JSONDecodeError:
            fields[key] = text
    engine = open_store(_settings(arguments).store.url)
    expires = datetime.now(UTC) + timedelta(seconds=arguments.expires_in)
    try:
        created = desired.create_command(
            engine,
            arguments.edge_id,
            arguments.charger_id,
            arguments.action,
            fields,
            expires,
            actor=f"cli:{_user_name()}",
        )
    except ValidationError as error:
        print(f"not a command: {error.errors(include_url=False)[0]['msg']}", file=sys.stderr)
        return 2
    print(f"command {created.id} for {arguments.edge_id}: sent when the edge is online")
    return 0


def _user_name() -> str:
    """Who runs this command, as the system knows them."""
    try:
        return getpass.getuser()[:64]
    except (KeyError, OSError):  # no user name for this uid, no LOGNAME
        return f"uid {os.getuid()}"


def cmd_enroll_code(arguments: argparse.Namespace) -> int:
    from cloud.enrollment import Enrollment, EnrollmentError, parse_duration

    try:
        valid_for = parse_duration(arguments.valid_for)
    except ValueError as error:
        print(f"--valid-for: {error}", file=sys.stderr)
        return 2
    settings = _settings(arguments)
    engine = open_store(settings.store.url)
    key = load_or_create_signing_key(settings.signing_key_path())
    try:
        new = Enrollment(settings, engine, public_key_text(key)).create_code(
            arguments.edge_id, valid_for, arguments.replace
        )
    except EnrollmentError as error:
        print(f"ocpp-cloud: {error}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(
        f"Enrollment code for edge {new.edge_id}, valid until {iso(new.expires_at)}, once:\n"
        f"\n    {new.code}\n\n"
        "It is shown only this time. On the edge, as the daemon's user:\n"
        f"    ocpp-edge enroll {new.code} --cloud https://<this cloud's API address>"
    )
    return 0


def cmd_edges_assign(arguments: argparse.Namespace) -> int:
    from cloud.store import fleets

    engine = open_store(_settings(arguments).store.url)
    fleet_row = fleets.find_fleet(engine, arguments.fleet)
    fleets.assign_edge(
        engine,
        arguments.edge_id,
        fleet_row.fleet_id,
        site_name=arguments.name,
        location=arguments.location,
    )
    print(f"edge {arguments.edge_id} is in fleet {fleet_row.name}")
    return 0


def cmd_fleets(arguments: argparse.Namespace) -> int:
    from cloud.store import fleets

    engine = open_store(_settings(arguments).store.url)
    if arguments.action == "add":
        if not arguments.name:
            print("fleets add: give the new fleet's name", file=sys.stderr)
            return 2
        added = fleets.add_fleet(engine, arguments.name)
        print(f"fleet {added.name} (id {added.fleet_id})")
        return 0
    rows = [
        (
            fleet_row.fleet_id,
            fleet_row.name,
            fleet_row.edges,
            fleet_row.users,
            iso(fleet_row.created_at),
        )
        for fleet_row in fleets.list_fleets(engine)
    ]
    print(render_table(["id", "name", "edges", "users", "created"], rows))
    return 0


def cmd_users(arguments: argparse.Namespace) -> int:
    from cloud.store import fleets, users

    engine = open_store(_settings(arguments).store.url)
    if arguments.action == "list":
        fleet_id = fleets.find_fleet(engine, arguments.fleet).fleet_id if arguments.fleet else None
        rows = [
            (
                user.email,
                user.role,
                user.fleet_name,
                iso(user.created_at),
                iso(user.disabled_at) if user.disabled_at else "",
            )
            for user in users.list_users(engine, fleet_id)
        ]
        print(render_table(["email", "role", "fleet", "created", "disabled"], rows))
        return 0
    if not arguments.email:
        print(f"users {arguments.action}: give the user's email address", file=sys.stderr)
        return 2
    if arguments.action == "disable":
        user = users.disable_user(engine, arguments.email)
        print(f"{user.email} is disabled; their sessions have ended")
        return 0
    if arguments.action in ("password", "sign-out"):
        return _user_sessions(engine, arguments)
    if not arguments.fleet:
        print("users add: give the user's fleet with --fleet", file=sys.stderr)
        return 2
    from cloud.web.passwords import WeakPassword, hash_password

    fleet_row = fleets.find_fleet(engine, arguments.fleet)
    email = users.normal_email(arguments.email)
    password = _read_password(arguments.password_stdin)
    try:
        password_hash = hash_password(password)
    except WeakPassword as error:
        print(f"users add: {error}", file=sys.stderr)
        return 2
    user = users.add_user(engine, email, password_hash, arguments.role, fleet_row.fleet_id)
    print(f"{user.email}: {user.role} of fleet {user.fleet_name}")
    return 0


def _user_sessions(engine: Engine, arguments: argparse.Namespace) -> int:
    """`users password` (a new password; every session ends) and `users sign-out`."""
    from cloud.store import users

    found = users.user_for_login(engine, arguments.email)
    if found is None:
        print(f"users {arguments.action}: no user {arguments.email}", file=sys.stderr)
        return 2
    user = found[0]
    if arguments.action == "sign-out":
        ended = users.end_sessions(engine, user.user_id)
        print(f"{user.email}: {ended} sessions ended")
        return 0
    from cloud.web.passwords import WeakPassword, hash_password

    try:
        password_hash = hash_password(_read_password(arguments.password_stdin))
    except WeakPassword as error:
        print(f"users password: {error}", file=sys.stderr)
        return 2
    ended = users.change_password(engine, user.user_id, password_hash)
    print(f"{user.email}: password changed; {ended} sessions ended")
    return 0


def _read_password(from_stdin: bool) -> str:
    """The new user's password: standard input's first line, or asked for twice."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise StoreError("the two passwords differ: nothing was changed")
    return first
