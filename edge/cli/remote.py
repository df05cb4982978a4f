"""Talking to the running daemon: OCPP commands through the local API, the cloud link."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

from edge.cli.common import read_store, settings_of
from edge.clock import parse_timestamp
from edge.ocpp.payloads import camel_case
from edge.sync import outbox


def register(commands: Any, common: argparse.ArgumentParser) -> None:
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

    sync = commands.add_parser("sync", parents=[common], help="the link to the cloud")
    sync.add_argument("action", choices=["status"])
    sync.set_defaults(command=cmd_sync)


def cmd_command(arguments: argparse.Namespace) -> int:
    settings, _ = settings_of(arguments)
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


def _field_value(action: str, key: str, text: str) -> object:
    """An --arg value as the command's schema types it: strings stay text, the rest JSON."""
    from edge.ocpp.library import schema_text  # the library only when a command is sent

    try:
        schema = json.loads(schema_text(action))
    except FileNotFoundError:
        schema = {}
    field = schema.get("properties", {}).get(camel_case(key), {})
    if field.get("type") == "string":
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_sync(arguments: argparse.Namespace) -> int:
    settings, db = read_store(arguments)
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
    print(f"store epoch:     {held.epoch}")
    quarantined = f"{held.cloud_quarantined} events"
    if held.last_quarantined:
        quarantined += f" (latest: {held.last_quarantined})"
    print(f"quarantined:     {quarantined} the cloud will never store")
    if held.refused_acks:
        print(f"refused acks:    {held.refused_acks} (beyond what was sent, or another store's)")
    return 0
